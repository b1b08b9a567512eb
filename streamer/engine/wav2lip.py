"""The Wav2Lip generator in PyTorch, its ONNX export and the parity check (optional: torch).

The architecture is written here from the paper's layer list (Prajwal et al., "A Lip Sync
Expert Is All You Need", ACM MM 2020) with the module names of the official code, so official
checkpoints (``{"state_dict": {"module.face_encoder_blocks.0.0.conv_block.0.weight": ...}}``)
load with their ``module.`` prefix stripped. Needs the ``export`` extra (``torch``); importing
this module without torch raises ImportError.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from streamer.audio.mel import N_MELS, WINDOW_COLUMNS
from streamer.engine.metadata import META_CROP, META_MEL_FRAME_OFFSET, META_NAME
from streamer.errors import ModelError

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

WAV2LIP_FACE_SIZE_PX = 96
PARITY_MAX_ABS_DIFF = 1e-4
ONNX_OPSET = 17


class Conv2d(nn.Module):
    """Conv + BatchNorm + ReLU, optionally residual (the official ``models/conv.py``)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_block(x)
        if self.residual:
            out = out + x
        result: torch.Tensor = self.act(out)
        return result


class Conv2dTranspose(nn.Module):
    """Transposed conv + BatchNorm + ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.act(self.conv_block(x))
        return result


def _res(c: int) -> Conv2d:
    return Conv2d(c, c, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    """Wav2Lip generator: ``(mel [B,1,80,16], face [B,6,96,96]) -> [B,3,96,96]`` in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(Conv2d(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48
                nn.Sequential(Conv2d(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24
                nn.Sequential(Conv2d(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12
                nn.Sequential(Conv2d(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6
                nn.Sequential(Conv2d(256, 512, 3, 2, 1), _res(512)),  # 3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1),
            _res(32),
            _res(32),
            Conv2d(32, 64, 3, (3, 1), 1),
            _res(64),
            _res(64),
            Conv2d(64, 128, 3, 3, 1),
            _res(128),
            _res(128),
            Conv2d(128, 256, 3, (3, 2), 1),
            _res(256),
            Conv2d(256, 512, 3, 1, 0),
            Conv2d(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),  # 6
                nn.Sequential(Conv2dTranspose(768, 384, 3, 2, 1, 1), _res(384), _res(384)),  # 12
                nn.Sequential(Conv2dTranspose(512, 256, 3, 2, 1, 1), _res(256), _res(256)),  # 24
                nn.Sequential(Conv2dTranspose(320, 128, 3, 2, 1, 1), _res(128), _res(128)),  # 48
                nn.Sequential(Conv2dTranspose(160, 64, 3, 2, 1, 1), _res(64), _res(64)),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.audio_encoder(mel)  # [B,512,1,1]
        feats = []
        f = face
        for block in self.face_encoder_blocks:
            f = block(f)
            feats.append(f)
        for block in self.face_decoder_blocks:
            x = block(x)
            x = torch.cat((x, feats.pop()), dim=1)
        out: torch.Tensor = self.output_block(x)
        return out


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys without the ``module.`` that ``nn.DataParallel`` training added."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_checkpoint(path: Path) -> Wav2Lip:
    """A Wav2Lip generator in eval mode with the weights of an official-format checkpoint."""
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors of unreadable files
        raise ModelError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {str(path)!r} holds no state_dict")
    model = Wav2Lip()
    try:
        model.load_state_dict(strip_module_prefix(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"checkpoint {str(path)!r} is not a Wav2Lip generator: {first}") from exc
    return model.eval()


def export_onnx(model: Wav2Lip, name: str = "wav2lip") -> onnx.ModelProto:
    """Export with a dynamic batch, inputs ``mel``/``face``, output ``output``, and metadata."""
    model = model.eval()
    mel = torch.zeros(1, 1, N_MELS, WINDOW_COLUMNS)
    face = torch.zeros(1, 6, WAV2LIP_FACE_SIZE_PX, WAV2LIP_FACE_SIZE_PX)
    buffer = io.BytesIO()
    # The legacy TorchScript exporter warns that it is deprecated; the torch.export-based one
    # would need onnxscript, which the export extra does not pull in.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (mel, face),
            buffer,  # type: ignore[arg-type]  # file objects work with the TorchScript exporter
            dynamo=False,  # the TorchScript exporter needs no onnxscript
            input_names=["mel", "face"],
            output_names=["output"],
            dynamic_axes={"mel": {0: "batch"}, "face": {0: "batch"}, "output": {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(
        proto, {META_NAME: name, META_CROP: "wav2lip", META_MEL_FRAME_OFFSET: "2"}
    )
    return proto


def parity_max_abs_diff(
    model: Wav2Lip, proto: onnx.ModelProto, batch: int = 2, seed: int = 0
) -> float:
    """Largest |PyTorch - onnxruntime| output difference on seeded random inputs."""
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 4, (batch, 1, N_MELS, WINDOW_COLUMNS)).astype(np.float32)
    face = rng.uniform(0, 1, (batch, 6, WAV2LIP_FACE_SIZE_PX, WAV2LIP_FACE_SIZE_PX))
    face = face.astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(mel), torch.from_numpy(face)).numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.asarray(session.run(["output"], {"mel": mel, "face": face})[0])
    return float(np.max(np.abs(expected - got)))


def check_parity(
    model: Wav2Lip, proto: onnx.ModelProto, max_abs_diff: float = PARITY_MAX_ABS_DIFF
) -> float:
    """:func:`parity_max_abs_diff`, raising :class:`ModelError` above ``max_abs_diff``."""
    diff = parity_max_abs_diff(model, proto)
    if not diff < max_abs_diff:
        raise ModelError(
            f"ONNX export differs from PyTorch by {diff:.2e} "
            f"(limit {max_abs_diff:.0e}); nothing written"
        )
    return diff


def random_wav2lip(seed: int = 0, calibration_batch: int = 2) -> Wav2Lip:
    """Wav2Lip with seeded random weights whose BatchNorm statistics are calibrated on random
    inputs, so activations stay alive through the network (for tests and benchmarks: a dead
    network would make any export look faithful)."""
    torch.manual_seed(seed)
    model = Wav2Lip()
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    gen = torch.Generator().manual_seed(seed)
    mel = torch.rand(calibration_batch, 1, N_MELS, WINDOW_COLUMNS, generator=gen) * 8 - 4
    face = torch.rand(
        calibration_batch, 6, WAV2LIP_FACE_SIZE_PX, WAV2LIP_FACE_SIZE_PX, generator=gen
    )
    model.train()
    with torch.no_grad():
        model(mel, face)
    for bn in batch_norms:
        bn.momentum = 0.1
        bn.weight.data.copy_(0.55 + 0.2 * torch.rand(bn.num_features, generator=gen))
    return model.eval()


def export_checkpoint(checkpoint: Path, output: Path) -> float:
    """Checkpoint -> verified ONNX file at ``output``; returns the parity difference."""
    model = load_checkpoint(checkpoint)
    proto = export_onnx(model, name=output.stem)
    diff = check_parity(model, proto)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(output))
    log.info("wrote %s (parity max abs diff %.2e)", output, diff)
    return diff
