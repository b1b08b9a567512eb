"""Filling audio that never came, without clicks: pure numpy.

A lost packet, or a tick whose audio is late, must not become a hard cut: the gap is filled
with the audio just before it played backwards (so the join is continuous: the first sample
repeats the last one heard) under a raised-cosine fade to silence, and the real audio that
follows fades in over a few milliseconds. Crude beside NetEq's pitch-period expansion, but
it never lasts longer than the fade and costs nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def fade_out_continuation(previous: F32, n_samples: int, fade_samples: int) -> F32:
    """``n_samples`` of concealment after ``previous`` (mono float32).

    ``previous`` mirrored (repeated back and forth if the gap is longer), faded from 1 to 0
    over the first ``fade_samples`` with a raised cosine; silence after the fade.
    """
    out = np.zeros(n_samples, np.float32)
    m = min(n_samples, fade_samples)
    if m <= 0 or previous.shape[0] == 0:
        return out
    period = previous.shape[0]
    k = np.arange(m)
    # Ping-pong over `previous`: last, second to last, ..., first, first, second, ...
    cycle = k % (2 * period)
    idx = np.where(cycle < period, period - 1 - cycle, cycle - period)
    fade = 0.5 * (1.0 + np.cos(np.pi * (k + 1) / (m + 1)))
    out[:m] = previous[idx] * fade
    return out


def fade_in(samples: F32, fade_samples: int) -> F32:
    """A copy of ``samples`` rising from silence over its first ``fade_samples`` (raised cosine)."""
    out = np.array(samples, np.float32, copy=True)
    m = min(out.shape[0], fade_samples)
    if m > 0:
        k = np.arange(m)
        out[:m] *= 0.5 * (1.0 - np.cos(np.pi * (k + 1) / (m + 1)))
    return out
