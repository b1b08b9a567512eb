"""The built-in lip-sync model: a designed (not trained) ONNX graph with Wav2Lip's I/O contract.

Inputs ``mel`` float32 ``[B,1,80,16]`` (Wav2Lip features in [-4, 4]) and ``face`` float32
``[B,6,S,S]`` (masked copy + reference, BGR in [0, 1]); output float32 ``[B,3,S,S]`` BGR in
[0, 1]. Only the reference half of ``face`` is used. The crop is a MOUTH crop
(:data:`streamer.crop.CropConvention.MOUTH`).

How it works, per batch item:

1. Audio: the 16 mel columns are weighted towards the frame's own 40 ms (columns 12-15, see
   :data:`COLUMN_WEIGHTS`), turned into power per mel bin, and summed in three bands. The
   loudness of the voice band (100-1500 Hz) above a gate (:data:`GATE_LEVEL`, set above white
   noise at -40 dBFS) gives the opening ``a`` in [0, 1]; the balance of the 1.5-3.5 kHz band
   (second formant of "ee") against 200-900 Hz ("oo", "oh") gives the shape ``s`` in [-1, 1]
   (round ... wide).
2. Geometry: a smooth displacement field moves the lower lip and jaw down and the upper lip a
   little up (a lens-shaped profile pinned at the mouth corners, blending into a broad jaw
   profile towards the chin, fading to zero before the crop's borders), and pulls the corners
   out (wide) or in (round). ``GridSample`` applies it to the reference crop. The field's
   vertical slope stays below 1, so the warp never folds or tears.
3. Interior: the gap between the moved lips is darkened with a soft lens-shaped mask.

With ``a = 0`` (silence, noise below the gate) the sampling grid is the identity and the mask
is zero: the output equals the reference crop, so idle and speech frames switch without a pop.

The generator is pure ``onnx.helper`` construction: no randomness, no torch, byte-identical
output for identical parameters (see :func:`build_builtin_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamer.audio.mel import FMAX_HZ, N_MELS, WINDOW_COLUMNS, mel_basis
from streamer.crop import MOUTH_CENTER_X, MOUTH_CENTER_Y, MOUTH_WIDTH, CropConvention
from streamer.engine.metadata import BUILTIN_MODEL_NAME
from streamer.resources import builtin_model_path

F32 = npt.NDArray[np.float32]

BUILTIN_FACE_SIZE_PX = 128
BUILTIN_VERSION = "3"
OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime the project supports (>= 1.20)

# One mel unit is 12.5 dB of magnitude; power = exp(POWER_PER_UNIT * value).
POWER_PER_UNIT = float(np.log(10.0) * 12.5 / 10.0)
# The model reads only the frame's own time, so its window can end there: with a mel frame
# offset of 4 the window of frame i spans 160 ms before to 40 ms after the frame's time, and
# is complete about 50 ms after it (Wav2Lip's training alignment, offset 2, reaches 120 ms
# ahead and completes after about 130 ms). The pipeline waits only for what a model declares,
# so this is 80 ms of mouth-to-ear latency saved.
MEL_FRAME_OFFSET = 4
# Weights of the 16 columns: column c is centred 12.5 * c - 40 * MEL_FRAME_OFFSET ms from the
# frame's start, so columns 12-15 span -10..+28 ms, weighted to about +14 ms: the middle of the
# 40 ms of audio that leaves with the frame, so lips and sound match (measured offline on the
# soak clip: the mouth trails its audio by ~10 ms; centred on the frame's start it trailed by
# ~30 ms and opened one frame later after quiet onsets). Keeping the weight off the earlier
# columns is what returns the mouth to rest within 2 frames of silence.
COLUMN_WEIGHTS = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.3, 0.7, 1.0, 1.0)
VOICE_BAND_HZ = (100.0, 1500.0)
LOW_BAND_HZ = (200.0, 900.0)
HIGH_BAND_HZ = (1500.0, 3500.0)
# Loudness of the voice band (mel units; -4 is silence). White noise at -40 dBFS reads about
# -1.6, speech at -20 dBFS (active level) about -0.5 median and +0.6 at its peaks.
GATE_LEVEL = -1.3
FULL_OPEN_LEVEL = 0.7
# Shape: (high band - low band) in mel units mapped to [-1, 1] around SHAPE_CENTER.
SHAPE_CENTER = -1.0
SHAPE_SCALE = 1.2


@dataclass(frozen=True)
class BuiltinGeometry:
    """Movement at full opening, in normalised crop units (the crop side is 2.0)."""

    lower_lip_drop: float = 0.22
    upper_lip_raise: float = 0.04
    corner_spread: float = 0.30  # horizontal pull at the corners per unit of shape
    shape_height_gain: float = 0.30  # wide mouths open less, round ones more
    shape_width_gain: float = 0.22
    jaw_sigma_x: float = 0.55  # horizontal extent of the jaw movement
    lip_to_jaw: float = 0.35  # distance below the mouth over which lips blend into jaw
    chin_fade_start: float = 0.50  # y where the jaw movement starts fading (to 0 at 0.95)
    nose_fade: float = 0.45  # distance above the mouth over which the upper lip fades
    min_softness: float = 0.015
    darkness: float = 0.92
    interior_fraction: float = 0.80  # part of the gap that is dark interior
    interior_edge: float = 0.02
    interior_softening: float = 0.25
    interior_bgr: tuple[float, float, float] = (0.05, 0.05, 0.11)
    # The lips part slightly below the corners' midpoint (the lip line sags between the corners).
    lip_line_offset: float = 0.06


def _band_weights(lo_hz: float, hi_hz: float) -> F32:
    basis = mel_basis()
    freqs_hz = np.linspace(0.0, 8000.0, basis.shape[1])
    centres_hz = (basis * freqs_hz).sum(axis=1) / basis.sum(axis=1)
    w = ((centres_hz >= lo_hz) & (centres_hz <= min(hi_hz, FMAX_HZ))).astype(np.float64)
    out: F32 = (w / w.sum()).astype(np.float32)
    return out


class _GraphBuilder:
    """Deterministically named nodes and constants."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: npt.ArrayLike, hint: str = "c") -> str:
        name = self._name(hint)
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float32)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        out = self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def scale(self, a: str, k: float) -> str:
        return self.mul(a, self.const(np.float32(k)))

    def offset(self, a: str, k: float) -> str:
        return self.add(a, self.const(np.float32(k)))

    def clip01(self, a: str) -> str:
        return self.op("Clip", a, self.const(np.float32(0.0)), self.const(np.float32(1.0)))

    def relu(self, a: str) -> str:
        return self.op("Relu", a)


