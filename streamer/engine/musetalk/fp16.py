"""Float16 variants of a MuseTalk folder's live graphs, each checked against its float32 graph.

Upstream runs every MuseTalk model in float16 on the GPU (half the memory, tensor cores). Each
live graph (audio encoder, UNet, VAE decoder) gets a ``<graph>.fp16.onnx`` with float32 inputs
and outputs (``keep_io_types``), kept only when its output stays close to the float32 graph's on
seeded inputs in their real ranges: mean absolute error within :data:`MAX_RELATIVE_MEAN_ERROR`
of the output's mean magnitude (float16's error is spread, not peaked: compare means), the
uint8 decoder within :data:`MAX_DECODER_MEAN_LEVELS` levels on average. Random weights cannot
show float16 overflow (the SD VAE's is documented): check a real export with real audio.
No torch needed. Synchronous.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from streamer.engine.musetalk.manifest import FP16_GRAPH_FILES, GRAPH_FILES, example_inputs

log = logging.getLogger(__name__)

MAX_RELATIVE_MEAN_ERROR = 1e-2
MAX_DECODER_MEAN_LEVELS = 1.0
# onnx's shape inference refuses protos over 2 GB (the float32 UNet).
_SHAPE_INFER_MAX_BYTES = 1_800_000_000
_OUTPUTS = {"audio_encoder": "states", "unet": "pred_latents", "vae_decoder": "faces_bgr"}


def fp16_error(graph: str, fp32_path: Path, fp16_path: Path) -> float:
    """The float16 graph's mean error against the float32 one: relative for float outputs,
    in levels for the uint8 decoder."""
    feeds = example_inputs(graph, 2, np.random.default_rng(0))
    outs = []
    for path in (fp32_path, fp16_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(np.asarray(session.run([_OUTPUTS[graph]], feeds)[0], np.float64))
    mean_error = float(np.abs(outs[0] - outs[1]).mean())
    if graph == "vae_decoder":
        return mean_error
    return mean_error / max(float(np.abs(outs[0]).mean()), 1e-12)


def resize_constants(graph: onnx.GraphProto) -> list[str]:
    """The names of the Constant nodes that feed a Resize's roi, scales or sizes."""
    feeding = {name for node in graph.node if node.op_type == "Resize" for name in node.input[1:]}
    return [
        node.name
        for node in graph.node
        if node.op_type == "Constant" and feeding.intersection(node.output)
    ]


def write_fp16_variants(
    folder: Path, graphs: Iterable[str] = tuple(FP16_GRAPH_FILES)
) -> dict[str, float]:
    """Write the float16 variant of each live graph in ``folder`` (of ``graphs``) that passes
    its check; returns each graph's measured error (a failing variant is logged and
    removed)."""
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    errors: dict[str, float] = {}
    for graph in graphs:
        fp32_path = folder / GRAPH_FILES[graph]
        fp16_path = folder / FP16_GRAPH_FILES[graph]
        model = onnx.load(str(fp32_path), load_external_data=True)
        big = sum(t.ByteSize() for t in model.graph.initializer) > _SHAPE_INFER_MAX_BYTES
        # Resize's roi and scales must stay float32 (onnxruntime #14827); without shape
        # inference (graphs past 2 GB) the converter cannot tell, so Resize stays float32
        # everywhere, and so do the Constant nodes that give it roi and scales.
        half = convert_float_to_float16(
            model,
            keep_io_types=True,
            disable_shape_infer=big,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Resize"],
            node_block_list=resize_constants(model.graph),
        )
        del model
        fp16_path.unlink(missing_ok=True)
        onnx.save_model(half, str(fp16_path))
        del half
        try:
            errors[graph] = fp16_error(graph, fp32_path, fp16_path)
        except Exception as exc:  # onnxruntime refuses the converted graph: no variant
            log.warning("%s: float16 variant does not load (%s): none written", graph, exc)
            fp16_path.unlink()
            continue
        gate = MAX_DECODER_MEAN_LEVELS if graph == "vae_decoder" else MAX_RELATIVE_MEAN_ERROR
        if errors[graph] > gate:
            log.warning(
                "%s: float16 error %.2e over %.0e: no float16 variant", graph, errors[graph], gate
            )
            fp16_path.unlink()
        else:
            log.info("%s: float16 variant, mean error %.2e", graph, errors[graph])
    return errors
