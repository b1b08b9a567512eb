"""scripts/export_wav2lip.py end to end on random weights (needs torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")

from streamer.crop import CropConvention  # noqa: E402
from streamer.engine import EngineOptions, LipSyncEngine  # noqa: E402
from streamer.engine.wav2lip import (  # noqa: E402
    Wav2Lip,
    check_parity,
    export_onnx,
    random_wav2lip,
)
from streamer.errors import ModelError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_model() -> Wav2Lip:
    return random_wav2lip(seed=7)


@pytest.fixture(scope="module")
def exported(random_model: Wav2Lip) -> onnx.ModelProto:
    return export_onnx(random_model)


def test_export_script_end_to_end(random_model: Wav2Lip, tmp_path: Path) -> None:
    # An official-format checkpoint: keys prefixed by DataParallel's "module.".
    state = {f"module.{k}": v for k, v in random_model.state_dict().items()}
    checkpoint = tmp_path / "wav2lip_random.pth"
    torch.save({"state_dict": state, "global_step": 1, "global_epoch": 1}, checkpoint)
    output = tmp_path / "wav2lip.onnx"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "export_wav2lip.py"),
            str(checkpoint),
            "-o",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "parity" in done.stdout

    engine = LipSyncEngine(
        output, EngineOptions(providers=("CPUExecutionProvider",), warmup_batch_sizes=(1,))
    )
    assert engine.info.face_size_px == 96
    assert engine.info.crop is CropConvention.WAV2LIP
    assert engine.info.mel_frame_offset == 2
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 4, (1, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (1, 6, 96, 96)).astype(np.float32)
    with torch.no_grad():
        expected = random_model(torch.from_numpy(mel), torch.from_numpy(face)).numpy()
    np.testing.assert_allclose(engine.infer(mel, face), expected, atol=1e-4)


def test_export_has_dynamic_batch(exported: onnx.ModelProto) -> None:
    for value in (*exported.graph.input, *exported.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_parity_check_passes_on_a_faithful_export(
    random_model: Wav2Lip, exported: onnx.ModelProto
) -> None:
    assert check_parity(random_model, exported) < 1e-4


def test_parity_check_catches_a_wrong_layer(
    random_model: Wav2Lip, exported: onnx.ModelProto
) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(exported)
    # Scale one mid-network convolution (face encoder, 12x12) by 5%, as a wrong layer would.
    target = next(t for t in broken.graph.initializer if len(t.dims) == 4 and t.dims[0] == 128)
    weights = numpy_helper.to_array(target) * np.float32(1.05)
    target.CopyFrom(numpy_helper.from_array(weights, target.name))
    with pytest.raises(ModelError, match="differs from PyTorch"):
        check_parity(random_model, broken)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    from streamer.engine.wav2lip import load_checkpoint

    checkpoint = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.conv.weight": torch.zeros(3, 3, 1, 1)}}, checkpoint)
    with pytest.raises(ModelError, match="not a Wav2Lip generator"):
        load_checkpoint(checkpoint)
