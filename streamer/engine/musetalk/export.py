"""MuseTalk v1.5's four graphs, from PyTorch to ONNX, each checked against PyTorch.

The real classes are built from their configs: diffusers' ``UNet2DConditionModel``
(``musetalk.json``) and ``AutoencoderKL`` (sd-vae-ft-mse), and transformers' whisper-tiny
encoder. :func:`load_checkpoint` fills them with a user's MuseTalk download;
:func:`random_models` with random weights, at the real size ("full") or with narrow channels
("tiny", for tests: every other config field, and so every ONNX op type, is kept).
:func:`write_model_folder` exports the graphs (see :mod:`streamer.engine.musetalk.manifest`
for their inputs and outputs), runs each on ONNX Runtime's CPU provider against PyTorch in
float64, adds float16 variants (:mod:`streamer.engine.musetalk.fp16`) and writes
``manifest.json`` last, so a folder with a manifest is a checked one.

Needs the ``export`` extra (torch, diffusers, transformers): importing this module without them
raises ImportError. Synchronous and slow (the tiny folder takes about 30 s on 2 CPU cores).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import diffusers
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import WhisperConfig, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from streamer.engine.musetalk.features import (
    D_MODEL,
    HIDDEN_STATES,
    frame_windows,
    positional_encoding,
)
from streamer.engine.musetalk.fp16 import write_fp16_variants
from streamer.engine.musetalk.manifest import (
    FACE_SIZE_PX,
    FP16_GRAPH_FILES,
    GRAPH_FILES,
    LATENT_CHANNELS,
    LATENT_SCALE,
    MASKED_ROWS_FROM,
    Manifest,
    example_inputs,
    write_manifest,
)
from streamer.errors import ModelError

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
Size = Literal["tiny", "full"]

ONNX_OPSET = 17
# Relative error (max |ONNX - exact| / max |exact|) each float graph may always reach.
PARITY_MAX_RELATIVE_ERROR = 1e-4
# The protobuf limit is 2 GiB; bigger graphs keep their weights in one file beside them.
INLINE_WEIGHTS_MAX_BYTES = 1_800_000_000

# models/musetalkV15/musetalk.json, as shipped with the v1.5 weights.
UNET_CONFIG_FULL: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": D_MODEL,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 2 * LATENT_CHANNELS,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": LATENT_CHANNELS,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}
# stabilityai/sd-vae-ft-mse config.json.
VAE_CONFIG_FULL: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": LATENT_CHANNELS,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": FACE_SIZE_PX,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# openai/whisper-tiny: MuseTalk uses its encoder only.
WHISPER_TINY_CONFIG: dict[str, Any] = {
    "d_model": D_MODEL,
    "encoder_layers": HIDDEN_STATES - 1,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "vocab_size": 51865,
}
# Narrow channels for tests; group norm needs multiples of 32.
TINY_CHANNELS = {"unet": [32, 64, 64, 64], "vae": [32, 32, 64, 64]}


@dataclass
class MuseTalkTorch:
    """The three PyTorch models in eval mode, and where their weights came from."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    whisper: WhisperEncoder
    source: dict[str, Any]


def random_models(size: Size = "tiny", seed: int = 0) -> MuseTalkTorch:
    """The real architectures with random weights (``seed``), at the real size or tiny."""
    torch.manual_seed(seed)
    unet_config = dict(UNET_CONFIG_FULL)
    vae_config = dict(VAE_CONFIG_FULL)
    if size == "tiny":
        unet_config["block_out_channels"] = TINY_CHANNELS["unet"]
        vae_config["block_out_channels"] = TINY_CHANNELS["vae"]
    whisper = WhisperEncoder(WhisperConfig(**WHISPER_TINY_CONFIG))
    models = MuseTalkTorch(
        unet=UNet2DConditionModel(**unet_config),
        vae=AutoencoderKL(**vae_config),
        whisper=whisper,
        source={"kind": "random", "size": size, "seed": seed},
    )
    _eval(models)
    return models


