"""Where a live stream pauses: the places its playout delay may change unheard. Pure numpy.

Energy is measured per 20 ms block of the 16 kHz input, addressed by absolute sample index
like :class:`~streamer.audio.ring.SampleRing`. The background noise is the quietest block of
the last few seconds (minimum statistics: in running speech the short gaps between words
still reach the noise floor), and a block is quiet when its energy is at most
``quiet_factor`` times that floor, or below an absolute floor (digital silence). NetEq uses the
same rule (audio with energy at most 8x the background noise may always be stretched).

The lip-sync speech gate cannot serve here: it is an absolute level, so a microphone whose
room noise sits at -50 dBFS reads as speech throughout and would never allow a change.

Synchronous; one owner.
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

BLOCK_SAMPLES = 320  # 20 ms at 16 kHz


class PauseDetector:
    """Block energies of the newest ``capacity_blocks`` blocks and the noise floor under them.

    ``push`` takes the stream's samples in order (any chunk sizes); ``is_quiet(a, b)`` says
    whether every complete block overlapping samples ``[a, b)`` is quiet. Samples pushed with
    ``real=False`` (concealment of lost audio, which fades to nothing) never set the floor:
    otherwise every lost packet would make the floor zero for seconds, and nothing quiet.
    """

    def __init__(
        self,
        capacity_blocks: int = 500,
        floor_window_blocks: int = 200,
        quiet_factor: float = 8.0,
        silence_energy: float = 1e-8,  # mean square; -80 dBFS
    ) -> None:
        self._quiet_factor = quiet_factor
        self._silence_energy = silence_energy
        self._floor_window = floor_window_blocks
        self._energies: collections.deque[float] = collections.deque(maxlen=capacity_blocks)
        self._first_block = 0  # absolute index of self._energies[0]
        # (block index, energy), energies increasing from the front: a sliding minimum.
        self._floor: collections.deque[tuple[int, float]] = collections.deque()
        self._partial: F32 = np.zeros(0, np.float32)
        self._partial_real = True  # no synthetic sample in the partial block
        self._blocks = 0  # complete blocks so far

    @property
    def noise_energy(self) -> float | None:
        """Mean square of the quietest recent block; None before the first block."""
        return self._floor[0][1] if self._floor else None

    def push(self, samples: F32, real: bool = True) -> None:
        data = np.concatenate((self._partial, np.asarray(samples, np.float32).reshape(-1)))
        n_blocks = data.shape[0] // BLOCK_SAMPLES
        if n_blocks:
            blocks = data[: n_blocks * BLOCK_SAMPLES].astype(np.float64).reshape(n_blocks, -1)
            for k, energy in enumerate((blocks * blocks).mean(axis=1)):
                self._add(float(energy), real and (k > 0 or self._partial_real))
        self._partial = data[n_blocks * BLOCK_SAMPLES :].copy()
        if not real:
            self._partial_real = self._partial.shape[0] == 0
        elif n_blocks:
            self._partial_real = True  # what is left came with this push

    def _add(self, energy: float, real: bool) -> None:
        index = self._blocks
        self._blocks += 1
        if len(self._energies) == self._energies.maxlen:
            self._first_block += 1
        self._energies.append(energy)
        while self._floor and self._floor[0][0] <= index - self._floor_window:
            self._floor.popleft()
        if not real:
            return
        while self._floor and self._floor[-1][1] >= energy:
            self._floor.pop()
        self._floor.append((index, energy))

    def is_quiet(self, start_sample: int, stop_sample: int) -> bool:
        """Whether the audio in ``[start_sample, stop_sample)`` is a pause: every block it
        overlaps is quiet (the last may be still incomplete: it is left out). Audio not
        pushed yet, or no longer held, is not known to be quiet."""
        first = max(0, start_sample) // BLOCK_SAMPLES
        stop = -(-stop_sample // BLOCK_SAMPLES)
        if self._blocks < stop - 1:
            return False
        stop = min(stop, self._blocks)
        if stop <= first or first < self._first_block or self.noise_energy is None:
            return False
        limit = max(self._silence_energy, self._quiet_factor * self.noise_energy)
        offset = self._first_block
        return all(self._energies[k - offset] <= limit for k in range(first, stop))
