"""MuseTalk's per-frame audio windows and positional encoding (pure numpy).

The audio encoder (whisper-tiny's) gives 50 positions per second, each a stack of its 5 hidden
states ``[5, 384]``. Video frame ``i`` (25 fps, ``t = i / 25`` s) reads positions
``[2i - 4, 2i + 6)`` (t - 80 ms to t + 120 ms), zeros outside the clip, reshaped time-major to
``[50, 384]`` (token ``5 k + state``): MuseTalk's ``AudioProcessor.get_whisper_chunk`` with
``audio_padding_length_left = right = 2``. The UNet then adds a fixed sinusoidal encoding
(:func:`positional_encoding`); our exported UNet graph holds it as a constant.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.audio.whisper_mel import offline_segments

F32 = npt.NDArray[np.float32]

FPS = 25
POSITIONS_PER_S = 50
POSITIONS_PER_FRAME = POSITIONS_PER_S // FPS  # 2
HIDDEN_STATES = 5  # the stem and the 4 encoder layers (the last after the final LayerNorm)
D_MODEL = 384
WINDOW_LEFT_POSITIONS = 4  # 80 ms before the frame
WINDOW_RIGHT_POSITIONS = 6  # 120 ms after it (exclusive)
WINDOW_POSITIONS = WINDOW_LEFT_POSITIONS + WINDOW_RIGHT_POSITIONS  # 10
WINDOW_TOKENS = WINDOW_POSITIONS * HIDDEN_STATES  # 50


def clip_positions(n_samples: int, sample_rate_hz: int = 16_000) -> int:
    """Encoder positions MuseTalk keeps for a clip: ``floor(seconds * 50)``."""
    return (n_samples * POSITIONS_PER_S) // sample_rate_hz


def clip_frames(n_samples: int, sample_rate_hz: int = 16_000) -> int:
    """Video frames MuseTalk renders for a clip: ``floor(seconds * 25)``."""
    return (n_samples * FPS) // sample_rate_hz


def frame_window(frame_index: int) -> tuple[int, int]:
    """The encoder positions ``[start, end)`` that video frame ``frame_index`` reads."""
    centre = POSITIONS_PER_FRAME * frame_index
    return centre - WINDOW_LEFT_POSITIONS, centre + WINDOW_RIGHT_POSITIONS


def frame_windows(states: F32, first_position: int, frame_indices: range) -> F32:
    """The UNet's audio input for ``frame_indices``: float32 ``[n, 50, 384]``.

    ``states`` is ``[P, 5, 384]``, the encoder's output for positions ``first_position`` to
    ``first_position + P``; a window position outside that span reads zeros (MuseTalk pads
    the clip with zero features, not encoded silence, on both sides).
    """
    if states.ndim != 3 or states.shape[1:] != (HIDDEN_STATES, D_MODEL):
        raise ValueError(f"states must be [P, {HIDDEN_STATES}, {D_MODEL}], got {states.shape}")
    out = np.zeros((len(frame_indices), WINDOW_POSITIONS, HIDDEN_STATES, D_MODEL), np.float32)
    last_position = first_position + states.shape[0]
    for row, frame_index in enumerate(frame_indices):
        start, end = frame_window(frame_index)
        lo, hi = max(start, first_position), min(end, last_position)
        if lo < hi:
            out[row, lo - start : hi - start] = states[lo - first_position : hi - first_position]
    return out.reshape(len(frame_indices), WINDOW_TOKENS, D_MODEL)


def positional_encoding(length: int = WINDOW_TOKENS, d_model: int = D_MODEL) -> F32:
    """MuseTalk's ``PositionalEncoding`` table ``[length, d_model]``: sin on even, cos on odd."""
    position = np.arange(length, dtype=np.float64)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(10_000.0) / d_model))
    table = np.zeros((length, d_model))
    table[:, 0::2] = np.sin(position * div_term)
    table[:, 1::2] = np.cos(position * div_term)
    return table.astype(np.float32)


class AudioEncoder(Protocol):
    """The audio encoder graph: mel float32 ``[B, 80, 2T]``, first positions int64 ``[B]`` ->
    states float32 ``[B, T, 5, 384]`` (:meth:`MuseTalkEngine.encode_audio
    <streamer.engine.musetalk.engine.MuseTalkEngine.encode_audio>` is one)."""

    def __call__(self, mel: F32, first_position: npt.NDArray[np.int64]) -> F32: ...


def offline_states(encoder: AudioEncoder, pcm_16k: F32) -> F32:
    """MuseTalk's offline encoder states of a clip: f32 ``[floor(s * 50), 5, 384]``.

    Each 30 s segment's mel through the encoder at once, concatenated and cut to the clip, as
    upstream's ``AudioProcessor`` does (7.7 kB per 20 ms: cut frames' windows from them with
    :func:`frame_windows` when needed)."""
    first = np.zeros(1, np.int64)
    states = np.concatenate([encoder(mel[None], first)[0] for mel in offline_segments(pcm_16k)])
    trimmed: F32 = states[: clip_positions(pcm_16k.shape[0])]
    return trimmed
