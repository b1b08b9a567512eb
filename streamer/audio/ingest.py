"""Turn incoming audio of any format into 16 kHz mono float32 with exact absolute indices."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from streamer.errors import AudioFormatError

TARGET_RATE_HZ = 16_000

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioChunk:
    """16 kHz mono float32 samples starting at absolute sample index ``start_index``."""

    start_index: int
    samples: F32

    @property
    def stop_index(self) -> int:
        return self.start_index + int(self.samples.shape[0])


class AudioIngest:
    """Converts ``av.AudioFrame``s (any format, layout, rate, size) to 16 kHz mono float32.

    Channels are averaged (not mixed by libswresample, which adds 3 dB to a mono voice that
    a WebRTC decoder hands over as two identical channels: the features' levels must not
    depend on the transport). Rate conversion is done by ``av.AudioResampler`` (libswresample),
    which carries the fractional
    sample position between calls, so the output count never drifts: N input samples at rate R
    yield exactly ``N * 16000 / R`` samples once :meth:`flush` is called. The absolute index of
    each chunk is the count of samples emitted before it. When the input format changes
    mid-stream (a new microphone, a new file), the old resampler is flushed first so nothing
    is lost. Synchronous; one owner.
    """

    def __init__(self, sample_rate_hz: int = TARGET_RATE_HZ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple[str, str, int] | None = None
        self._emitted = 0

    @property
    def samples_emitted(self) -> int:
        """Absolute index one past the last sample returned."""
        return self._emitted

    def _new_resampler(self, layout: str) -> av.AudioResampler:
        return av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate_hz)

    def push(self, frame: av.AudioFrame) -> AudioChunk:
        """Convert one frame; the chunk may be shorter or longer than the frame's duration
        (the resampler's filter delay), and may be empty."""
        key = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        parts: list[F32] = []
        if self._resampler is not None and key != self._input_key:
            parts.extend(self._drain(None))
            self._resampler = None
        if self._resampler is None:
            self._resampler = self._new_resampler(key[1])
            self._input_key = key
        # The resampler derives output pts from input pts; counters are our clock, not pts.
        frame.pts = None
        try:
            parts.extend(self._drain(frame))
        except (ValueError, av.FFmpegError) as exc:
            raise AudioFormatError(f"cannot convert audio frame ({key}): {exc}") from exc
        return self._emit(parts)

    def flush(self) -> AudioChunk:
        """Return the samples still held inside the resampler (end of stream)."""
        parts = self._drain(None) if self._resampler is not None else []
        self._resampler = None
        self._input_key = None
        return self._emit(parts)

    def _drain(self, frame: av.AudioFrame | None) -> list[F32]:
        assert self._resampler is not None
        # Planar output: [channels, samples]; the average keeps a duplicated mono voice's level.
        return [
            out.to_ndarray().mean(axis=0, dtype=np.float32)
            for out in self._resampler.resample(frame)
        ]

    def _emit(self, parts: list[F32]) -> AudioChunk:
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        chunk = AudioChunk(self._emitted, samples)
        self._emitted += int(samples.shape[0])
        return chunk


def pcm_to_frame(pcm: npt.ArrayLike, sample_rate_hz: int) -> av.AudioFrame:
    """Wrap mono or interleaved PCM as an ``av.AudioFrame``.

    ``pcm`` is int16 or float32, shaped ``[n]`` (mono) or ``[n, channels]``.
    """
    data = np.asarray(pcm)
    if data.dtype == np.int16:
        fmt = "s16"
    elif data.dtype == np.float32:
        fmt = "flt"
    else:
        raise AudioFormatError(f"PCM must be int16 or float32, got {data.dtype}")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] not in (1, 2):
        raise AudioFormatError(f"PCM must be [n] or [n, 1|2], got shape {data.shape}")
    layout = "mono" if data.shape[1] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data).reshape(1, -1), format=fmt, layout=layout
    )
    frame.sample_rate = sample_rate_hz
    return frame
