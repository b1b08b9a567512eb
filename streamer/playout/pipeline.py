"""One session's media logic, pure and synchronous: audio in, one frame job per tick out.

The asyncio shell calls :meth:`SessionPipeline.push_audio` for every incoming audio frame and
:meth:`SessionPipeline.next_job` once per scheduler tick; time is passed in (``now_s``, from the
one process clock), so every decision here is testable without a clock.

Time lines. Input frame ``i`` is the 40 ms of received audio starting at 16 kHz sample
``640 i``; the input's sample index is the sender's media time (a lost packet is filled with
concealment of equal length, so later audio keeps its place). Frame ``i``'s mel window is
complete once ``samples_needed(i)`` samples are in: about 130 ms after the frame's start for
Wav2Lip's alignment, about 50 ms for the built-in model's. Output frame ``n`` is the n-th frame
sent (video pts ``n * 3600`` at 90 kHz, audio pts ``n * 1920`` at 48 kHz); each tick renders one
input frame and releases that frame's own audio with it, so lips and sound leave together.

Playout. How late each frame's audio completes, against its own media time, feeds a
:class:`~streamer.audio.jitter.DelayEstimator`; a frame's *playout delay* at a tick is how long
after the fastest recent path it is played. The pipeline keeps that delay at the estimator's
target, moving it only where nobody can see or hear it: in a pause of the caller's speech
(:class:`~streamer.audio.pause.PauseDetector`: at least ``pause_before_s`` of audio at the noise
floor up to the frame and through its window), it inserts a silent frame with the picture
unchanged (delay +40 ms) or skips a silent input frame (delay -40 ms). A frame not
ready at its tick is an underrun: with the mouth moving the last image is held and the audio
concealed (a faded, mirrored repeat), the mouth fading to rest if it lasts; the late audio is
played when it comes, never thrown away. Only audio later than the maximum delay is dropped,
counted (and counted again when it was speech); after a stall of the server's own, audio the
stall held up may play that much later still, and the pauses take the delay back down. Sender
clock drift moves the delay slowly and is absorbed by the same steps.

One module over 400 lines on purpose: :class:`SessionPipeline` is one state machine (what
has arrived, what has played, the delay target, the mouth), and its placement, level and
underrun rules read each other's state on every tick; split, each part would need the whole.
"""

from __future__ import annotations

import collections
import enum
import fractions
from dataclasses import dataclass, field, replace

import av
import numpy as np
import numpy.typing as npt

from streamer.audio.conceal import fade_in, fade_out_continuation
from streamer.audio.ingest import AudioIngest
from streamer.audio.jitter import DelayEstimator, JitterConfig, JitterSnapshot, LoopStalls
from streamer.audio.mel import MelExtractor
from streamer.audio.pause import PauseDetector
from streamer.audio.ring import SampleRing
from streamer.engine.musetalk.streaming import EncoderInput, LiveFeatures
from streamer.errors import AudioGoneError
from streamer.playout.mouth import avatar_frame as avatar_frame_of
from streamer.playout.mouth import is_speech_window, next_strength

F32 = npt.NDArray[np.float32]

INPUT_RATE_HZ = 16_000
OUTPUT_RATE_HZ = 48_000
_CONCEALED_FROM = 320  # a lost packet is concealed from the 20 ms heard before it


