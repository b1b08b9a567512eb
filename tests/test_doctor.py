"""``avatar-streamer doctor``: the pure diagnosis from facts, and one real run on this machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.doctor import CPU, CUDA, TENSORRT, AudioInputs, Facts, Finding, Status, diagnose
from streamer.resources import locate

GPU_BUILD = (TENSORRT, CUDA, CPU)


@pytest.fixture
def facts(tmp_path: Path) -> Facts:
    """This repository on a CPU-only machine with the GPU package: nothing to fix."""
    return Facts(
        version="0.1.0",
        resources=locate(),
        ort_version="1.31.1",
        ort_distribution="onnxruntime-gpu 1.31.1",
        available_providers=GPU_BUILD,
        nvidia_driver=False,
        cuda_session_providers=None,
        tensorrt_library=False,
        model=None,
        model_error=None,
        avatar="default",
        avatars_dir=tmp_path / "avatars",
        avatars_origin="from --avatars-dir",
        avatar_status="not prepared",
        avatars_writable=True,
        audio=AudioInputs(names=("0 USB mic (default)",)),
        host="127.0.0.1",
        token_chars=None,
    )


def by_topic(findings: list[Finding]) -> dict[str, Finding]:
    return {f.topic: f for f in findings}


def test_every_line_that_is_not_ok_says_what_to_do(facts: Facts) -> None:
    findings = diagnose(facts)
    assert [f.topic for f in findings] == [
        "install",
        "providers",
        "gpu",
        "model",
        "avatar",
        "audio",
        "access",
    ]
    assert all(f.action for f in findings if f.status is not Status.OK)
    assert not any(f.status is Status.PROBLEM for f in findings)


def test_no_driver_means_cpu(facts: Facts) -> None:
    found = by_topic(diagnose(facts))
    assert "serve would run the model on CPU" in found["providers"].text
    assert "no NVIDIA driver" in found["gpu"].text
    assert "install the NVIDIA driver" in found["gpu"].action


def test_a_cpu_only_package_is_named(facts: Facts) -> None:
    cpu_pkg = dataclasses.replace(facts, available_providers=(CPU,), ort_distribution="onnxruntime")
    gpu = by_topic(diagnose(cpu_pkg))["gpu"]
    assert "no CUDA or TensorRT provider" in gpu.text
    assert "pip install onnxruntime-gpu" in gpu.action


def test_a_driver_without_cuda_libraries_points_at_the_extra(facts: Facts) -> None:
    fallback = dataclasses.replace(facts, nvidia_driver=True, cuda_session_providers=(CPU,))
    found = by_topic(diagnose(fallback))
    assert "fell back to CPU" in found["cuda"].text
    assert "avatar-streamer[cuda]" in found["cuda"].action
    assert "on CPU" in found["providers"].text


def test_cuda_without_tensorrt_is_only_a_note(facts: Facts) -> None:
    cuda = dataclasses.replace(facts, nvidia_driver=True, cuda_session_providers=(CUDA, CPU))
    found = by_topic(diagnose(cuda))
    assert found["cuda"].status is Status.OK
    assert found["tensorrt"].status is Status.NOTE
    assert "serve would run the model on CUDA" in found["providers"].text
    trt = dataclasses.replace(cuda, tensorrt_library=True)
    found = by_topic(diagnose(trt))
    assert found["tensorrt"].status is Status.OK
    assert "on TensorRT" in found["providers"].text


@pytest.mark.parametrize(
    ("host", "token_chars", "status", "words"),
    [
        ("127.0.0.1", None, Status.OK, "no token needed"),
        ("0.0.0.0", None, Status.PROBLEM, "serve refuses to start"),
        ("0.0.0.0", 8, Status.PROBLEM, "8 characters"),
        ("0.0.0.0", 43, Status.OK, "control needs the token"),
    ],
)
def test_access(
    facts: Facts, host: str, token_chars: int | None, status: Status, words: str
) -> None:
    access = by_topic(diagnose(dataclasses.replace(facts, host=host, token_chars=token_chars)))
    assert access["access"].status is status
    assert words in access["access"].text


def test_avatar_states(facts: Facts) -> None:
    assert by_topic(diagnose(facts))["avatar"].status is Status.NOTE  # prepared on first use
    read_only = dataclasses.replace(facts, avatars_writable=False)
    avatar = by_topic(diagnose(read_only))["avatar"]
    assert avatar.status is Status.PROBLEM
    assert "AVATAR_STREAMER_AVATARS_DIR" in avatar.action
    named = dataclasses.replace(facts, avatar="anna")
    avatar = by_topic(diagnose(named))["avatar"]
    assert avatar.status is Status.PROBLEM
    assert avatar.action == "avatar-streamer prepare PHOTO_OR_VIDEO --name anna"
    ready = dataclasses.replace(facts, avatar_status="ok")
    assert by_topic(diagnose(ready))["avatar"].status is Status.OK


def test_missing_model_and_broken_install(facts: Facts, tmp_path: Path) -> None:
    bad = dataclasses.replace(
        facts, model=tmp_path / "m.onnx", model_error="'m.onnx' is not an ONNX model"
    )
    assert by_topic(diagnose(bad))["model"].status is Status.PROBLEM
    broken = dataclasses.replace(
        facts, resources=locate(tmp_path / "site-packages" / "streamer", tmp_path / "user")
    )
    install = by_topic(diagnose(broken))["install"]
    assert install.status is Status.PROBLEM
    assert "pip install --force-reinstall" in install.action


def test_audio(facts: Facts) -> None:
    none = dataclasses.replace(facts, audio=AudioInputs())
    assert "found none" in by_topic(diagnose(none))["audio"].text
    broken = dataclasses.replace(facts, audio=AudioInputs(error="PortAudio is not available"))
    audio = by_topic(diagnose(broken))["audio"]
    assert audio.status is Status.NOTE
    assert "only `live` needs a microphone" in audio.action


def test_doctor_on_this_machine_fits_a_screen_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVATAR_STREAMER_TOKEN", raising=False)
    avatars = tmp_path / "avatars"
    assert main(["doctor", "--avatars-dir", str(avatars)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 24
    for topic in ("install", "providers", "model", "avatar", "audio", "access"):
        assert any(line.split()[1:2] == [topic] for line in lines if line.strip()), topic
    assert "development clone" in out
    assert not avatars.exists()
    monkeypatch.setenv("AVATAR_STREAMER_TOKEN", "short")
    assert main(["doctor", "--host", "0.0.0.0", "--avatars-dir", str(avatars)]) == 1
