"""MuseTalk rows of ``bench model``: each graph and a whole frame, ONNX Runtime (and PyTorch
eager with ``--torch``), per batch size.

Models: ``musetalk-random-tiny`` and ``musetalk-random-full`` (the real architectures with
random weights, exported on the spot: speed does not depend on the weights; needs the export
extra), or a MuseTalk model folder. A frame is one audio encoder run over 2 s of audio, the UNet
and the VAE decoder; the VAE encoder runs at avatar preparation only and is timed apart.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamer.bench.engine import Row, time_per_frame
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.manifest import GRAPH_FILES, example_inputs
from streamer.engine.session import EngineOptions

log = logging.getLogger(__name__)

RANDOM_SIZES: dict[str, Literal["tiny", "full"]] = {
    "musetalk-random-tiny": "tiny",
    "musetalk-random-full": "full",
}
DEFAULT_BATCHES = {"musetalk-random-tiny": (1, 4, 8), "musetalk-random-full": (1,)}
DEFAULT_ITERS = {"musetalk-random-tiny": 5, "musetalk-random-full": 2}
CONTEXT_MEL_COLUMNS = 200  # the live default: 2 s of audio per encoder run


def is_musetalk(name: str) -> bool:
    from streamer.engine.musetalk.manifest import is_model_folder

    return name in RANDOM_SIZES or is_model_folder(Path(name))


def _inputs(batch: int) -> dict[str, np.ndarray]:
    """Every graph's inputs at ``batch`` (the audio encoder's over 2 s), by input name."""
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    for graph in GRAPH_FILES:
        inputs |= example_inputs(graph, batch, rng, mel_frames=CONTEXT_MEL_COLUMNS)
    return inputs


def _frame(engine: MuseTalkEngine, x: dict[str, np.ndarray]) -> object:
    engine.encode_audio(x["mel"], x["first_position"])
    return engine.generate(x["audio"], x["latents"])


def _ort_rows(
    label: str,
    folder: Path,
    threads: int,
    providers: Any,
    batches: tuple[int, ...],
    iters: int,
    fp16: bool = False,
) -> list[Row]:
    options = EngineOptions(
        providers=providers, intra_op_threads=threads, warmup_batch_sizes=(1,), fp16=fp16
    )
    engine = MuseTalkEngine(folder, options)
    precision = "fp16" if fp16 else "fp32"
    runtime = f"ORT {engine.providers[0].removesuffix('ExecutionProvider')} {precision}"
    note = ""
    if fp16:
        errors = engine.manifest.fp16_error
        note = "fp16 mean error: " + ", ".join(f"{g} {e:.1e}" for g, e in errors.items())
    rows = []
    for batch in batches:
        x = _inputs(batch)
        runs: dict[str, Callable[[], object]] = {
            "audio encoder 2 s": partial(engine.encode_audio, x["mel"], x["first_position"]),
            "unet": partial(engine.unet, x["audio"], x["latents"]),
            "vae decoder": partial(engine.decode, x["pred_latents"]),
            "frame": partial(_frame, engine, x),
        }
        if not fp16:  # preparation runs the float32 VAE encoder either way
            runs["vae encoder (preparation)"] = partial(engine.encode_crops, x["crops_bgr"])
        for part, run in runs.items():
            samples = time_per_frame(run, batch, iters)
            rows.append(Row(f"{label} {part}", runtime, batch, threads, samples, note))
            log.info("%s %s: %.1f ms/frame", rows[-1].model, rows[-1].label, samples.mean())
    return rows


def _torch_rows(
    label: str, models: Any, threads: int, batches: tuple[int, ...], iters: int
) -> list[Row]:
    import torch

    from streamer.engine.musetalk import export

    torch.set_num_threads(threads)
    graphs = {
        "audio encoder 2 s": (export.AudioEncoderGraph(models.whisper), ("mel", "first_position")),
        "unet": (export.UNetGraph(models.unet), ("latents", "audio")),
        "vae decoder": (export.VaeDecoderGraph(models.vae), ("pred_latents",)),
        "vae encoder (preparation)": (export.VaeEncoderGraph(models.vae), ("crops_bgr",)),
    }
    rows = []
    for batch in batches:
        x = {k: torch.from_numpy(v) for k, v in _inputs(batch).items()}
        for part, (module, names) in graphs.items():

            def run(
                module: Any = module, args: tuple[Any, ...] = tuple(x[n] for n in names)
            ) -> object:
                with torch.inference_mode():
                    return module(*args)

            samples = time_per_frame(run, batch, iters)
            rows.append(Row(f"{label} {part}", "PyTorch eager fp32", batch, threads, samples))
            log.info("%s %s: %.1f ms/frame", rows[-1].model, rows[-1].label, samples.mean())
    return rows


def rows(
    name: str, args: argparse.Namespace, batches: tuple[int, ...] | None, iters: int | None
) -> list[Row]:
    """The rows for MuseTalk model ``name`` (a random size or a folder)."""
    batches = batches or DEFAULT_BATCHES.get(name, (1, 4))
    iters = iters or DEFAULT_ITERS.get(name, 3)
    out: list[Row] = []
    size = RANDOM_SIZES.get(name)
    precisions = (False, True) if args.fp16 else (False,)
    if size is None:
        for threads in args.threads:
            for fp16 in precisions:
                out += _ort_rows(
                    Path(name).name, Path(name), threads, args.providers, batches, iters, fp16
                )
        return out
    from streamer.engine.musetalk import export

    models = export.random_models(size)
    with tempfile.TemporaryDirectory() as tmp:
        export.write_model_folder(models, Path(tmp), name)
        for threads in args.threads:
            if args.torch:
                out += _torch_rows(name, models, threads, batches, iters)
            for fp16 in precisions:
                out += _ort_rows(name, Path(tmp), threads, args.providers, batches, iters, fp16)
    return out
