"""A fixed-capacity ring of audio samples addressed by absolute sample index."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.errors import AudioGoneError


class SampleRing:
    """Holds the newest ``capacity_samples`` float32 samples of one mono stream.

    Samples are addressed by their absolute index since the stream began (index 0 is the first
    sample ever written). When full, writing overwrites the oldest samples; reading audio that
    has been overwritten raises :class:`AudioGoneError`, and reading audio that has not arrived
    yet raises :class:`ValueError`. Not thread-safe: one owner writes and reads.
    """

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples <= 0:
            raise ValueError(f"capacity_samples must be positive, got {capacity_samples}")
        self._buf = np.zeros(capacity_samples, dtype=np.float32)
        self._end = 0  # absolute index one past the newest sample

    @property
    def capacity_samples(self) -> int:
        return int(self._buf.shape[0])

    @property
    def end_index(self) -> int:
        """Absolute index one past the newest sample written."""
        return self._end

    @property
    def start_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._end - self.capacity_samples)

    def write(self, samples: npt.ArrayLike) -> int:
        """Append 1-D samples; returns the absolute index of the first one written."""
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        total = data.shape[0]
        first = self._end
        cap = self.capacity_samples
        if total > cap:
            # Only the newest `cap` samples can survive; skip straight to them.
            data = data[-cap:]
        n = data.shape[0]
        pos = (first + total - n) % cap
        head = min(n, cap - pos)
        self._buf[pos : pos + head] = data[:head]
        self._buf[: n - head] = data[head:]
        self._end = first + total
        return first

    def read(self, start_index: int, stop_index: int) -> npt.NDArray[np.float32]:
        """Copy of samples ``[start_index, stop_index)`` as float32.

        Raises :class:`AudioGoneError` when part of the range was overwritten and
        :class:`ValueError` when part of it has not been written yet.
        """
        if stop_index < start_index:
            raise ValueError(f"empty range [{start_index}, {stop_index})")
        if start_index < self.start_index:
            raise AudioGoneError(
                f"audio from sample {start_index} is gone: the ring holds samples "
                f"{self.start_index} to {self._end} ({self.capacity_samples} samples)"
            )
        if stop_index > self._end:
            raise ValueError(f"audio up to sample {stop_index} has not arrived (have {self._end})")
        cap = self.capacity_samples
        pos = start_index % cap
        n = stop_index - start_index
        head = min(n, cap - pos)
        return np.concatenate((self._buf[pos : pos + head], self._buf[: n - head]))
