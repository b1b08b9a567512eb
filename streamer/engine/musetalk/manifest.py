"""A MuseTalk model folder and its ``manifest.json`` (pure; no torch).

A folder written by ``scripts/export_musetalk.py`` holds four ONNX graphs, each with its
weights inline or in one ``<graph>.onnx.data`` file beside it:

======================  =====================================  =================================
graph                   input                                  output
======================  =====================================  =================================
``audio_encoder.onnx``  mel f32 ``[B, 80, 2T]``,               states f32 ``[B, T, 5, 384]``
                        first_position i64 ``[B]``
``unet.onnx``           latents f32 ``[B, 8, 32, 32]``,        pred_latents f32 ``[B, 4, 32, 32]``
                        audio f32 ``[B, 50, 384]``
``vae_decoder.onnx``    pred_latents f32 ``[B, 4, 32, 32]``    faces_bgr u8 ``[B, 256, 256, 3]``
``vae_encoder.onnx``    crops_bgr u8 ``[B, 256, 256, 3]``      latents f32 ``[B, 8, 32, 32]``
======================  =====================================  =================================

``first_position`` is the encoder position (50 per second of the session's audio, mod 1500)
of the mel's first column pair: positions restart every 30 s, as in MuseTalk's offline
segments. And ``manifest.json``, written last: the family, the conventions below (so a reader
can check it speaks the same ones), the precision, where the weights came from and each
graph's measured parity with PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.engine.musetalk.features import (
    D_MODEL,
    FPS,
    POSITIONS_PER_S,
    WINDOW_LEFT_POSITIONS,
    WINDOW_RIGHT_POSITIONS,
)
from streamer.errors import ModelError

FAMILY = "musetalk"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GRAPH_FILES = {
    "audio_encoder": "audio_encoder.onnx",
    "unet": "unet.onnx",
    "vae_decoder": "vae_decoder.onnx",
    "vae_encoder": "vae_encoder.onnx",
}
# Float16 variants of the live graphs (written when they pass their accuracy check).
FP16_GRAPH_FILES = {
    "audio_encoder": "audio_encoder.fp16.onnx",
    "unet": "unet.fp16.onnx",
    "vae_decoder": "vae_decoder.fp16.onnx",
}
FACE_SIZE_PX = 256
LATENT_SIZE = FACE_SIZE_PX // 8  # 32
LATENT_CHANNELS = 4
LATENT_SCALE = 0.18215  # diffusers' default scaling_factor; sd-vae-ft-mse's config has none
MASKED_ROWS_FROM = FACE_SIZE_PX // 2  # the UNet's masked input blanks the lower half
EXTRA_MARGIN_PX = 10  # v1.5 extends the face box this far below the chin

CONVENTIONS: dict[str, Any] = {
    "fps": FPS,
    "audio": "whisper-tiny log-mel, 16 kHz, 100 columns/s; encoder 50 positions/s, 5 states",
    "audio_positions_per_s": POSITIONS_PER_S,
    "frame_window_positions": [-WINDOW_LEFT_POSITIONS, WINDOW_RIGHT_POSITIONS],
    "face_size_px": FACE_SIZE_PX,
    "latent_scale": LATENT_SCALE,
    "vae_latents": "mean",
    "masked_rows_from": MASKED_ROWS_FROM,
    "extra_margin_px": EXTRA_MARGIN_PX,
    "unet_timestep": 0,
    "positional_encoding": "inside unet.onnx",
    "audio_encoder_positions": "first_position + k, mod 1500",
}


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says. ``parity`` maps a check to its measured error."""

    name: str
    precision: str
    source: dict[str, Any]
    parity: dict[str, float]
    exported_with: dict[str, str]
    conventions: dict[str, Any] = field(default_factory=lambda: dict(CONVENTIONS))
    # graph -> file of its float16 variant, and graph -> the variant's measured mean error
    fp16_graphs: dict[str, str] = field(default_factory=dict)
    fp16_error: dict[str, float] = field(default_factory=dict)
    family: str = FAMILY
    format_version: int = FORMAT_VERSION


def write_manifest(folder: Path, manifest: Manifest) -> None:
    doc = {
        "family": manifest.family,
        "format_version": manifest.format_version,
        "name": manifest.name,
        "precision": manifest.precision,
        "graphs": GRAPH_FILES,
        "conventions": manifest.conventions,
        "source": manifest.source,
        "parity": manifest.parity,
        "fp16": {"graphs": manifest.fp16_graphs, "mean_error": manifest.fp16_error},
        "exported_with": manifest.exported_with,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` looks like a MuseTalk model folder (a directory with a manifest)."""
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def read_manifest(folder: Path) -> Manifest:
    """Read and check ``folder``'s manifest and graph files.

    Raises :class:`ModelError` with one sentence when the folder is not a MuseTalk model this
    code can run: no or unreadable manifest, another family or format, other conventions, or
    a missing graph.
    """
    path = folder / MANIFEST_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} has no {MANIFEST_FILE}: export it first") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("family") != FAMILY:
        raise ModelError(f"{path} is not a {FAMILY} manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path} has format {doc.get('format_version')!r}; this version reads "
            f"{FORMAT_VERSION}: export the model again"
        )
    conventions = doc.get("conventions")
    if conventions != CONVENTIONS:
        raise ModelError(f"{path} declares other conventions than this version's: {conventions}")
    for graph, file_name in GRAPH_FILES.items():
        if not (folder / file_name).is_file():
            raise ModelError(f"{folder} lacks its {graph} graph ({file_name})")
    fp16 = dict(doc.get("fp16", {}))
    fp16_graphs = {
        str(graph): str(name)
        for graph, name in dict(fp16.get("graphs", {})).items()
        if graph in FP16_GRAPH_FILES and (folder / str(name)).is_file()
    }
    return Manifest(
        name=str(doc.get("name", folder.name)),
        precision=str(doc.get("precision", "fp32")),
        source=dict(doc.get("source", {})),
        parity={str(k): float(v) for k, v in dict(doc.get("parity", {})).items()},
        exported_with={str(k): str(v) for k, v in dict(doc.get("exported_with", {})).items()},
        conventions=conventions,
        fp16_graphs=fp16_graphs,
        fp16_error={str(k): float(v) for k, v in dict(fp16.get("mean_error", {})).items()},
    )


def example_inputs(
    name: str, batch: int, rng: np.random.Generator, mel_frames: int = 200
) -> dict[str, np.ndarray]:
    """Inputs of graph ``name`` at ``batch`` with values in their real ranges (the export's
    parity checks, the float16 checks and the benchmarks run on them); ``mel_frames`` is the
    audio encoder's input length (200: 2 s)."""
    side = LATENT_SIZE
    if name == "audio_encoder":
        return {
            "mel": rng.uniform(-1.0, 1.5, (batch, 80, mel_frames)).astype(np.float32),
            # Some windows wrap past position 1499 (a 30 s boundary of the session).
            "first_position": rng.integers(1300, 1500, batch).astype(np.int64),
        }
    if name == "unet":
        return {
            "latents": rng.standard_normal((batch, 2 * LATENT_CHANNELS, side, side), np.float32),
            "audio": rng.standard_normal((batch, 50, D_MODEL), np.float32),
        }
    if name == "vae_decoder":
        return {
            "pred_latents": rng.standard_normal((batch, LATENT_CHANNELS, side, side), np.float32)
        }
    return {"crops_bgr": rng.integers(0, 256, (batch, FACE_SIZE_PX, FACE_SIZE_PX, 3), np.uint8)}
