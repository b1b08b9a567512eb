"""Synthetic, speech-like test audio (no files): for benchmarks and soak runs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def speechlike_48k(seconds: float, seed: int = 0) -> npt.NDArray[np.float32]:
    """Mono float32 at 48 kHz: voiced syllables (3-4 per second) with pauses and breath noise."""
    rate_hz = 48_000
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    pitch_hz = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch_hz) / rate_hz
    voiced = sum(np.sin(k * phase) / k for k in range(1, 16))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.2 * t) > -0.5).astype(np.float64)
    x = 0.25 * voiced * syllables * pauses + 0.003 * rng.standard_normal(n)
    return np.clip(x, -1, 1).astype(np.float32)
