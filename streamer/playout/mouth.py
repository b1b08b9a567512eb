"""The mouth's decisions, the same live and offline: which windows are speech, how the
generated mouth fades in and out, which avatar frame a frame shows.

A window (``[80, 16]`` Wav2Lip mel features, [-4, 4] scale) is speech when its loudest
column's mean feature exceeds the threshold. The mouth's strength (the blend of the generated
mouth over the avatar, [0, 1]) moves by ``1 / blend_frames`` per played frame toward 1 in
speech and toward 0 otherwise, so speech edges never pop. Output frame ``n`` shows avatar frame
``n % frame_count`` (the avatar loops). :class:`~streamer.playout.pipeline.SessionPipeline`
applies them frame by frame as audio arrives; :func:`streamer.offline.render.plan_frames` to a
whole clip at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
BOOL = npt.NDArray[np.bool_]


def is_speech_window(window: F32, threshold: float) -> bool:
    """Whether one ``[80, 16]`` window is speech."""
    return float(window.mean(axis=0).max()) > threshold


def speech_windows(windows: F32, threshold: float) -> BOOL:
    """:func:`is_speech_window` of every window of ``[N, 80, 16]`` ``windows``."""
    return np.asarray(windows.mean(axis=1).max(axis=1) > threshold)


def next_strength(strength: float, speech: bool, blend_frames: int) -> float:
    """The mouth's strength at the next played frame."""
    step = 1.0 / max(1, blend_frames)
    return min(1.0, strength + step) if speech else max(0.0, strength - step)


def strengths(speech: BOOL, blend_frames: int, start: float = 0.0) -> F32:
    """The strength at each of a run of played frames, from ``start`` before the first."""
    out = np.zeros(speech.shape[0], np.float32)
    s = start
    for i, flag in enumerate(speech):
        s = next_strength(s, bool(flag), blend_frames)
        out[i] = s
    return out


def avatar_frame(output_index: int, frame_count: int) -> int:
    """The avatar frame output frame ``output_index`` shows."""
    return output_index % frame_count