def _smoothstep(t: F32) -> F32:
    t = np.clip(t, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def build_builtin_model(
    face_size_px: int = BUILTIN_FACE_SIZE_PX, geometry: BuiltinGeometry = BuiltinGeometry()
) -> onnx.ModelProto:
    """The built-in model as an ``onnx.ModelProto`` (deterministic: same arguments, same bytes)."""
    s_px = face_size_px
    g = geometry
    b = _GraphBuilder()

    # --- audio -> opening a [B,1,1] and shape s [B,1,1] ---
    col_w = np.asarray(COLUMN_WEIGHTS, dtype=np.float32)
    col_w = (col_w / col_w.sum()).reshape(WINDOW_COLUMNS, 1)
    per_bin = b.op("MatMul", "mel", b.const(col_w, "column_weights"))  # [B,1,80,1]
    per_bin = b.op("Reshape", per_bin, b.const(np.array([-1, N_MELS], dtype=np.int64)))
    power = b.op("Exp", b.scale(per_bin, POWER_PER_UNIT))  # [B,80]
    bands = np.stack(
        [_band_weights(*VOICE_BAND_HZ), _band_weights(*LOW_BAND_HZ), _band_weights(*HIGH_BAND_HZ)],
        axis=1,
    )
    band_power = b.op("MatMul", power, b.const(bands, "band_weights"))  # [B,3]
    level = b.scale(b.op("Log", band_power), 1.0 / POWER_PER_UNIT)  # [B,3] mel units
    level = b.op("Reshape", level, b.const(np.array([-1, 3, 1, 1], dtype=np.int64)))
    voice, low, high = (
        b.op(
            "Slice",
            level,
            b.const(np.array([i], dtype=np.int64)),
            b.const(np.array([i + 1], dtype=np.int64)),
            b.const(np.array([1], dtype=np.int64)),
        )
        for i in range(3)
    )  # each [B,1,1,1]
    a = b.clip01(
        b.scale(b.offset(voice, -GATE_LEVEL), 1.0 / (FULL_OPEN_LEVEL - GATE_LEVEL))
    )  # opening, 0 = rest
    s = b.op(
        "Clip",
        b.scale(b.offset(b.sub(high, low), -SHAPE_CENTER), 1.0 / SHAPE_SCALE),
        b.const(np.float32(-1.0)),
        b.const(np.float32(1.0)),
    )
    a = b.op("Squeeze", a, b.const(np.array([1], dtype=np.int64)))  # [B,1,1]
    s = b.op("Squeeze", s, b.const(np.array([1], dtype=np.int64)))
    sa = b.mul(s, a)  # shape, weighted by opening

    # Per-item amounts [B,1,1]: wide mouths open less, round ones more.
    height = b.sub(b.const(np.float32(1.0)), b.scale(sa, g.shape_height_gain))
    drop = b.mul(b.scale(a, g.lower_lip_drop), height)  # lower lip, normalised units
    raise_ = b.mul(b.scale(a, g.upper_lip_raise), height)
    width = b.offset(b.scale(sa, g.shape_width_gain), 1.0)  # relative mouth width

    # --- constant coordinate grids (pixel centres, align_corners=0) ---
    coords = ((2.0 * np.arange(s_px) + 1.0) / s_px - 1.0).astype(np.float32)
    cx = 2.0 * MOUTH_CENTER_X - 1.0
    cy = 2.0 * MOUTH_CENTER_Y - 1.0 + g.lip_line_offset
    half_w = MOUTH_WIDTH  # half the mouth width, normalised (side = 2)
    xr = (coords - cx).reshape(1, 1, s_px)  # [1,1,S] relative to the mouth centre
    yr = (coords - cy).reshape(1, s_px, 1)  # [1,S,1]

    lip_to_jaw = _smoothstep(yr / g.lip_to_jaw)  # 0 at the lip line, 1 at the jaw
    chin_fade = 1.0 - _smoothstep((coords.reshape(1, s_px, 1) - g.chin_fade_start) / 0.45)
    nose_fade = _smoothstep((yr + g.nose_fade) / (g.nose_fade - 0.1))
    jaw_x = np.exp(-((xr / g.jaw_sigma_x) ** 2)).astype(np.float32)
    corner_y = np.exp(-((yr / 0.2) ** 2)).astype(np.float32)
    corner_x = (xr * np.exp(-((xr / (1.5 * half_w)) ** 2))).astype(np.float32)

    # Lens profile pinned at the (moved) corners: (1 - u^2)^1.5, u = x / (half_w * width).
    u = b.op("Div", b.const(xr, "x_rel"), b.scale(width, half_w))  # [B,1,S]
    q = b.relu(b.sub(b.const(np.float32(1.0)), b.mul(u, u)))
    lens = b.mul(q, b.op("Sqrt", q))  # [B,1,S]

    # Lower lip + jaw: lens near the lips blending into the broad jaw profile, fading at the chin.
    low_profile = b.add(
        b.mul(lens, b.const((1.0 - lip_to_jaw).astype(np.float32), "lip_weight")),
        b.const((jaw_x * lip_to_jaw).astype(np.float32), "jaw_profile"),
    )  # [B,S,S]
    low_profile = b.mul(low_profile, b.const(chin_fade.astype(np.float32), "chin_fade"))
    up_profile = b.mul(lens, b.const(nose_fade.astype(np.float32), "nose_fade"))  # [B,S,S]

    # Logistic switch between the two across the lip line; its softness keeps slope < 0.8.
    softness = b.offset(b.scale(b.add(drop, raise_), 0.32), g.min_softness)  # [B,1,1]
    below = b.op("Sigmoid", b.op("Div", b.const(yr, "y_rel"), softness))  # [B,S,1]
    above = b.sub(b.const(np.float32(1.0)), below)
    dy = b.sub(
        b.mul(b.mul(low_profile, drop), below),
        b.mul(b.mul(up_profile, raise_), above),
    )  # [B,S,S] content displacement, + = down
    dx = b.mul(
        b.const((corner_x * corner_y).astype(np.float32), "corner_field"),
        b.scale(sa, g.corner_spread),
    )  # [B,S,S] + = outwards on the right

    x_full = np.broadcast_to(coords.reshape(1, 1, s_px), (1, s_px, s_px)).astype(np.float32)
    y_full = np.broadcast_to(coords.reshape(1, s_px, 1), (1, s_px, s_px)).astype(np.float32)
    gx = b.sub(b.const(x_full, "grid_x"), dx)
    gy = b.sub(b.const(y_full, "grid_y"), dy)
    axis3 = b.const(np.array([3], dtype=np.int64))
    grid = b.op("Concat", b.op("Unsqueeze", gx, axis3), b.op("Unsqueeze", gy, axis3), axis=3)

    reference = b.op(
        "Slice",
        "face",
        b.const(np.array([3], dtype=np.int64)),
        b.const(np.array([6], dtype=np.int64)),
        b.const(np.array([1], dtype=np.int64)),
    )  # [B,3,S,S]
    warped = b.op(
        "GridSample", reference, grid, mode="bilinear", padding_mode="border", align_corners=0
    )

    # Interior: between the inner edges of the moved lips, soft-edged, 0 when a = 0.
    # The dark lens tapers faster than the lips towards the corners (q^2.5), and its edge
    # softens as it grows, so it reads as depth rather than a painted band.
    lens_mask = b.mul(lens, q)
    top = b.mul(b.scale(raise_, -g.interior_fraction), lens_mask)  # [B,1,S] from the lip line
    bottom = b.mul(b.scale(drop, g.interior_fraction), lens_mask)
    y_rel = b.const(yr, "y_rel_mask")
    inside = b.op("Min", b.sub(y_rel, top), b.sub(bottom, y_rel))  # [B,S,S]
    edge = b.offset(b.scale(b.add(drop, raise_), g.interior_softening), g.interior_edge)
    mask = b.clip01(b.op("Div", inside, edge))
    mask = b.op("Unsqueeze", b.scale(mask, g.darkness), b.const(np.array([1], dtype=np.int64)))
    keep = b.sub(b.const(np.float32(1.0)), mask)  # [B,1,S,S]
    interior = b.const(np.asarray(g.interior_bgr, dtype=np.float32).reshape(1, 3, 1, 1), "bgr")
    out = b.add(b.mul(warped, keep), b.mul(mask, interior))
    b.nodes.append(
        helper.make_node("Clip", [out, b.const(np.float32(0)), b.const(np.float32(1))], ["output"])
    )

    graph = helper.make_graph(
        b.nodes,
        "avatar_streamer_builtin",
        [
            helper.make_tensor_value_info(
                "mel", TensorProto.FLOAT, ["batch", 1, N_MELS, WINDOW_COLUMNS]
            ),
            helper.make_tensor_value_info("face", TensorProto.FLOAT, ["batch", 6, s_px, s_px]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, s_px, s_px])],
        initializer=b.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="avatar-streamer",
        producer_version=BUILTIN_VERSION,
        doc_string="Built-in designed lip-sync model (mouth warp driven by mel energy).",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "avatar_streamer.name": BUILTIN_MODEL_NAME,
            "avatar_streamer.crop": CropConvention.MOUTH.value,
            "avatar_streamer.mel_frame_offset": str(MEL_FRAME_OFFSET),
            "avatar_streamer.version": BUILTIN_VERSION,
        },
    )
    onnx.checker.check_model(model)
    return model


def builtin_model_bytes() -> bytes:
    """Serialised default built-in model, as written to ``models/builtin.onnx``."""
    data: bytes = build_builtin_model().SerializeToString()
    return data


def default_builtin_path() -> Path:
    """The shipped built-in model: the repository's ``models/builtin.onnx`` in a development
    clone, the package's copy when installed (see :mod:`streamer.resources`)."""
    return builtin_model_path()


def write_builtin_model(path: Path) -> Path:
    """Write the built-in model to ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(builtin_model_bytes())
    return path
