"""Synthetic test signals with known structure (no files, no randomness without a seed)."""

from __future__ import annotations

import numpy as np


def speechlike(seconds: float, sample_rate_hz: int = 16_000, seed: int = 0) -> np.ndarray:
    """Voiced, syllable-modulated tones with formant-like partials, pauses and breath noise.

    float32 mono in [-1, 1]: pitch 100-220 Hz, 3-5 syllables per second, silent gaps.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    pitch_hz = 150 + 60 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch_hz) / sample_rate_hz
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.25 * t) > -0.6).astype(np.float64)
    noise = 0.01 * rng.standard_normal(n)
    x = 0.3 * voiced * syllables * pauses + noise
    return np.clip(x, -1, 1).astype(np.float32)


def vowel(
    seconds: float, sample_rate_hz: int = 24_000, on_s: float | None = None, off_s: float = 0.0
) -> np.ndarray:
    """A sustained voiced vowel (140 Hz and harmonics): it holds the mouth open.

    With ``on_s``/``off_s`` it is gated on and off, so the mouth opens and closes.
    """
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    x = 0.3 * sum(np.sin(2 * np.pi * k * 140 * t) / k for k in range(1, 20))
    if on_s is not None:
        x = x * ((t % (on_s + off_s)) < on_s)
    return np.asarray(x, np.float32)


def pcm16(clip: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> little-endian s16, clipped."""
    return (np.clip(clip, -1, 1) * 32767).astype("<i2")
