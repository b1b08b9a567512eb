"""Float16 conversion of a lip-sync model, with an accuracy check against the float32 original.

Most of the GPU speed-up of Wav2Lip-sized models comes from running them in float16 (tensor
cores, half the memory traffic). Inputs and outputs stay float32 (``keep_io_types``) so callers
never see the difference. The check runs both models on the same seeded inputs and refuses a
conversion whose output differs by more than :data:`MAX_ABS_ERROR` (output range [0, 1]).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from streamer.audio.mel import N_MELS, WINDOW_COLUMNS
from streamer.engine.metadata import GraphContract
from streamer.errors import ModelError

log = logging.getLogger(__name__)

MAX_ABS_ERROR = 2.0 / 255.0  # two grey levels of the 8-bit output


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` with float32 inputs and outputs (metadata kept)."""
    # Ships inside onnxruntime: no extra dependency.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted: onnx.ModelProto = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=False
    )
    return converted


def fp16_max_abs_error(
    fp32: onnx.ModelProto,
    fp16: onnx.ModelProto,
    contract: GraphContract,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    batch: int = 2,
    seed: int = 0,
) -> float:
    """Largest absolute output difference between the two models on seeded random inputs."""
    rng = np.random.default_rng(seed)
    s_px = contract.face_size_px
    feeds = {
        contract.mel_input: rng.uniform(-4, 2, (batch, 1, N_MELS, WINDOW_COLUMNS)).astype(
            np.float32
        ),
        contract.face_input: rng.uniform(0, 1, (batch, 6, s_px, s_px)).astype(np.float32),
    }
    outs = []
    for proto in (fp32, fp16):
        session = ort.InferenceSession(proto.SerializeToString(), providers=list(providers))
        outs.append(np.asarray(session.run([contract.output], feeds)[0], dtype=np.float32))
    return float(np.max(np.abs(outs[0] - outs[1])))


def convert_checked(
    model: onnx.ModelProto,
    contract: GraphContract,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    max_abs_error: float = MAX_ABS_ERROR,
) -> onnx.ModelProto:
    """:func:`convert_to_fp16`, refused with :class:`ModelError` if the outputs drift too far."""
    converted = convert_to_fp16(model)
    error = fp16_max_abs_error(model, converted, contract, providers)
    if error > max_abs_error:
        raise ModelError(
            f"float16 {contract.name!r} differs from float32 by {error:.4f} (limit "
            f"{max_abs_error:.4f}); run it in float32"
        )
    log.info("model %s: float16 conversion accepted, max abs error %.5f", contract.name, error)
    return converted
