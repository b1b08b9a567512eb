"""Live MuseTalk audio features: the audio encoder over a sliding window of recent audio.

Offline, MuseTalk encodes each 30 s segment at once, so a feature depends on audio up to 30 s
later. Live, frame ``i``'s features come from one encoder run over the ``context_s`` of audio
that ends ``lookahead_s`` after the frame's time (``t = i / 25`` s). The encoder graph adds
the positional embeddings the offline segment would give the same audio (it takes the
window's first position; positions restart every 30 s of the session). The mel columns
are the session stream's own, each computed once as its audio arrives, equal to the offline
segment's (no padding at the window's edges). Two things still differ from offline
features: attention sees the window, not the whole segment (the window's last positions see
little future); and the log-mel floor's peak is the loudest sound of the last 30 s heard,
not the loudest of the 30 s segment (past and future) around it.
``bench musetalk-features`` measures the drift for each context length and lookahead; the
defaults below come from it.

Pure and synchronous. The encoder is a seam (:class:`AudioEncoder`): the engine passes its ONNX
session, tests a stand-in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.audio.whisper_mel import (
    HOP_SAMPLES,
    LOG_MIN_POWER,
    MEL_FRAMES_PER_S,
    StreamingWhisperMel,
    normalise,
)
from streamer.engine.musetalk.features import (
    FPS,
    POSITIONS_PER_S,
    AudioEncoder,
    frame_window,
    frame_windows,
)

F32 = npt.NDArray[np.float32]

SAMPLE_RATE_HZ = 16_000
SAMPLES_PER_POSITION = SAMPLE_RATE_HZ // POSITIONS_PER_S  # 320: 20 ms
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ // FPS  # 640: 40 ms
SEGMENT_POSITIONS = 30 * POSITIONS_PER_S  # 1500: the encoder's positions restart every 30 s
# The frame's window reaches 120 ms past it; its last position reads mel columns up to
# 4 i + 12 (two stride-1 and stride-2 convolutions), and each column half an STFT window
# (12.5 ms) further: 132.5 ms, rounded up to whole positions.
MIN_LOOKAHEAD_S = 0.14
# The Wav2Lip mel alignment (frames early) whose window gates speech for MuseTalk frames, live
# and offline: it ends 160 ms past the frame plus half an STFT window, after the default
# lookahead, so a frame is ready when both its window and its encoder input are.
MEL_FRAME_OFFSET = 1

Floor = Literal["recent", "window"]
PEAK_MEMORY_S = 30.0  # as long as an offline segment


@dataclass(frozen=True)
class LiveFeatureSettings:
    """How live features are computed.

    ``context_s``: audio the encoder sees per run; ``lookahead_s``: audio past the frame's
    time that must have arrived (the playout waits for it); both whole 20 ms positions.
    ``floor``: the log-mel floor's peak, the loudest of the last 30 s ("recent") or the
    window's own ("window").
    """

    context_s: float = 2.0
    lookahead_s: float = 0.16
    floor: Floor = "recent"

    def __post_init__(self) -> None:
        for name in ("context_s", "lookahead_s"):
            positions = getattr(self, name) * POSITIONS_PER_S
            if not math.isclose(positions, round(positions), abs_tol=1e-9):
                raise ValueError(f"{name} must be whole 20 ms positions, got {getattr(self, name)}")
        if self.lookahead_s < MIN_LOOKAHEAD_S - 1e-9:
            raise ValueError(f"lookahead_s must be at least {MIN_LOOKAHEAD_S} s")
        left_s = -frame_window(0)[0] / POSITIONS_PER_S
        if self.context_s < self.lookahead_s + left_s - 1e-9:
            raise ValueError("context_s must cover the frame's whole window")

    @property
    def context_samples(self) -> int:
        return round(self.context_s * POSITIONS_PER_S) * SAMPLES_PER_POSITION

    @property
    def lookahead_samples(self) -> int:
        return round(self.lookahead_s * POSITIONS_PER_S) * SAMPLES_PER_POSITION


def frame_span(frame_index: int, settings: LiveFeatureSettings) -> tuple[int, int]:
    """The samples ``[start, end)`` of the session's 16 kHz audio that frame ``frame_index``'s
    encoder run reads: ``end`` is ``lookahead_s`` past the frame's time, ``start`` the
    context before it (not before the session's first sample, so early windows are shorter).
    Both are whole positions."""
    end = frame_index * SAMPLES_PER_FRAME + settings.lookahead_samples
    return max(0, end - settings.context_samples), end


@dataclass(frozen=True)
class EncoderInput:
    """One frame's encoder run: ``mel`` f32 ``[80, 2T]`` and the graph's ``first_position``
    (mod 1500); ``start_position`` is the window's first position counted from the session's
    start (20 ms units), to cut frame ``frame_index``'s ``[2i-4, 2i+6)`` out of the states."""

    frame_index: int
    mel: F32
    first_position: int
    start_position: int

    @property
    def positions(self) -> int:
        """T: the positions the encoder returns for this input."""
        return int(self.mel.shape[1]) // 2


def frame_audio(states: F32, run: EncoderInput) -> F32:
    """The UNet's audio input ``[50, 384]`` from the encoder's ``states`` ``[T, 5, 384]`` for
    ``run``."""
    windows = frame_windows(states, run.start_position, range(run.frame_index, run.frame_index + 1))
    window: F32 = windows[0]
    return window


class LiveFeatures:
    """One session's live MuseTalk features. Not thread-safe: one per session.

    The session's 16 kHz audio is pushed in order (:meth:`push`, as it arrives); a
    :class:`~streamer.audio.whisper_mel.StreamingWhisperMel` computes each mel column once,
    keeping the last ``capacity_s``. Frame ``i``'s encoder input is ready once
    :meth:`samples_needed` samples are in; it is read from those columns, floored and
    normalised per window. Keeps the peaks of the windows it has read, for the "recent"
    floor: a monotonic deque of (window end sample, peak), bounded by :data:`PEAK_MEMORY_S`
    of windows (at most 750).
    """

    def __init__(self, settings: LiveFeatureSettings, capacity_s: float = 10.0) -> None:
        self.settings = settings
        self._mel = StreamingWhisperMel(round(capacity_s * MEL_FRAMES_PER_S))
        self._peaks: deque[tuple[int, float]] = deque()

    @property
    def peak_log10(self) -> float:
        """The floor's peak: the loudest log10 mel power of the last 30 s read."""
        return self._peaks[0][1] if self._peaks else math.log10(LOG_MIN_POWER)

    @property
    def samples_pushed(self) -> int:
        return self._mel.samples_pushed

    def _remember(self, end_sample: int, peak: float) -> None:
        while self._peaks and self._peaks[-1][1] <= peak:
            self._peaks.pop()
        self._peaks.append((end_sample, peak))
        oldest = end_sample - round(PEAK_MEMORY_S * SAMPLE_RATE_HZ)
        while self._peaks[0][0] <= oldest:
            self._peaks.popleft()

    def push(self, samples_16k: npt.ArrayLike) -> None:
        """The session's next samples (16 kHz mono), in order, gaps filled."""
        self._mel.push(samples_16k)

    def span(self, frame_index: int) -> tuple[int, int]:
        """:func:`frame_span` with these settings."""
        return frame_span(frame_index, self.settings)

    def samples_needed(self, frame_index: int) -> int:
        """Samples that must have been pushed for frame ``frame_index``'s encoder input: its
        span, and the 40 ms past it that its last mel column's STFT reads."""
        _, end = self.span(frame_index)
        return StreamingWhisperMel.samples_needed(end // HOP_SAMPLES)

    def encoder_input(self, frame_index: int) -> EncoderInput:
        """Frame ``frame_index``'s encoder run. Raises ValueError before
        :meth:`samples_needed` samples have been pushed, AudioGoneError when its columns are
        older than the capacity. Frames are asked for in order (the "recent" floor remembers
        the windows read)."""
        start, end = self.span(frame_index)
        log10_mel = self._mel.read(start // HOP_SAMPLES, end // HOP_SAMPLES)
        window_peak = float(log10_mel.max())
        if self.settings.floor == "window":
            mel = normalise(log10_mel, window_peak)
        else:
            self._remember(end, window_peak)
            mel = normalise(log10_mel, self.peak_log10)
        start_position = start // SAMPLES_PER_POSITION
        return EncoderInput(
            frame_index=frame_index,
            mel=mel,
            first_position=start_position % SEGMENT_POSITIONS,
            start_position=start_position,
        )

    def features(self, encoder: AudioEncoder, frame_index: int) -> F32:
        """:meth:`encoder_input`, one encoder run, :func:`frame_audio`: ``[50, 384]``."""
        run = self.encoder_input(frame_index)
        first = np.array([run.first_position], np.int64)
        return frame_audio(encoder(run.mel[None], first)[0], run)


def replay(live: LiveFeatures, encoder: AudioEncoder, pcm_16k: F32, frames: Iterable[int]) -> F32:
    """Live features ``[n, 50, 384]`` of ``frames`` (ascending) of a recorded clip, its audio
    pushed as a session hears it: up to each frame's :meth:`LiveFeatures.samples_needed`
    (which the clip must hold)."""
    out = []
    for i in frames:
        need = live.samples_needed(i)
        if need > live.samples_pushed:
            live.push(pcm_16k[live.samples_pushed : need])
        out.append(live.features(encoder, i))
    return np.stack(out)
