"""The streaming half of a centred STFT, shared by both feature extractors.

Wav2Lip's mel (:mod:`streamer.audio.mel`: n_fft 800, hop 200, on pre-emphasised audio) and
Whisper's (:mod:`streamer.audio.whisper_mel`: n_fft 400, hop 160) both read frames centred on
``hop * t`` of a continuous 16 kHz stream whose start is reflect-padded (``np.pad`` reflect,
as librosa's and transformers' ``center=True``). Live, each frame is taken once, as soon as
its samples have arrived (:class:`StreamingFrames`), and the columns computed from them are
kept for a while (:class:`ColumnRing`). Pure and synchronous; one owner each.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.errors import AudioGoneError

F64 = npt.NDArray[np.float64]
Floats = npt.NDArray[np.floating]


def samples_needed(frames: int, n_fft: int, hop: int) -> int:
    """Samples that complete a stream's first ``frames`` centred frames (the start's
    reflection reads samples ``1 .. n_fft // 2``: never fewer than ``n_fft // 2 + 1``)."""
    return max(n_fft // 2 + 1, hop * (frames - 1) + n_fft // 2)


class StreamingFrames:
    """Centred STFT frames of a continuous stream, each handed out once.

    Frame ``t`` is the ``n_fft`` samples from ``hop * t - n_fft // 2``: it is complete once
    ``hop * t + n_fft // 2`` samples have arrived, and never before ``n_fft // 2 + 1`` (the
    reflection of the stream's start reads samples ``1 .. n_fft // 2``). It equals frame ``t``
    of ``np.pad(all_samples, n_fft // 2, mode="reflect")``. Bounded: keeps only the samples of
    frames not handed out yet.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        if not 0 < hop <= n_fft // 2:
            raise ValueError(f"hop must be in 1..n_fft // 2, got {hop} for n_fft {n_fft}")
        self.n_fft = n_fft
        self.hop = hop
        self._done = 0  # frames handed out
        self._pushed = 0  # samples pushed
        self._pending: F64 = np.zeros(0)  # samples from `_pending_start` on
        self._pending_start = 0

    @property
    def frames_done(self) -> int:
        return self._done

    @property
    def samples_pushed(self) -> int:
        return self._pushed

    def samples_needed(self, frames: int) -> int:
        """Samples that complete the first ``frames`` frames."""
        return samples_needed(frames, self.n_fft, self.hop)

    def push(self, samples: npt.ArrayLike) -> F64:
        """Append the stream's next samples; returns the frames they complete, ``[n, n_fft]``
        (a read-only view, valid until the next push)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        self._pending = np.concatenate((self._pending, x))
        self._pushed += x.shape[0]
        half = self.n_fft // 2
        stop = (self._pushed - half) // self.hop + 1 if self._pushed > half else 0
        if stop <= self._done:
            return np.zeros((0, self.n_fft))
        if self.hop * self._done < half:  # a frame reads before 0: the start, reflected
            head = self._pending[1 : half + 1][::-1]  # nothing trimmed yet: _pending_start 0
            padded, first = np.concatenate((head, self._pending)), -half
        else:
            padded, first = self._pending, self._pending_start
        lo = self.hop * self._done - half - first
        hi = self.hop * (stop - 1) + half - first
        frames: F64 = np.lib.stride_tricks.sliding_window_view(padded[lo:hi], self.n_fft)[
            :: self.hop
        ]
        self._done = stop
        keep_from = self.hop * stop - half  # where the next frame starts
        if keep_from > self._pending_start:
            self._pending = self._pending[keep_from - self._pending_start :]
            self._pending_start = keep_from
        return frames


class ColumnRing:
    """The last ``capacity`` columns ``[rows, capacity]`` of a stream of feature columns."""

    def __init__(self, rows: int, capacity: int, dtype: type[np.floating], fill: float = 0.0):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._columns: Floats = np.full((rows, capacity), fill, dtype=dtype)
        self._count = 0

    @property
    def capacity(self) -> int:
        return int(self._columns.shape[1])

    @property
    def count(self) -> int:
        """Columns appended so far (the next one's index)."""
        return self._count

    @property
    def oldest(self) -> int:
        """Index of the oldest column still kept."""
        return max(0, self._count - self.capacity)

    def append(self, columns: Floats) -> None:
        """Append ``[rows, n]`` columns (more than the capacity keeps only the last)."""
        n = columns.shape[1]
        kept = columns[:, -self.capacity :] if n > self.capacity else columns
        slots = np.arange(self._count + n - kept.shape[1], self._count + n) % self.capacity
        self._columns[:, slots] = kept
        self._count += n

    def read(self, start: int, stop: int) -> Floats:
        """Columns ``[start, stop)`` (a copy). Raises ValueError for columns not appended yet,
        AudioGoneError for overwritten ones."""
        if stop > self._count or start > stop or start < 0:
            raise ValueError(f"columns [{start}, {stop}) not ready ({self._count} computed)")
        if start < self.oldest:
            raise AudioGoneError(
                f"columns {start}..{stop} are gone: holding {self.oldest}..{self._count}"
            )
        out: Floats = self._columns[:, np.arange(start, stop) % self.capacity]
        return out
