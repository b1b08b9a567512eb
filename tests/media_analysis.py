"""Measurements on received media: mouth activity, audio envelopes, lags between series."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.probe.peer import Received
from streamer.probe.speech_back import (
    SUB_SAMPLES,
    SpeechBack,
    clip_speech,
    returned_audio,
    speech_back,
    sub_block_energy,
)

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


def speech_back_of(clip_48k: np.ndarray, sent_at_s: list[float], got: Received) -> SpeechBack:
    """The soak's speech-back measure (:mod:`streamer.probe.speech_back`: each utterance found
    on its own, the returned audio placed by RTP position in stretches) of a clip sent once,
    without looping (silence after it), over everything received. A server stall or a level
    change moves the delay by a tick or two; one global lag would read what follows as lost."""
    sent_blocks = len(sent_at_s) * 960
    once = np.zeros(max(sent_blocks, clip_48k.shape[0]) + 960, np.float32)
    once[: clip_48k.shape[0]] = clip_48k  # longer than what was sent: never wraps
    once = once[: once.shape[0] // 960 * 960]
    pos: list[int] = []
    energy: list[float] = []
    for pts, pcm in zip(got.audio_pts, got.audio_pcm, strict=True):
        e = sub_block_energy(pcm)
        pos.extend(range(pts, pts + e.shape[0] * SUB_SAMPLES, SUB_SAMPLES))
        energy.extend(e.tolist())
    returned = returned_audio(
        np.asarray(got.audio_at_s, np.float64),
        np.asarray(got.audio_pts, np.int64),
        np.asarray(pos, np.int64),
        np.asarray(energy, np.float64),
    )
    return speech_back(
        clip_speech(once),
        np.asarray(sent_at_s, np.float64),
        returned,
        sent_at_s[0],
        got.audio_at_s[-1],
    )