@dataclass(frozen=True)
class PipelineConfig:
    fps: int = 25
    ring_s: float = 10.0
    # A window is speech when the loudest column's mean feature exceeds this ([-4, 4] scale;
    # -4 is digital silence, quiet room noise sits near -3.3, speech above -2).
    speech_threshold: float = -2.6
    # Frames over which the generated mouth fades in and out (no pop at speech edges).
    blend_frames: int = 3
    # The adaptive playout delay (live sources); bounds and statistics.
    jitter: JitterConfig = field(default_factory=JitterConfig)
    # In a pause, a frame is inserted when the playout delay is this much below the target and
    # one is skipped when it is a frame period above it: the delay stays within about a frame
    # of the target, and a step never calls for the opposite step next (the measured delay
    # moves by a few milliseconds from tick to tick).
    level_tolerance_s: float = 0.005
    # A level change needs this much quiet audio before the frame it happens at (and all the
    # audio after it up to the frame's window): a pause, not the closure before a consonant.
    pause_before_s: float = 0.12
    # Underrun ticks during speech that repeat the last image before the mouth fades to rest.
    hold_frames: int = 2
    # Concealment of a late tick's audio fades out over this; real audio after a gap or a
    # concealment fades in over the second.
    conceal_fade_s: float = 0.03
    resume_fade_s: float = 0.0025
    # A gap in a live source's media time up to this is filled (a lost packet, DTX); a longer
    # one, or time going backwards, is a new start (the delay statistics start over).
    max_gap_fill_s: float = 2.0
    # Audio held up by a stall of the server's own (its socket kept it: a long collection, the
    # hypervisor) is played late rather than dropped, by up to the stall's length and at most
    # this far beyond the maximum delay; the delay then comes back down in the caller's pauses.
    # A stall is the server's fault, and the caller's words are worth a few seconds of delay.
    max_stall_backlog_s: float = 2.0

    @property
    def samples_per_frame(self) -> int:
        return INPUT_RATE_HZ // self.fps

    @property
    def output_samples_per_frame(self) -> int:
        return OUTPUT_RATE_HZ // self.fps

    @property
    def frame_period_s(self) -> float:
        return 1.0 / self.fps


class JobKind(enum.Enum):
    RENDER = "render"  # run the model on `window`, paste with `strength`
    IDLE = "idle"  # the avatar frame as it is
    HOLD = "hold"  # repeat the previous output image (speech underrun)


class LevelChange(enum.Enum):
    INSERT = "insert"  # an idle silent frame in place of input: playout delay +1 frame
    SKIP = "skip"  # a silent input frame never played: playout delay -1 frame


@dataclass(frozen=True, kw_only=True)
class FrameJob:
    """One tick's decision for one sink: what to show and what to play. Built by keyword."""

    kind: JobKind
    output_index: int  # n: video pts = n * 3600
    avatar_frame: int  # index into the avatar's frames
    audio_16k: F32  # the audio released with this frame, 640 samples
    input_frame: int | None = None  # the input frame rendered (or shown at rest)
    window: F32 | None = None  # [80, 16] mel window, for RENDER
    # A MuseTalk model's own audio input, for RENDER (pipelines given live features).
    encoder_input: EncoderInput | None = None
    strength: float = 0.0  # blend of the generated mouth, [0, 1]
    ready_at_s: float | None = None  # when the input frame's window completed
    heard_at_s: float | None = None  # when the input frame's own first sample arrived
    playout_delay_s: float | None = None  # how long after the fastest recent path it plays
    relative_delay_s: float | None = None  # how late its audio came, against the fastest
    underrun: bool = False  # audio had started but the next window was not complete
    concealed: bool = False  # `audio_16k` is concealment (an underrun during speech)
    level_change: LevelChange | None = None
    dropped: int = 0  # input frames dropped at this tick (later than the maximum delay)
    speech_dropped: int = 0  # ... of which speech


@dataclass
class PipelineStats:
    frames: int = 0
    rendered: int = 0
    idle: int = 0
    held: int = 0
    underruns: int = 0
    concealed: int = 0
    inserted: int = 0
    skipped: int = 0
    dropped_input_frames: int = 0
    dropped_speech_frames: int = 0
    gaps_filled: int = 0
    gap_samples_filled: int = 0
    restarts: int = 0  # media time jumped: statistics started over
    samples_in: int = 0
    # Frames played later than the maximum delay because a server stall held them up.
    late_after_stall: int = 0


@dataclass(frozen=True)
class PlayoutSnapshot:
    """A session's playout state, for reports (/metrics, the call page's overlay)."""

    adaptive: bool
    target_delay_s: float
    playout_delay_s: float | None  # of the last frame played from input
    jitter: JitterSnapshot
    stats: PipelineStats

    def as_json(self) -> dict[str, object]:
        s = self.stats
        return {
            "adaptive": self.adaptive,
            "target_delay_ms": round(self.target_delay_s * 1e3, 1),
            "playout_delay_ms": (
                None if self.playout_delay_s is None else round(self.playout_delay_s * 1e3, 1)
            ),
            "quantile": self.jitter.quantile,
            "recent_peak_delays_ms": [round(p * 1e3, 1) for p in self.jitter.recent_peaks_s],
            "late_units": self.jitter.late_units,
            "stalled_units": self.jitter.stalled_units,
            "frames": s.frames,
            "underruns": s.underruns,
            "concealed_frames": s.concealed,
            "inserted_frames": s.inserted,
            "skipped_frames": s.skipped,
            "dropped_frames": s.dropped_input_frames,
            "dropped_speech_frames": s.dropped_speech_frames,
            "gaps_filled": s.gaps_filled,
            "gap_ms_filled": round(s.gap_samples_filled / INPUT_RATE_HZ * 1e3, 1),
            "restarts": s.restarts,
            "late_after_stall_frames": s.late_after_stall,
        }