def load_checkpoint(models_dir: Path) -> MuseTalkTorch:
    """A MuseTalk v1.5 download laid out as upstream's ``download_weights.sh`` leaves it.

    ``models_dir`` holds ``musetalkV15/{musetalk.json,unet.pth}``, ``sd-vae/`` (diffusers
    format) and ``whisper/`` (transformers format). Raises :class:`ModelError` naming the first
    missing or unreadable part.
    """
    unet_dir, vae_dir, whisper_dir = (
        models_dir / "musetalkV15",
        models_dir / "sd-vae",
        models_dir / "whisper",
    )
    for path in (unet_dir / "musetalk.json", unet_dir / "unet.pth", vae_dir, whisper_dir):
        if not path.exists():
            raise ModelError(f"{models_dir} is not a MuseTalk v1.5 download: {path} is missing")
    try:
        unet_config = json.loads((unet_dir / "musetalk.json").read_text())
        unet = UNet2DConditionModel.from_config(unet_config)
        state = torch.load(unet_dir / "unet.pth", map_location="cpu", weights_only=True)
        unet.load_state_dict(state)
        vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
        whisper = WhisperModel.from_pretrained(whisper_dir, local_files_only=True).encoder
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot load the MuseTalk checkpoint in {models_dir}: {exc}") from exc
    models = MuseTalkTorch(
        unet=unet, vae=vae, whisper=whisper, source={"kind": "checkpoint", "path": str(models_dir)}
    )
    _eval(models)
    return models


def save_checkpoint(models: MuseTalkTorch, models_dir: Path) -> None:
    """Write ``models`` in upstream's download layout (tests build a "download" with it)."""
    (models_dir / "musetalkV15").mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(models.unet.config).items() if not k.startswith("_")}
    (models_dir / "musetalkV15" / "musetalk.json").write_text(json.dumps(config, indent=2))
    torch.save(models.unet.state_dict(), models_dir / "musetalkV15" / "unet.pth")
    models.vae.save_pretrained(models_dir / "sd-vae")
    whisper = WhisperModel(models.whisper.config)
    whisper.encoder.load_state_dict(models.whisper.state_dict())
    whisper.save_pretrained(models_dir / "whisper")


def _eval(models: MuseTalkTorch) -> None:
    for module in (models.unet, models.vae, models.whisper):
        module.eval()
        module.requires_grad_(False)


# --- The graphs -------------------------------------------------------------------------


