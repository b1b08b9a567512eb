"""LipSyncEngine: loading, validation, provider fallback, metadata, batching."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from streamer.crop import CropConvention
from streamer.engine import EngineOptions, LipSyncEngine, face_input, resolve_providers
from streamer.engine.builtin import BUILTIN_FACE_SIZE_PX
from streamer.errors import ModelError, StreamerError

CPU_ONLY = EngineOptions(providers=("CPUExecutionProvider",), warmup_batch_sizes=(1,))


def tiny_model(
    mel_shape: list[int | str] | None = None,
    face_shape: list[int | str] | None = None,
    out_channels: int = 3,
    props: dict[str, str] | None = None,
    with_mel: bool = True,
    face_name: str = "face",
) -> onnx.ModelProto:
    """A Wav2Lip-shaped model whose output is the reference half of the face, darkened by the
    mel mean (so every item depends on its own mel and face)."""
    mel_shape = mel_shape or ["batch", 1, 80, 16]
    face_shape = face_shape or ["batch", 6, 32, 32]
    nodes = [
        helper.make_node("Slice", [face_name, "starts", "ends", "axes"], ["ref"]),
    ]
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [3]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [3 + out_channels]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    inputs = [helper.make_tensor_value_info(face_name, TensorProto.FLOAT, face_shape)]
    if with_mel:
        nodes += [
            helper.make_node("ReduceMean", ["mel"], ["m"], keepdims=1),  # [B,1,1,1]
            helper.make_node("Sigmoid", ["m"], ["g"]),
            helper.make_node("Mul", ["ref", "g"], ["output"]),
        ]
        inputs.insert(0, helper.make_tensor_value_info("mel", TensorProto.FLOAT, mel_shape))
    else:
        nodes.append(helper.make_node("Identity", ["ref"], ["output"]))
    out_shape = ["batch", out_channels, face_shape[2], face_shape[3]]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if props:
        helper.set_model_props(model, props)
    return model


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def test_cuda_requested_on_cpu_machine_falls_back_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = EngineOptions(
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider"), warmup_batch_sizes=(1,)
    )
    with caplog.at_level(logging.WARNING, logger="streamer.engine"):
        engine = LipSyncEngine(options=options)
    assert engine.info.providers[-1] == "CPUExecutionProvider"
    if engine.info.providers[0] == "CPUExecutionProvider":  # no usable GPU here
        assert any("CPUExecutionProvider" in r.getMessage() for r in caplog.records)
    out = engine.infer(
        np.full((1, 1, 80, 16), -4.0, np.float32),
        np.zeros((1, 6, BUILTIN_FACE_SIZE_PX, BUILTIN_FACE_SIZE_PX), np.float32),
    )
    assert out.shape == (1, 3, BUILTIN_FACE_SIZE_PX, BUILTIN_FACE_SIZE_PX)


def test_auto_providers_are_ordered_and_end_with_cpu() -> None:
    chosen = resolve_providers(None)
    assert chosen[-1] == "CPUExecutionProvider"
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chosen == [p for p in order if p in chosen]


def test_auto_providers_skip_gpu_without_nvidia_driver(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.engine"):
        assert resolve_providers(None, nvidia_driver=False) == ["CPUExecutionProvider"]
    with_driver = resolve_providers(None, nvidia_driver=True)
    gpu_in_build = [
        p
        for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        if p in ort.get_available_providers()
    ]
    assert with_driver == [*gpu_in_build, "CPUExecutionProvider"]
    if gpu_in_build:
        assert "no NVIDIA driver" in caplog.text


def test_explicit_providers_are_tried_even_without_nvidia_driver() -> None:
    requested = tuple(ort.get_available_providers())
    assert resolve_providers(requested, nvidia_driver=False) == list(requested)


def test_unknown_provider_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamer.engine"):
        assert resolve_providers(("NoSuchExecutionProvider",)) == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (tiny_model(mel_shape=["batch", 80, 16]), "mel"),  # wrong rank
        (tiny_model(face_shape=["batch", 3, 32, 32]), "face"),  # wrong channels
        (tiny_model(face_shape=["batch", 6, 32, 48]), "face"),  # not square
        (tiny_model(with_mel=False), "2 inputs"),  # missing input
        (tiny_model(out_channels=2), "output"),  # wrong output channels
    ],
    ids=["mel-rank", "face-channels", "face-not-square", "missing-input", "output-channels"],
)
def test_wrong_models_fail_at_load(tmp_path: Path, model: onnx.ModelProto, fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment) as err:
        LipSyncEngine(save(model, tmp_path), CPU_ONLY)
    assert err.value.code == "bad_model"
    assert isinstance(err.value, StreamerError)
    assert "\n" not in str(err.value)


def test_non_onnx_and_missing_files_fail_at_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        LipSyncEngine(junk, CPU_ONLY)
    with pytest.raises(ModelError, match="cannot read"):
        LipSyncEngine(tmp_path / "absent.onnx", CPU_ONLY)


def test_user_model_without_metadata_gets_wav2lip_conventions(tmp_path: Path) -> None:
    engine = LipSyncEngine(save(tiny_model(), tmp_path, "mine.onnx"), CPU_ONLY)
    info = engine.info
    assert (info.name, info.crop, info.mel_frame_offset) == ("mine", CropConvention.WAV2LIP, 2)
    assert (info.mel_input, info.face_input, info.output) == ("mel", "face", "output")
    assert info.face_size_px == 32
    assert info.source.endswith("mine.onnx")
    assert info.providers == ("CPUExecutionProvider",)


def test_metadata_is_honoured(tmp_path: Path) -> None:
    props = {
        "avatar_streamer.name": "lips",
        "avatar_streamer.crop": "mouth",
        "avatar_streamer.mel_frame_offset": "0",
        "avatar_streamer.face_input": "image",
    }
    engine = LipSyncEngine(save(tiny_model(props=props, face_name="image"), tmp_path), CPU_ONLY)
    assert engine.info.name == "lips"
    assert engine.info.crop is CropConvention.MOUTH
    assert engine.info.mel_frame_offset == 0
    assert engine.info.face_input == "image"


def test_bad_metadata_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="crop"):
        LipSyncEngine(save(tiny_model(props={"avatar_streamer.crop": "feet"}), tmp_path), CPU_ONLY)


def test_dynamic_batch_gives_same_per_item_outputs() -> None:
    engine = LipSyncEngine(options=CPU_ONLY)
    rng = np.random.default_rng(0)
    s = engine.info.face_size_px
    mel = rng.uniform(-4, 2, (8, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (8, 6, s, s)).astype(np.float32)
    full = engine.infer(mel, face)
    np.testing.assert_allclose(engine.infer(mel[:1], face[:1]), full[:1], atol=2e-5)
    np.testing.assert_allclose(engine.infer(mel[2:5], face[2:5]), full[2:5], atol=2e-5)


def test_infer_rejects_wrong_shapes() -> None:
    engine = LipSyncEngine(options=CPU_ONLY)
    with pytest.raises(ValueError, match="expected"):
        engine.infer(np.zeros((1, 1, 80, 16), np.float32), np.zeros((1, 6, 96, 96), np.float32))


def test_face_input_masks_lower_half_of_the_copy() -> None:
    crops = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    crops[1, :, :, 0] = 0
    x = face_input(crops)
    assert x.shape == (2, 6, 8, 8)
    assert x.dtype == np.float32
    assert (x[:, :3, 4:] == 0).all()
    assert (x[0, :3, :4] == 1).all()
    np.testing.assert_array_equal(x[:, 3:], crops.transpose(0, 3, 1, 2) / 255.0)
    assert (x[1, 0] == 0).all()


def test_face_input_equals_wav2lips_definition_to_the_bit() -> None:
    # Wav2Lip's own preparation: masked copy and reference concatenated on channels, / 255.
    crops = np.random.default_rng(3).integers(0, 256, (5, 7, 7, 3), dtype=np.uint8)
    ref = crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)
    masked = ref.copy()
    masked[:, :, 7 // 2 :] = 0.0
    np.testing.assert_array_equal(face_input(crops), np.concatenate((masked, ref), axis=1))


def test_generate_round_trips_uint8_bgr(tmp_path: Path) -> None:
    engine = LipSyncEngine(save(tiny_model(), tmp_path), CPU_ONLY)
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    loud = np.full((3, 80, 16), 30.0, np.float32)  # sigmoid(30) = 1: identity
    out = engine.generate(loud, crops)
    assert out.dtype == np.uint8
    assert out.shape == crops.shape
    assert np.abs(out.astype(int) - crops).max() <= 1


def test_fp16_conversion_is_checked(tmp_path: Path) -> None:
    options = EngineOptions(providers=("CPUExecutionProvider",), warmup_batch_sizes=(1,), fp16=True)
    engine = LipSyncEngine(save(tiny_model(), tmp_path), options)
    crops = np.full((1, 32, 32, 3), 200, dtype=np.uint8)
    out = engine.generate(np.full((1, 80, 16), 30.0, np.float32), crops)
    assert np.abs(out.astype(int) - 200).max() <= 1


def test_loading_a_model_to_serve_or_render_does_not_import_onnx() -> None:
    # The contract is read from the onnxruntime session: the onnx package (~0.7 s to import
    # here) stays out of `serve` and `render`. A fresh interpreter, as the commands start.
    code = (
        "import sys\n"
        "from streamer.engine import EngineOptions, LipSyncEngine\n"
        "import streamer.offline.render, streamer.offline.cli, streamer.server.media.runtime\n"
        "engine = LipSyncEngine(options=EngineOptions(providers=('CPUExecutionProvider',)))\n"
        "assert engine.info.name == 'builtin', engine.info\n"
        "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