@dataclass(frozen=True)
class _Completion:
    """Input frame ``frame``'s window completed at ``at_s``, with the audio ending at input
    sample ``media_end`` (``relative_s``: how late that audio was)."""

    frame: int
    at_s: float
    media_end: int
    relative_s: float


class SessionPipeline:
    """Per-session audio state and frame decisions. Synchronous; one owner.

    ``adaptive`` (live sources: a call, a publishing page, a microphone) keeps the playout
    delay at the estimator's target; otherwise (audio pushed at the tick itself, a channel's
    queue) the target is zero: each frame plays at the tick its window completes.
    """

    def __init__(
        self,
        avatar_frame_count: int,
        config: PipelineConfig | None = None,
        *,
        adaptive: bool = True,
    ) -> None:
        self.config = config or PipelineConfig()
        cfg = self.config
        self._avatar_frames = avatar_frame_count
        self._adaptive = adaptive
        self._ingest = AudioIngest(INPUT_RATE_HZ)
        self._ring = SampleRing(int(cfg.ring_s * INPUT_RATE_HZ))
        self._mel = MelExtractor(fps=cfg.fps, capacity_s=cfg.ring_s)
        self._timing = DelayEstimator(cfg.jitter)
        self._stalls: LoopStalls | None = None
        self._stalls_seen_until_s = float("-inf")
        # How far past the maximum delay a server stall's backlog may still play (seconds).
        self._stall_backlog_s = 0.0
        self._pauses = PauseDetector(capacity_blocks=round(cfg.ring_s * 50))
        self._next_input = 0  # the next input frame to play
        self._output_index = 0
        self._strength = 0.0
        self._playing = False  # a frame has been played from input
        # Input frames before this one are rendered at rest (see `interrupt`).
        self._rest_before_input = 0
        # Media time (s) where the next live frame should start; None before the first.
        self._media_next_s: float | None = None
        self._resume_fade = False  # fade in the next real audio (after a gap or concealment)
        self._last_audio: F32 = np.zeros(cfg.samples_per_frame, np.float32)
        self._last_window: F32 | None = None
        self._features: LiveFeatures | None = None
        self._last_encoder_input: EncoderInput | None = None
        self._underrun_ticks = 0  # consecutive underrun ticks during speech
        self._last_playout_delay_s: float | None = None
        # How recent windows completed, oldest first, consecutive frames; ~10 s of them.
        self._completions: collections.deque[_Completion] = collections.deque(maxlen=256)
        # (end sample index, arrival time) of recent pushes; bounded to ~12 s of packets.
        self._heard_at: collections.deque[tuple[int, float]] = collections.deque(maxlen=600)
        self.stats = PipelineStats()

    @property
    def mel(self) -> MelExtractor:
        return self._mel

    @property
    def input_samples(self) -> int:
        """16 kHz input samples taken so far (the next one's index)."""
        return self._ring.end_index

    @property
    def adaptive(self) -> bool:
        return self._adaptive

    @property
    def target_delay_s(self) -> float:
        """The playout delay aimed at: the estimator's target, below the maximum by the
        band a frame step needs (so keeping to it never drops anything); 0 when not
        adaptive."""
        if not self._adaptive:
            return 0.0
        cfg = self.config
        ceiling_s = cfg.jitter.max_delay_s - cfg.frame_period_s
        return min(self._timing.target_s, max(0.0, ceiling_s))

    def snapshot(self) -> PlayoutSnapshot:
        return PlayoutSnapshot(
            adaptive=self._adaptive,
            target_delay_s=self.target_delay_s,
            playout_delay_s=self._last_playout_delay_s,
            jitter=self._timing.snapshot(),
            stats=self.stats,
        )

    def watch_stalls(self, stalls: LoopStalls) -> None:
        """Learn when the server itself was held up: audio that waited through such a stall
        is no evidence of network lateness (:class:`~streamer.audio.jitter.LoopStalls`)."""
        self._stalls = stalls
        seen = stalls.ended_after(float("-inf"))  # stalls before this session are not its own
        self._stalls_seen_until_s = seen[-1][1] if seen else float("-inf")

    def set_mel_frame_offset(self, frame_offset: int) -> None:
        """Use a model's mel alignment (before any audio arrives)."""
        if self._mel.samples_pushed:
            raise RuntimeError("the mel alignment is fixed once audio has arrived")
        self._mel = MelExtractor(
            fps=self.config.fps, frame_offset=frame_offset, capacity_s=self.config.ring_s
        )

    def set_live_features(self, features: LiveFeatures) -> None:
        """Give every rendered frame a MuseTalk encoder input (before any audio arrives).

        Raises ValueError when the features' lookahead reaches past the mel window's, which
        decides when a frame is ready (give the model's mel frame offset first)."""
        if self._mel.samples_pushed:
            raise RuntimeError("the features are fixed once audio has arrived")
        short = [
            i
            for i in range(self.config.fps)
            if features.samples_needed(i) > self._mel.samples_needed(i)
        ]
        if short:
            raise ValueError(
                f"frame {short[0]}'s features need audio past its mel window: "
                "use a smaller mel frame offset"
            )
        self._features = features

    def set_source(self, *, adaptive: bool) -> None:
        """A new audio source (a channel's driver changed): timing statistics start over."""
        self._adaptive = adaptive
        self._timing.reset()
        self._media_next_s = None

    # --- input -----------------------------------------------------------------------------

    def push_audio(self, frame: av.AudioFrame, now_s: float) -> None:
        """Ingest one live audio frame received at ``now_s``, placed by its media time.

        ``frame.pts`` x ``frame.time_base`` is the frame's time on the sender's clock (aiortc
        sets it from the RTP timestamp). A gap before it (lost packets, DTX) up to
        ``max_gap_fill_s`` is filled with concealment of the same length; a frame entirely
        before the expected time is a duplicate and ignored; a jump of more than that either
        way is a new start (the sender's clock restarted: the delay statistics start over).
        Without pts, frames are taken as contiguous.
        """
        gap_s = 0.0
        end_s: float | None = None
        if frame.pts is not None and frame.time_base is not None:
            start_s = float(frame.pts * frame.time_base)
            end_s = start_s + frame.samples / frame.sample_rate
            expected_s = self._media_next_s
            if expected_s is not None:
                gap_s = start_s - expected_s
                if abs(gap_s) > self.config.max_gap_fill_s:
                    self._restart_timing()  # the sender's clock jumped: a new time line
                    gap_s = 0.0
                elif end_s <= expected_s + 1e-4:
                    return  # a duplicate, or older than what was taken already
                gap_s = max(0.0, gap_s)  # a small overlap is taken as contiguous
        chunk = self._ingest.push(frame)  # raises AudioFormatError: the frame counts as lost
        if end_s is not None:
            self._media_next_s = end_s
        gap = round(gap_s * INPUT_RATE_HZ)
        if gap > 0:
            self.stats.gaps_filled += 1
            self.stats.gap_samples_filled += gap
            end = self._ring.end_index
            tail = self._ring.read(max(self._ring.start_index, end - _CONCEALED_FROM), end)
            fade = round(self.config.conceal_fade_s * INPUT_RATE_HZ)
            self._append(fade_out_continuation(tail, gap, fade), now_s, real=False)
            self._resume_fade = True
        self._append(self._fade_if_resuming(chunk.samples), now_s)

    def push_pcm_16k(self, samples: F32, now_s: float) -> None:
        """Ingest samples that are already 16 kHz mono float32 and contiguous."""
        self._append(np.asarray(samples, np.float32), now_s)

    def _restart_timing(self) -> None:
        self.stats.restarts += 1
        self._timing.reset()
        self._resume_fade = True

    def _fade_if_resuming(self, samples: F32) -> F32:
        if not self._resume_fade or samples.shape[0] == 0:
            return samples
        self._resume_fade = False
        return fade_in(samples, round(self.config.resume_fade_s * INPUT_RATE_HZ))

    def _append(self, samples: F32, now_s: float, real: bool = True) -> None:
        """Take ``samples`` arriving at ``now_s``: a timing observation (their end, in media
        time, became available now; if a stall of the server's own explains their wait, no
        evidence of network lateness). Concealment (``real=False``) never sets the noise
        floor."""
        if samples.shape[0] == 0:
            return
        before = self._mel.frames_ready()
        self._ring.write(samples)
        self._mel.push(samples)
        if self._features is not None:
            self._features.push(samples)
        self._pauses.push(samples, real)
        self.stats.samples_in += int(samples.shape[0])
        end = self._ring.end_index
        self._heard_at.append((end, now_s))
        # Concealment counts as audio that came now: a lost packet's frame could not complete
        # before the packet after it, so losses raise the target (~20 ms) rather than make
        # frames wait in speech.
        media_s = end / INPUT_RATE_HZ
        base_s = self._timing.base_s
        stalled = (
            self._stalls is not None
            and base_s is not None
            and self._stalls.explains(media_s + base_s, now_s)
        )
        relative_s = self._timing.observe(now_s, media_s, stalled)
        for i in range(before, self._mel.frames_ready()):
            if self._completions and self._completions[-1].frame != i - 1:
                self._completions.clear()  # frames skipped by an interrupt: start over
            self._completions.append(_Completion(i, now_s, end, relative_s))

    def _completion(self, frame: int) -> _Completion | None:
        if not self._completions:
            return None
        k = frame - self._completions[0].frame
        return self._completions[k] if 0 <= k < len(self._completions) else None

    def _lookup_heard_at(self, sample: int) -> float | None:
        found = None
        for end, t in reversed(self._heard_at):
            if end <= sample:
                break
            found = t
        return found

    # --- output ----------------------------------------------------------------------------

    def _playout_delay_s(self, frame: int, now_s: float) -> float | None:
        """How long after the fastest recent path frame ``frame`` plays at ``now_s``: now,
        minus when the audio that completed its window would have come with the smallest
        recent offset (its media end plus the base)."""
        base_s = self._timing.base_s
        done = self._completion(frame)
        if base_s is None or done is None:
            return None
        return now_s - base_s - done.media_end / INPUT_RATE_HZ

    def _is_speech(self, window: F32, frame: int) -> bool:
        return (
            is_speech_window(window, self.config.speech_threshold)
            and frame >= self._rest_before_input
        )

    def _window(self, frame: int) -> F32:
        window = self._mel.window(frame)
        assert window is not None  # only asked for frames < frames_ready()
        return window

    def next_job(self, now_s: float) -> FrameJob:
        """Decide this tick's frame for this session and advance the session's clocks."""
        cfg = self.config
        n = self._output_index
        self._output_index += 1
        self.stats.frames += 1
        avatar_frame = avatar_frame_of(n, self._avatar_frames)
        try:
            return self._decide(n, avatar_frame, now_s)
        except AudioGoneError:
            # Only after a stall longer than the ring: start again from the newest frame.
            ready = self._mel.frames_ready()
            self.stats.dropped_input_frames += max(0, ready - self._next_input)
            self._next_input = ready
            self._strength = 0.0
            return self._idle(n, avatar_frame, np.zeros(cfg.samples_per_frame, np.float32))

    def _decide(self, n: int, avatar_frame: int, now_s: float) -> FrameJob:
        cfg = self.config
        period_s = cfg.frame_period_s
        ready = self._mel.frames_ready()
        dropped, speech_dropped = self._drop_beyond_max_delay(ready, now_s)
        i = self._next_input
        if i >= ready:
            return self._underrun(n, avatar_frame, started=self._playing and i == ready)
        target_s = self.target_delay_s
        delay_s = self._playout_delay_s(i, now_s)
        change: LevelChange | None = None
        if delay_s is not None and self._in_pause(i):
            if delay_s < target_s - cfg.level_tolerance_s:
                # The frame waits one more tick (delay +1 frame); meanwhile the picture stays
                # as it is (at rest, or the last image if the mouth is still fading) and the
                # pause goes on: its last 40 ms played backwards (the join is continuous, and
                # room noise does not drop out).
                self.stats.inserted += 1
                pause = self._pause_continuation()
                if self._strength > 0.0:
                    self.stats.held += 1
                    job = FrameJob(
                        kind=JobKind.HOLD,
                        output_index=n,
                        avatar_frame=avatar_frame,
                        audio_16k=pause,
                        strength=self._strength,
                    )
                else:
                    job = self._idle(n, avatar_frame, pause)
                return _with(
                    job,
                    level_change=LevelChange.INSERT,
                    dropped=dropped,
                    speech_dropped=speech_dropped,
                )
            if delay_s >= target_s + period_s and i + 1 < ready:
                self.stats.skipped += 1
                change = LevelChange.SKIP
                i += 1
                delay_s = self._playout_delay_s(i, now_s)
        job = self._play(i, n, avatar_frame, now_s, delay_s)
        return _with(job, level_change=change, dropped=dropped, speech_dropped=speech_dropped)

    def _in_pause(self, frame: int, before_s: float | None = None) -> bool:
        """Whether the audio from ``before_s`` (default ``pause_before_s``) before ``frame`` to
        the end of its window is all quiet: a change at this frame falls inside a pause."""
        cfg = self.config
        before = round((cfg.pause_before_s if before_s is None else before_s) * INPUT_RATE_HZ)
        start = frame * cfg.samples_per_frame - before
        return self._pauses.is_quiet(start, self._mel.samples_needed(frame))

    def _drop_beyond_max_delay(self, ready: int, now_s: float) -> tuple[int, int]:
        """Drop input frames whose playout delay is past the maximum (keeping the newest ready
        one to play), or past it and the backlog of a recent server stall; returns (dropped,
        of which speech)."""
        dropped = speech = 0
        cfg = self.config
        self._take_new_stalls()
        max_s = cfg.jitter.max_delay_s + self._stall_backlog_s
        while self._next_input < ready - 1:
            delay_s = self._playout_delay_s(self._next_input, now_s)
            if delay_s is None or delay_s <= max_s:
                break
            if not self._in_pause(self._next_input, before_s=0.0):
                speech += 1
            dropped += 1
            self._next_input += 1
        self.stats.dropped_input_frames += dropped
        self.stats.dropped_speech_frames += speech
        if self._stall_backlog_s > 0.0 and self._next_input < ready:
            # The allowance follows the delay down as the pauses take it back, and never grows
            # again but by a new stall.
            delay_s = self._playout_delay_s(self._next_input, now_s)
            if delay_s is not None:
                # A frame of slack: the next frame's delay may exceed this one's by rounding.
                excess_s = delay_s - cfg.jitter.max_delay_s
                slack_s = max(0.0, excess_s + cfg.frame_period_s)
                self._stall_backlog_s = min(self._stall_backlog_s, slack_s)
                if excess_s > 0.0:
                    self.stats.late_after_stall += 1
        return dropped, speech

    def _take_new_stalls(self) -> None:
        """Allow the playout to fall behind by the length of a new stall of the server's own
        (up to ``max_stall_backlog_s``): the audio it held up is late by that much.

        The longest stall, not their sum: an overloaded server whose every tick is a little
        late (a model slower than the frame rate) must not add its lateness up into seconds
        of delay; there the maximum delay still bounds latency, give or take one tick."""
        if self._stalls is None:
            return
        new = self._stalls.ended_after(self._stalls_seen_until_s)
        if not new:
            return
        self._stalls_seen_until_s = new[-1][1]
        held_s = max(end_s - start_s for start_s, end_s in new)
        self._stall_backlog_s = min(
            self.config.max_stall_backlog_s, max(self._stall_backlog_s, held_s)
        )

    def _play(
        self, i: int, n: int, avatar_frame: int, now_s: float, delay_s: float | None
    ) -> FrameJob:
        cfg = self.config
        self._next_input = i + 1
        self._playing = True
        self._underrun_ticks = 0
        window = self._window(i)
        start = i * cfg.samples_per_frame
        audio = self._ring.read(start, start + cfg.samples_per_frame)
        audio = self._fade_if_resuming(audio)
        self._last_audio = audio
        self._last_playout_delay_s = delay_s
        self._strength = next_strength(self._strength, self._is_speech(window, i), cfg.blend_frames)
        done = self._completion(i)
        kind = JobKind.IDLE if self._strength <= 0.0 else JobKind.RENDER
        if kind is JobKind.IDLE:
            self.stats.idle += 1
        else:
            self._last_window = window
            self._last_encoder_input = self._encoder_input(i)
            self.stats.rendered += 1
        return FrameJob(
            kind=kind,
            output_index=n,
            avatar_frame=avatar_frame,
            audio_16k=audio,
            input_frame=i,
            window=window if kind is JobKind.RENDER else None,
            encoder_input=self._last_encoder_input if kind is JobKind.RENDER else None,
            strength=self._strength,
            ready_at_s=None if done is None else done.at_s,
            heard_at_s=self._lookup_heard_at(start),
            playout_delay_s=delay_s,
            relative_delay_s=None if done is None else done.relative_s,
        )

    def _encoder_input(self, i: int) -> EncoderInput | None:
        """Input frame ``i``'s MuseTalk encoder input (ready with its mel window: see
        :meth:`set_live_features`)."""
        return None if self._features is None else self._features.encoder_input(i)

    def _underrun(self, n: int, avatar_frame: int, started: bool) -> FrameJob:
        """No window is ready. Before the first frame has played, or while waiting for audio
        after `interrupt`, that is not an underrun."""
        cfg = self.config
        silence = np.zeros(cfg.samples_per_frame, np.float32)
        if not started:
            return self._idle(n, avatar_frame, silence)
        self.stats.underruns += 1
        if self._strength <= 0.0:
            # In silence: an idle frame, which also lets the playout delay grow unheard.
            return _with(self._idle(n, avatar_frame, self._pause_continuation()), underrun=True)
        self._underrun_ticks += 1
        self.stats.concealed += 1
        self._resume_fade = True
        audio = silence
        if self._underrun_ticks == 1:
            fade = round(cfg.conceal_fade_s * INPUT_RATE_HZ)
            audio = fade_out_continuation(self._last_audio, cfg.samples_per_frame, fade)
        self._last_audio = audio
        if self._underrun_ticks <= cfg.hold_frames or self._last_window is None:
            self.stats.held += 1
            return FrameJob(
                kind=JobKind.HOLD,
                output_index=n,
                avatar_frame=avatar_frame,
                audio_16k=audio,
                strength=self._strength,
                underrun=True,
                concealed=True,
            )
        # Still nothing: the mouth fades to rest on the last window rather than freezing.
        self._strength = next_strength(self._strength, False, cfg.blend_frames)
        if self._strength <= 0.0:
            self.stats.idle += 1
            return FrameJob(
                kind=JobKind.IDLE,
                output_index=n,
                avatar_frame=avatar_frame,
                audio_16k=audio,
                underrun=True,
                concealed=True,
            )
        self.stats.rendered += 1
        return FrameJob(
            kind=JobKind.RENDER,
            output_index=n,
            avatar_frame=avatar_frame,
            audio_16k=audio,
            window=self._last_window,
            encoder_input=self._last_encoder_input,
            strength=self._strength,
            underrun=True,
            concealed=True,
        )

    def _pause_continuation(self) -> F32:
        """40 ms that continue a pause: the last audio released, played backwards."""
        return np.ascontiguousarray(self._last_audio[::-1])

    def _idle(self, n: int, avatar_frame: int, audio: F32) -> FrameJob:
        self.stats.idle += 1
        self._last_audio = audio
        return FrameJob(
            kind=JobKind.IDLE, output_index=n, avatar_frame=avatar_frame, audio_16k=audio
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
        self._underrun_ticks = 0
        return released

    def final_job(self) -> FrameJob:
        """The stream's last frame (server shutdown): the avatar at rest, with silence.

        It takes the next output index, so it continues the stream's pts without a gap.
        """
        n = self._output_index
        self._output_index += 1
        self.stats.frames += 1
        self._strength = 0.0
        return self._idle(
            n, n % self._avatar_frames, np.zeros(self.config.samples_per_frame, np.float32)
        )


def _with(job: FrameJob, **changes: object) -> FrameJob:
    """``job`` with some fields replaced (frozen dataclass)."""
    return replace(job, **changes)  # type: ignore[arg-type]


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