class AudioEncoderGraph(nn.Module):
    """mel float32 ``[B, 80, 2T]`` and first_position int64 ``[B]`` -> states float32
    ``[B, T, 5, 384]``, any T up to 1500.

    Whisper's encoder without its 30 s requirement: the positional embedding of position
    ``first_position + k`` (mod 1500) is added at step ``k``, so a live window of audio gets
    the very embeddings the offline 30 s segments give the same audio (positions restart every
    30 s of the session). All five hidden states stacked (the stem with positions, layers 1-3,
    the final LayerNorm of layer 4), as MuseTalk stacks ``output_hidden_states``.
    """

    def __init__(self, encoder: WhisperEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, mel: torch.Tensor, first_position: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        table = enc.embed_positions.weight
        steps = torch.arange(x.shape[1], device=x.device)
        positions = (first_position[:, None] + steps[None, :]) % table.shape[0]
        x = x + table[positions]
        states = [x]
        for layer in enc.layers:
            x = layer(x, None)
            if isinstance(x, tuple):  # transformers < 5 returns (hidden_states, ...)
                x = x[0]
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return torch.stack(states, dim=2)


class UNetGraph(nn.Module):
    """latents float32 ``[B, 8, 32, 32]`` (masked ‖ reference) and audio windows float32
    ``[B, 50, 384]`` -> predicted latents float32 ``[B, 4, 32, 32]``.

    The positional encoding and timestep 0 are constants inside the graph.
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet
        self.pe: torch.Tensor
        self.timestep: torch.Tensor
        self.register_buffer("pe", torch.from_numpy(positional_encoding())[None])
        self.register_buffer("timestep", torch.zeros(1, dtype=torch.int64))

    def forward(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.unet(
            latents, self.timestep, encoder_hidden_states=audio + self.pe
        ).sample
        return out


class VaeDecoderGraph(nn.Module):
    """predicted latents float32 ``[B, 4, 32, 32]`` -> faces uint8 BGR ``[B, 256, 256, 3]``.

    MuseTalk's ``decode_latents``: ÷0.18215, decode, ``clamp(x/2 + 0.5, 0, 1)``, ×255, round,
    RGB -> BGR: ready to resize and paste.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode(latents / LATENT_SCALE).sample
        image = (image / 2 + 0.5).clamp(0, 1)
        image = torch.round(image * 255.0).to(torch.uint8)
        return image.permute(0, 2, 3, 1).flip(-1)


class VaeEncoderGraph(nn.Module):
    """face crops uint8 BGR ``[B, 256, 256, 3]`` -> UNet latents float32 ``[B, 8, 32, 32]``.

    MuseTalk's ``get_latents_for_unet`` with the distribution's mean instead of a sample:
    the crop with rows 128 and below blanked (-1), then the whole crop, each encoded and
    scaled by 0.18215, concatenated on channels (masked first).
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        rgb = crops_bgr.flip(-1).permute(0, 3, 1, 2).to(self.vae.dtype) / 255.0
        rows = torch.arange(FACE_SIZE_PX, device=rgb.device)[None, None, :, None]
        masked = torch.where(rows >= MASKED_ROWS_FROM, torch.zeros_like(rgb), rgb)
        both = torch.cat([masked, rgb], dim=0) * 2.0 - 1.0
        mean = self.vae.encode(both).latent_dist.mean * LATENT_SCALE
        masked_latents, reference_latents = torch.chunk(mean, 2, dim=0)
        return torch.cat([masked_latents, reference_latents], dim=1)


@dataclass(frozen=True)
class GraphSpec:
    """How one graph is exported and checked: names, dynamic axes, example inputs."""

    name: str
    input_names: tuple[str, ...]
    output_name: str
    dynamic_axes: Mapping[str, Mapping[int, str]]


SPECS = {
    "audio_encoder": GraphSpec(
        "audio_encoder",
        ("mel", "first_position"),
        "states",
        {
            "mel": {0: "batch", 2: "mel_frames"},
            "first_position": {0: "batch"},
            "states": {0: "batch", 1: "positions"},
        },
    ),
    "unet": GraphSpec(
        "unet",
        ("latents", "audio"),
        "pred_latents",
        {"latents": {0: "batch"}, "audio": {0: "batch"}, "pred_latents": {0: "batch"}},
    ),
    "vae_decoder": GraphSpec(
        "vae_decoder",
        ("pred_latents",),
        "faces_bgr",
        {"pred_latents": {0: "batch"}, "faces_bgr": {0: "batch"}},
    ),
    "vae_encoder": GraphSpec(
        "vae_encoder",
        ("crops_bgr",),
        "latents",
        {"crops_bgr": {0: "batch"}, "latents": {0: "batch"}},
    ),
}


def _graph_modules(models: MuseTalkTorch) -> dict[str, nn.Module]:
    return {
        "audio_encoder": AudioEncoderGraph(models.whisper),
        "unet": UNetGraph(models.unet),
        "vae_decoder": VaeDecoderGraph(models.vae),
        "vae_encoder": VaeEncoderGraph(models.vae),
    }


def _torch_run(module: nn.Module, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    dtype = next(module.parameters()).dtype
    tensors = [
        torch.from_numpy(v).to(dtype) if v.dtype == np.float32 else torch.from_numpy(v)
        for v in inputs.values()
    ]
    with torch.no_grad():
        out = module(*tensors)
    result: np.ndarray = out.numpy()
    return result


def _export_one(module: nn.Module, spec: GraphSpec, out_path: Path) -> None:
    """Export ``module`` to ``out_path``: weights inline, or in one ``.data`` file beside it."""
    example = example_inputs(spec.name, 1, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes
        raw = Path(tmp) / f"{spec.name}.onnx"
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(v) for v in example.values()),
            str(raw),
            input_names=list(spec.input_names),
            output_names=[spec.output_name],
            dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        graph = onnx.load(str(raw), load_external_data=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out_path, out_path.with_name(out_path.name + ".data")):
        stale.unlink(missing_ok=True)
    if weights_bytes(graph) > INLINE_WEIGHTS_MAX_BYTES:
        onnx.save_model(
            graph,
            str(out_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=out_path.name + ".data",
        )
    else:
        onnx.save_model(graph, str(out_path))


def weights_bytes(model: onnx.ModelProto) -> int:
    """The size of ``model``'s initializers (each counted alone: protobuf cannot size a whole
    message past 2 GB)."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max |ours - reference| / max |reference|``."""
    scale = float(np.abs(reference.astype(np.float64)).max()) or 1.0
    diff = np.abs(ours.astype(np.float64) - reference.astype(np.float64)).max()
    return float(diff) / scale


