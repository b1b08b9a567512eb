"""One session's media logic, pure and synchronous: audio in, one frame job per tick out.

The asyncio shell calls :meth:`SessionPipeline.push_audio` for every incoming audio frame and
:meth:`SessionPipeline.next_job` once per scheduler tick; time is passed in (``now_s``, from the
one process clock), so every decision here is testable without a clock.

Time lines. Input frame ``i`` is the 40 ms of received audio starting at 16 kHz sample
``640 i``; its mel window is complete about 133 ms later (the 120 ms lookahead of Wav2Lip's
training alignment plus half an STFT window). Output frame ``n`` is the n-th frame sent
(video pts ``n * 3600`` at 90 kHz, audio pts ``n * 1920`` at 48 kHz). Each tick, the oldest
ready input frame is rendered and its own audio is released with it, so lips and sound leave
together and the returned audio is the input delayed by exactly the lookahead (plus the wait
for the tick). When the input runs ahead of the ticks (a late packet, a stall, a faster input
clock) the pipeline drops input frames and re-anchors on the newest (counted); when it runs
dry it holds the last frame and sends silence (an underrun, counted). It never bursts.
"""

from __future__ import annotations

import collections
import enum
import fractions
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt

from streamer.audio.ingest import AudioIngest
from streamer.audio.mel import MelExtractor
from streamer.audio.ring import SampleRing
from streamer.errors import AudioGoneError

F32 = npt.NDArray[np.float32]

INPUT_RATE_HZ = 16_000
OUTPUT_RATE_HZ = 48_000


@dataclass(frozen=True)
class PipelineConfig:
    fps: int = 25
    ring_s: float = 10.0
    # More ready input frames than this at a tick: drop to the newest one (re-anchor). With 1,
    # a frame whose audio came late (jitter; the tick before held the last image and sent
    # silence in its place) is skipped, so no frame waits more than one tick for its turn.
    max_backlog_frames: int = 1
    # A window is speech when the loudest column's mean feature exceeds this ([-4, 4] scale;
    # -4 is digital silence, quiet room noise sits near -3.3, speech above -2).
    speech_threshold: float = -2.6
    # Frames over which the generated mouth fades in and out (no pop at speech edges).
    blend_frames: int = 3
    # Target wait between a window's completion and the tick that renders it. Outside it,
    # 20 ms of silence is inserted into the input to move completions to the other packet
    # phase (audio arrives in 20 ms packets, ticks come every 40 ms).
    wait_band_s: tuple[float, float] = (0.004, 0.026)
    align_every_frames: int = 25

    @property
    def samples_per_frame(self) -> int:
        return INPUT_RATE_HZ // self.fps

    @property
    def output_samples_per_frame(self) -> int:
        return OUTPUT_RATE_HZ // self.fps


class JobKind(enum.Enum):
    RENDER = "render"  # run the model on `window`, paste with `strength`
    IDLE = "idle"  # the avatar frame as it is
    HOLD = "hold"  # repeat the previous output image (speech underrun)


@dataclass(frozen=True)
class FrameJob:
    kind: JobKind
    output_index: int  # n: video pts = n * 3600
    avatar_frame: int  # index into the avatar's frames
    input_frame: int | None  # the input frame rendered, None for idle/hold
    window: F32 | None  # [80, 16] mel window, for RENDER
    strength: float  # blend of the generated mouth, [0, 1]
    audio_16k: F32  # the audio released with this frame, 640 samples
    ready_at_s: float | None  # when the input frame's window completed
    heard_at_s: float | None  # when the input frame's own first sample arrived
    underrun: bool = False  # audio had started but no window was complete this tick
    dropped: int = 0  # input frames skipped at this tick to re-anchor


@dataclass
class PipelineStats:
    frames: int = 0
    rendered: int = 0
    idle: int = 0
    held: int = 0
    underruns: int = 0
    dropped_input_frames: int = 0
    realignments: int = 0
    samples_in: int = 0
    waits_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=50))


