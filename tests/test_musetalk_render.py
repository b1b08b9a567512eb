"""MuseTalk end to end on the tiny random-weight model: the engine, an avatar's latents
prepared once and loaded from its cache, and `avatar-streamer render --model FOLDER` writing
an MP4 whose lower face is the model's in speech and the avatar's own in silence."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.avatar import load_avatar
from streamer.avatar.latents import load_latents, musetalk_crops, prepare_latents
from streamer.crop import CropConvention
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.session import EngineOptions
from streamer.errors import ModelError
from tests.test_offline_render import onset_clip, write_wav

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(musetalk_tiny: Path) -> MuseTalkEngine:
    return MuseTalkEngine(musetalk_tiny)


@pytest.fixture
def avatars(small_avatar: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small avatar, so each test starts without cached latents."""
    shutil.copytree(small_avatar, tmp_path / "avatars")
    return tmp_path / "avatars"


class CountingEncoder:
    def __init__(self, engine: MuseTalkEngine, key: str | None = None) -> None:
        self.engine = engine
        self.latent_key = key or engine.latent_key
        self.crops_encoded = 0

    def encode_crops(self, crops_bgr: np.ndarray) -> np.ndarray:
        self.crops_encoded += crops_bgr.shape[0]
        return self.engine.encode_crops(crops_bgr)


def test_the_engine_runs_the_folder(engine: MuseTalkEngine) -> None:
    rng = np.random.default_rng(0)
    faces = engine.generate(
        rng.standard_normal((3, 50, 384), np.float32),
        rng.standard_normal((3, 8, 32, 32), np.float32),
    )
    assert faces.shape == (3, 256, 256, 3)
    assert faces.dtype == np.uint8
    states = engine.encode_audio(
        rng.uniform(-1, 1, (1, 80, 100)).astype(np.float32), np.zeros(1, np.int64)
    )
    assert states.shape == (1, 50, 5, 384)
    assert engine.frames_per_s() > 0
    assert engine.providers[-1] == "CPUExecutionProvider"


def test_the_float16_variants_run_close_to_float32(
    engine: MuseTalkEngine, musetalk_tiny: Path
) -> None:
    half = MuseTalkEngine(musetalk_tiny, EngineOptions(fp16=True))
    rng = np.random.default_rng(4)
    audio = rng.standard_normal((2, 50, 384), np.float32)
    latents = rng.standard_normal((2, 8, 32, 32), np.float32)
    levels = np.abs(
        half.generate(audio, latents).astype(np.int16) - engine.generate(audio, latents)
    )
    assert levels.mean() < 1.0
    assert levels.max() <= 16


def test_a_folder_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="export it first"):
        MuseTalkEngine(tmp_path)


def test_latents_are_computed_once_then_loaded_from_the_cache(
    engine: MuseTalkEngine, avatars: Path
) -> None:
    avatar = load_avatar("small", avatars)
    first = CountingEncoder(engine)
    latents = prepare_latents(avatar, first)
    assert first.crops_encoded == avatar.frame_count
    assert latents.shape == (avatar.frame_count, 8, 32, 32)
    crops = musetalk_crops(avatar)
    np.testing.assert_allclose(latents[1:3], engine.encode_crops(np.asarray(crops.faces[1:3])))

    again = CountingEncoder(engine)
    reloaded = prepare_latents(load_avatar("small", avatars), again)  # a fresh load
    assert again.crops_encoded == 0  # the VAE encoder did not run
    assert isinstance(reloaded, np.memmap)
    np.testing.assert_array_equal(reloaded, latents)

    # Other weights: other latents, computed and cached beside the first ones.
    other = CountingEncoder(engine, key="0" * 64)
    assert load_latents(avatar, other.latent_key) is None
    prepare_latents(avatar, other)
    assert other.crops_encoded == avatar.frame_count
    assert load_latents(avatar, engine.latent_key) is not None


def test_musetalk_crops_cover_the_lower_face(avatars: Path) -> None:
    avatar = load_avatar("small", avatars)
    crops = avatar.crops(CropConvention.MUSETALK, 256)
    assert crops.faces.shape == (avatar.frame_count, 256, 256, 3)
    for i in (0, avatar.frame_count // 2):
        x0, y0, x1, y1 = crops.boxes[i]
        mouth = avatar.mouth[i]
        # The mouth inside the box, in its lower half (the box is centred on the nose bridge).
        assert x0 < mouth[:, 0].min()
        assert mouth[:, 0].max() < x1
        assert (y0 + y1) / 2 < mouth[:, 1].min()
        assert mouth[:, 1].max() < y1
        mask = crops.masks[i]
        assert mask[:120].max() == 0.0  # nothing above the bridge is replaced
        mx = round((mouth[:, 0].mean() - x0) * 256 / (x1 - x0))
        my = round((mouth[:, 1].mean() - y0) * 256 / (y1 - y0))
        assert mask[my, mx] > 0.9  # the mouth is


def test_render_command_with_a_musetalk_folder_writes_the_mp4(
    musetalk_tiny: Path, avatars: Path, tmp_path: Path
) -> None:
    clip = onset_clip(16_000)[: 2 * 16_000]  # 2 s: onsets at 0.52 and 1.73 s
    wav = tmp_path / "clip.wav"
    write_wav(wav, clip, 16_000)
    out = tmp_path / "musetalk.mp4"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "render",
            str(wav),
            "-o",
            str(out),
            "--model",
            str(musetalk_tiny),
            "--avatars-dir",
            str(avatars),
            "--avatar",
            "small",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with av.open(str(out)) as container:
        assert container.streams.audio, "no soundtrack"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 50
    avatar = load_avatar("small", avatars)
    box = musetalk_crops(avatar).boxes[0]
    x0, y0, x1, y1 = (int(v) for v in box)
    lower = (slice((y0 + y1) // 2, y1), slice(x0, x1))

    def changed(i: int) -> float:
        # Mean absolute change of the lower face against the avatar's own frame (beyond what
        # H.264 alone changes: a few levels).
        a = frames[i][lower].astype(np.int16)
        b = np.asarray(avatar.frames[i % avatar.frame_count])[lower].astype(np.int16)
        return float(np.abs(a - b).mean())

    silent = [changed(i) for i in (2, 5, 8)]  # before the first onset at 0.52 s
    speaking = [changed(i) for i in (16, 18, 20)]  # 0.64-0.80 s, in the first burst
    assert max(silent) < 5.0, silent  # H.264's own loss
    assert min(speaking) > 3 * max(silent), (silent, speaking)


def test_serve_refuses_a_musetalk_model_too_slow_for_live_calls(musetalk_tiny: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "serve", "--model", str(musetalk_tiny), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("avatar-streamer: ")]
    assert len(lines) == 1, done.stderr[-2000:]
    sentence = lines[0]
    assert re.search(
        r"model musetalk-random-tiny renders \d+\.\d frames per second on "
        r"CPUExecutionProvider, below the 25 a live call needs",
        sentence,
    ), sentence


def test_bench_model_times_each_graph_and_a_frame(
    musetalk_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.cli import main

    argv = ["bench", "model", "--model", str(musetalk_tiny), "--batch", "1,2", "--iters", "1"]
    assert main([*argv, "--no-record"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    parts = ("audio encoder 2 s", "unet", "vae decoder", "frame", "vae encoder (preparation)")
    for part in parts:
        rows = [line for line in table if f"{musetalk_tiny.name} {part} |" in line]
        assert len(rows) == 2, (part, table)  # batch 1 and 2
        ms_per_frame = float(rows[0].split("|")[6])
        assert ms_per_frame > 0