@dataclass(frozen=True)
class Parity:
    """One graph's error against PyTorch in float64 (the exact answer), and PyTorch's own.

    For float graphs: relative error (:func:`relative_error`) of ONNX Runtime's output and of
    PyTorch float32's. For the uint8 decoder: the largest difference in levels.
    """

    onnx: float
    torch_float32: float


def check_graph(module: nn.Module, spec: GraphSpec, path: Path, batch: int) -> Parity:
    """Run ``path`` on ONNX Runtime's CPU provider against ``module`` at ``batch``.

    The reference is the module in float64: some graphs are ill-conditioned in float32 (the
    VAE encoder's half-blanked input: PyTorch's own float32 output is ~5e-4 off), so ONNX
    must be within :data:`PARITY_MAX_RELATIVE_ERROR` of the exact answer or no further from it
    than PyTorch float32 is. The uint8 decoder may be one level off (rounding at .5). The
    audio encoder is checked at another length than it was traced at (3 s, not 2 s). Raises
    :class:`ModelError` past the gate.
    """
    inputs = example_inputs(spec.name, batch, np.random.default_rng(batch), mel_frames=300)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run([spec.output_name], inputs)[0]
    float32 = _torch_run(module, inputs)
    exact = _torch_run(copy.deepcopy(module).double(), inputs)
    if ours.shape != exact.shape:
        raise ModelError(f"{spec.name}: ONNX gives {ours.shape}, PyTorch {exact.shape}")
    if exact.dtype == np.uint8:
        parity = Parity(_levels_apart(ours, exact), _levels_apart(float32, exact))
        if parity.onnx > 1:
            raise ModelError(f"{spec.name}: ONNX is {parity.onnx:.0f} levels off (gate 1)")
        return parity
    parity = Parity(relative_error(ours, exact), relative_error(float32, exact))
    if not parity.onnx <= max(PARITY_MAX_RELATIVE_ERROR, parity.torch_float32):
        raise ModelError(
            f"{spec.name}: ONNX is {parity.onnx:.2e} (relative) from PyTorch float64, "
            f"PyTorch float32 {parity.torch_float32:.2e} (gate {PARITY_MAX_RELATIVE_ERROR:.0e})"
        )
    return parity


def _levels_apart(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.int16) - reference.astype(np.int16)).max())


def check_against_transformers(models: MuseTalkTorch, path: Path) -> float:
    """The sliced audio encoder at 30 s against transformers' own stacked hidden states."""
    mel = np.random.default_rng(3).uniform(-1.0, 1.5, (1, 80, 3000)).astype(np.float32)
    with torch.no_grad():
        states = models.whisper(torch.from_numpy(mel), output_hidden_states=True).hidden_states
        reference = torch.stack(states, dim=2).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = np.zeros(1, np.int64)
    error = relative_error(
        session.run(["states"], {"mel": mel, "first_position": first})[0], reference
    )
    if not error <= PARITY_MAX_RELATIVE_ERROR:
        raise ModelError(f"audio_encoder: differs from transformers by {error:.2e} at 30 s")
    return error