class SessionPipeline:
    """Per-session audio state and frame decisions. Synchronous; one owner."""

    def __init__(self, avatar_frame_count: int, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        cfg = self.config
        self._avatar_frames = avatar_frame_count
        self._ingest = AudioIngest(INPUT_RATE_HZ)
        self._ring = SampleRing(int(cfg.ring_s * INPUT_RATE_HZ))
        self._mel = MelExtractor(fps=cfg.fps, capacity_s=cfg.ring_s)
        self._next_input = 0  # the next input frame to render
        self._output_index = 0
        self._strength = 0.0
        self._started = False
        self._pad_pending = False
        # Input frames before this one are rendered at rest (see `interrupt`).
        self._rest_before_input = 0
        # (frame index, completion time) of recent windows; bounded to a few seconds.
        self._ready_at: collections.deque[tuple[int, float]] = collections.deque(maxlen=256)
        # (end sample index, arrival time) of recent pushes; bounded to ~12 s of packets.
        self._heard_at: collections.deque[tuple[int, float]] = collections.deque(maxlen=600)
        self.stats = PipelineStats()

    @property
    def mel(self) -> MelExtractor:
        return self._mel

    def set_mel_frame_offset(self, frame_offset: int) -> None:
        """Use a model's mel alignment (before any audio arrives)."""
        if self._mel.samples_pushed:
            raise RuntimeError("the mel alignment is fixed once audio has arrived")
        self._mel = MelExtractor(
            fps=self.config.fps, frame_offset=frame_offset, capacity_s=self.config.ring_s
        )

    def push_audio(self, frame: av.AudioFrame, now_s: float) -> None:
        """Ingest one incoming audio frame received at ``now_s``."""
        chunk = self._ingest.push(frame)
        if self._pad_pending:
            self._pad_pending = False
            self._append(np.zeros(self.config.samples_per_frame // 2, np.float32), now_s)
        self._append(chunk.samples, now_s)
        self._started = True

    def push_pcm_16k(self, samples: F32, now_s: float) -> None:
        """Ingest samples that are already 16 kHz mono float32."""
        self._append(np.asarray(samples, np.float32), now_s)
        self._started = True

    def _append(self, samples: F32, now_s: float) -> None:
        if samples.shape[0] == 0:
            return
        before = self._mel.frames_ready()
        self._ring.write(samples)
        self._mel.push(samples)
        self.stats.samples_in += int(samples.shape[0])
        self._heard_at.append((self._ring.end_index, now_s))
        for i in range(before, self._mel.frames_ready()):
            self._ready_at.append((i, now_s))

    def _lookup_ready_at(self, frame: int) -> float | None:
        for i, t in reversed(self._ready_at):
            if i == frame:
                return t
            if i < frame:
                break
        return None

    def _lookup_heard_at(self, sample: int) -> float | None:
        found = None
        for end, t in reversed(self._heard_at):
            if end <= sample:
                break
            found = t
        return found

    def next_job(self, now_s: float) -> FrameJob:
        """Decide this tick's frame for this session and advance the session's clocks."""
        cfg = self.config
        n = self._output_index
        self._output_index += 1
        self.stats.frames += 1
        avatar_frame = n % self._avatar_frames
        silence = np.zeros(cfg.samples_per_frame, np.float32)
        ready = self._mel.frames_ready()
        backlog = ready - self._next_input
        if backlog <= 0:
            # backlog < 0 only after `interrupt`: waiting for new input is not an underrun.
            underrun = self._started and backlog == 0
            if underrun:
                self.stats.underruns += 1
            if underrun and self._strength > 0:
                self.stats.held += 1
                return FrameJob(
                    JobKind.HOLD,
                    n,
                    avatar_frame,
                    None,
                    None,
                    self._strength,
                    silence,
                    None,
                    None,
                    underrun=True,
                )
            self.stats.idle += 1
            return FrameJob(
                JobKind.IDLE,
                n,
                avatar_frame,
                None,
                None,
                0.0,
                silence,
                None,
                None,
                underrun=underrun,
            )
        dropped = 0
        if backlog > cfg.max_backlog_frames:
            dropped = backlog - 1
            self.stats.dropped_input_frames += dropped
            self._next_input = ready - 1
        i = self._next_input
        self._next_input += 1
        try:
            window = self._mel.window(i)
            start = i * cfg.samples_per_frame
            audio = self._ring.read(start, start + cfg.samples_per_frame)
        except AudioGoneError:
            # Only after a stall longer than the ring: start again from the newest frame.
            self.stats.dropped_input_frames += ready - 1 - i
            self._next_input = ready
            return self._rest_job(n, avatar_frame, silence)
        assert window is not None  # i < frames_ready()
        ready_at = self._lookup_ready_at(i)
        if backlog == 1 and ready_at is not None:
            self._track_wait(now_s - ready_at)
        is_speech = (
            float(window.mean(axis=0).max()) > cfg.speech_threshold and i >= self._rest_before_input
        )
        step = 1.0 / max(1, cfg.blend_frames)
        target = 1.0 if is_speech else 0.0
        if target > self._strength:
            self._strength = min(target, self._strength + step)
        else:
            self._strength = max(target, self._strength - step)
        heard_at = self._lookup_heard_at(start)
        if self._strength <= 0.0:
            self.stats.idle += 1
            return FrameJob(
                JobKind.IDLE,
                n,
                avatar_frame,
                i,
                None,
                0.0,
                audio,
                ready_at,
                heard_at,
                dropped=dropped,
            )
        self.stats.rendered += 1
        return FrameJob(
            JobKind.RENDER,
            n,
            avatar_frame,
            i,
            window,
            self._strength,
            audio,
            ready_at,
            heard_at,
            dropped=dropped,
        )

    def interrupt(self) -> int:
        """Drop every input frame not yet rendered and put the mouth at rest at once (no fade).

        Returns the input sample index (16 kHz) up to which audio has been released. The next
        frames are idle and silent until input pushed after this call is due. The windows of
        the first frames after the cut still reach back into the dropped audio (the window
        starts ``frame_offset`` frames early, plus half an STFT window), so they stay at rest.
        """
        spf = self.config.samples_per_frame
        released = self._next_input * spf
        cut = -(-self._ring.end_index // spf)  # the partly pushed frame goes too
        self._next_input = max(self._next_input, cut)
        self._rest_before_input = self._next_input + self._mel.frame_offset + 1
        self._strength = 0.0
        return released

    def final_job(self) -> FrameJob:
        """The stream's last frame (server shutdown): the avatar at rest, with silence.

        It takes the next output index, so it continues the stream's pts without a gap.
        """
        n = self._output_index
        self._output_index += 1
        self.stats.frames += 1
        silence = np.zeros(self.config.samples_per_frame, np.float32)
        return self._rest_job(n, n % self._avatar_frames, silence)

    def _rest_job(self, n: int, avatar_frame: int, silence: F32) -> FrameJob:
        self._strength = 0.0
        self.stats.idle += 1
        return FrameJob(JobKind.IDLE, n, avatar_frame, None, None, 0.0, silence, None, None)

    def _track_wait(self, wait_s: float) -> None:
        waits = self.stats.waits_s
        waits.append(wait_s)
        if len(waits) < self.config.align_every_frames:
            return
        median = float(np.median(waits))
        low, high = self.config.wait_band_s
        if not low <= median < high:
            self._pad_pending = True
            self.stats.realignments += 1
        waits.clear()


class OutputAudio:
    """16 kHz mono float32 -> 48 kHz mono s16 frames of 20 ms with pts from a sample counter.

    aiortc's sender cuts one Opus packet per frame it is given and resamples anything that is
    not 48 kHz (adding a frame of delay), so this hands it 48 kHz 20 ms frames.
    """

    FRAME_SAMPLES = OUTPUT_RATE_HZ // 50

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_RATE_HZ)
        self._fifo = np.zeros(0, np.int16)
        self._pts = 0
        self._in_pts = 0

    def convert(self, audio_16k: F32) -> list[av.AudioFrame]:
        """Frames covering exactly ``len(audio_16k) * 3`` samples at 48 kHz."""
        src = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio_16k, np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        src.sample_rate = INPUT_RATE_HZ
        src.pts = None
        parts: list[npt.NDArray[np.int16]] = [self._fifo]
        parts.extend(
            f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            for f in self._resampler.resample(src)
        )
        fifo = np.concatenate(parts)
        wanted = audio_16k.shape[0] * 3
        if fifo.shape[0] < wanted:
            # Only at the start: the resampler holds back its filter delay once.
            fifo = np.concatenate((np.zeros(wanted - fifo.shape[0], np.int16), fifo))
        out, self._fifo = fifo[:wanted], fifo[wanted:]
        frames = []
        for k in range(0, wanted, self.FRAME_SAMPLES):
            frame = av.AudioFrame.from_ndarray(
                out[k : k + self.FRAME_SAMPLES].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = OUTPUT_RATE_HZ
            frame.pts = self._pts
            frame.time_base = fractions.Fraction(1, OUTPUT_RATE_HZ)
            self._pts += self.FRAME_SAMPLES
            frames.append(frame)
        return frames
