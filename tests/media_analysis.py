"""Measurements on received media: mouth activity, audio envelopes, lags between series."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]


def mouth_activity(frames: list[np.ndarray], rest: np.ndarray, box: np.ndarray) -> F:
    """Per received frame: mean absolute difference from the closest rest frame in ``box``.

    ``rest`` is the avatar's frames [N,H,W,3]; ``box`` is x0,y0,x1,y1 around the mouth.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    idle = rest[:, y0:y1, x0:x1].astype(np.float32)
    out = []
    for frame in frames:
        patch = frame[y0:y1, x0:x1].astype(np.float32)[None]
        out.append(float(np.abs(patch - idle).mean(axis=(1, 2, 3)).min()))
    return np.asarray(out)


def block_rms(pcm: np.ndarray, block: int) -> F:
    n = len(pcm) // block
    blocks = pcm[: n * block].astype(np.float64).reshape(n, block)
    return np.sqrt((blocks**2).mean(axis=1))


def best_lag_s(
    a_times: F, a: F, b_times: F, b: F, max_lag_s: float, step_s: float = 0.01
) -> tuple[float, float]:
    """Lag (s) by which series ``a`` trails series ``b`` (positive: a later), and the correlation.

    Both are resampled onto one grid over their common span; the lag maximising the Pearson
    correlation is returned.
    """
    grid = np.arange(max(a_times[0], b_times[0]), min(a_times[-1], b_times[-1]), step_s)
    x = np.interp(grid, a_times, a)
    y = np.interp(grid, b_times, b)
    x = (x - x.mean()) / (x.std() + 1e-12)
    y = (y - y.mean()) / (y.std() + 1e-12)
    max_lag = round(max_lag_s / step_s)
    best = (0.0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = float(np.mean(x[lag:] * y[: len(y) - lag]))
        else:
            c = float(np.mean(x[:lag] * y[-lag:]))
        if c > best[1]:
            best = (lag * step_s, c)
    return best