END_TO_END_MAX_LEVELS = 2  # the face, audio to pixels, against PyTorch float32


def check_end_to_end(models: MuseTalkTorch, out_dir: Path) -> int:
    """Audio to face through the folder's live graphs (audio encoder, windows, UNet on an
    avatar frame's latents, VAE decoder) against PyTorch float32: the largest difference in
    levels over every frame of 2 s of audio, at most :data:`END_TO_END_MAX_LEVELS`.

    The VAE encoder is checked on its own (it runs once, at avatar preparation). Raises
    :class:`ModelError` past the gate."""
    rng = np.random.default_rng(5)
    mel = example_inputs("audio_encoder", 1, rng)["mel"]
    first = np.zeros(1, np.int64)
    frames = range(0, mel.shape[2] // 4, 5)  # 2 s: 50 frames, every 5th
    latents = rng.standard_normal((len(frames), 2 * LATENT_CHANNELS, 32, 32), np.float32)

    def graph(name: str) -> ort.InferenceSession:
        path = out_dir / GRAPH_FILES[name]
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    states = graph("audio_encoder").run(None, {"mel": mel, "first_position": first})[0][0]
    audio = frame_windows(states, 0, frames)
    pred = graph("unet").run(None, {"latents": latents, "audio": audio})[0]
    faces = graph("vae_decoder").run(None, {"pred_latents": pred})[0]
    graphs = _graph_modules(models)
    with torch.no_grad():
        t_states = graphs["audio_encoder"](torch.from_numpy(mel), torch.from_numpy(first))
        t_audio = torch.from_numpy(frame_windows(t_states[0].numpy(), 0, frames))
        t_pred = graphs["unet"](torch.from_numpy(latents), t_audio)
        t_faces = graphs["vae_decoder"](t_pred).numpy()
    levels = int(_levels_apart(faces, t_faces))
    if levels > END_TO_END_MAX_LEVELS:
        raise ModelError(
            f"end to end (audio to face): ONNX is {levels} levels from PyTorch "
            f"(gate {END_TO_END_MAX_LEVELS})"
        )
    return levels


def write_model_folder(models: MuseTalkTorch, out_dir: Path, name: str) -> Manifest:
    """Export, check and describe all four graphs in ``out_dir``, with the float16 variants
    of the live graphs that pass their check; returns the manifest.

    Raises :class:`ModelError` when a graph fails its parity check (the manifest is then not
    written, so the folder does not load).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    parity: dict[str, float] = {}
    for graph_name, module in _graph_modules(models).items():
        spec = SPECS[graph_name]
        path = out_dir / GRAPH_FILES[graph_name]
        log.info("exporting %s", graph_name)
        _export_one(module, spec, path)
        # Batch 2 proves the batch axis is really dynamic (the export traced batch 1).
        checked = check_graph(module, spec, path, batch=2)
        parity[graph_name] = checked.onnx
        parity[f"{graph_name}_torch_float32"] = checked.torch_float32
        log.info(
            "%s: ONNX %.2e, PyTorch float32 %.2e from PyTorch float64",
            graph_name,
            checked.onnx,
            checked.torch_float32,
        )
    parity["audio_encoder_30s_vs_transformers"] = check_against_transformers(
        models, out_dir / GRAPH_FILES["audio_encoder"]
    )
    parity["end_to_end_levels"] = check_end_to_end(models, out_dir)
    log.info("end to end: %d levels from PyTorch float32", parity["end_to_end_levels"])
    fp16_error = write_fp16_variants(out_dir)
    manifest = Manifest(
        name=name,
        precision="fp32",
        source=models.source,
        parity=parity,
        fp16_graphs={
            g: FP16_GRAPH_FILES[g] for g in fp16_error if (out_dir / FP16_GRAPH_FILES[g]).is_file()
        },
        fp16_error=fp16_error,
        exported_with={
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
    )
    write_manifest(out_dir, manifest)
    return manifest
