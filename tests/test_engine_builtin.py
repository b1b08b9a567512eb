"""The built-in model: a designed mouth that follows loudness, rests on silence, changes shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.audio.mel import SAMPLE_RATE_HZ, MelExtractor
from streamer.crop import CropConvention
from streamer.engine import EngineOptions, LipSyncEngine
from streamer.engine.builtin import (
    BUILTIN_FACE_SIZE_PX,
    MEL_FRAME_OFFSET,
    build_builtin_model,
    builtin_model_bytes,
)

FPS = 25
S = BUILTIN_FACE_SIZE_PX
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine() -> LipSyncEngine:
    return LipSyncEngine(options=EngineOptions(providers=("CPUExecutionProvider",)))


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A plain MOUTH crop: skin, with a lip band on the lip line (BGR uint8 [S,S,3])."""
    img = np.empty((S, S, 3), dtype=np.uint8)
    img[:] = (120, 150, 200)
    y = int(0.42 * S) + 3
    img[y - 5 : y + 6, int(0.3 * S) : int(0.7 * S)] = (90, 90, 170)
    return img


def vowel(
    seconds: float, formants_hz: tuple[float, ...], envelope: np.ndarray | None = None
) -> np.ndarray:
    """A voiced vowel-like sound: 120 Hz harmonics weighted by formant peaks, peak 0.5."""
    n = int(seconds * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    x = np.zeros(n)
    for k in range(1, 60):
        f = 120.0 * k
        gain = sum(1.0 / (1.0 + ((f - fm) / 80.0) ** 2) for fm in formants_hz)
        x += gain * np.sin(2 * np.pi * f * t + k)
    x *= 0.5 / np.max(np.abs(x))
    if envelope is not None:
        x *= np.interp(np.arange(n), np.linspace(0, n, len(envelope)), envelope)
    return x


def windows(pcm: np.ndarray) -> np.ndarray:
    """Mel windows [N,80,16] of every complete video frame, as the real-time path reads them."""
    mel = MelExtractor(fps=FPS, frame_offset=MEL_FRAME_OFFSET)
    mel.push(pcm)
    out = [mel.window(i) for i in range(mel.frames_ready())]
    return np.stack([w for w in out if w is not None])


def opening(engine: LipSyncEngine, crop: np.ndarray, mel_windows: np.ndarray) -> np.ndarray:
    """Darkened pixel mass per frame: how much darker than the reference the output got."""
    crops = np.repeat(crop[None], len(mel_windows), axis=0)
    out = engine.generate(mel_windows, crops).astype(np.float32)
    darker = np.clip(crop.astype(np.float32).mean(-1) - out.mean(-1), 0, None)
    return darker.sum(axis=(1, 2)) / 255.0


def test_builtin_metadata(engine: LipSyncEngine) -> None:
    assert engine.info.name == "builtin"
    assert engine.info.source == "builtin"
    assert engine.info.crop is CropConvention.MOUTH
    # A short lookahead: the window ends 40 ms after the frame (Wav2Lip's reaches 120 ms).
    assert engine.info.mel_frame_offset == 4
    assert engine.info.face_size_px == S


def test_silence_returns_the_reference(engine: LipSyncEngine, crop: np.ndarray) -> None:
    silence = np.full((3, 80, 16), -4.0, dtype=np.float32)
    out = engine.generate(silence, np.repeat(crop[None], 3, axis=0))
    assert np.abs(out.astype(int) - crop.astype(int)).max() <= 1


@pytest.mark.parametrize("level_dbfs", [-40.0, -50.0])
def test_white_noise_below_speech_keeps_mouth_closed(
    engine: LipSyncEngine, crop: np.ndarray, level_dbfs: float
) -> None:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(2 * SAMPLE_RATE_HZ) * 10 ** (level_dbfs / 20)
    assert opening(engine, crop, windows(noise)).max() < 1.0


def test_room_noise_keeps_mouth_closed(engine: LipSyncEngine, crop: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    brown = np.cumsum(rng.standard_normal(2 * SAMPLE_RATE_HZ))
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # no DC drift
    brown *= 10 ** (-40 / 20) / np.sqrt(np.mean(brown**2))  # -40 dBFS hum-and-rumble
    assert opening(engine, crop, windows(brown)).max() < 1.0


def test_opening_tracks_loudness_envelope(engine: LipSyncEngine, crop: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    syllables = rng.uniform(0.0, 1.0, 16)  # one level per 250 ms
    envelope = np.repeat(syllables, 10)  # 25 ms steps
    envelope = np.convolve(envelope, np.hanning(7) / np.hanning(7).sum(), mode="same")
    pcm = vowel(4.0, (700.0, 1200.0), envelope)
    open_ = opening(engine, crop, windows(pcm))
    frame_t = np.arange(len(open_)) / FPS
    env_at_frames = np.interp(frame_t, np.linspace(0, 4.0, len(envelope)), envelope)
    r = np.corrcoef(open_, env_at_frames)[0, 1]
    assert r >= 0.8, f"correlation {r:.2f}"
    assert open_.max() > 50.0  # visibly open at the loud syllables


def test_mouth_rests_within_two_frames_after_speech(
    engine: LipSyncEngine, crop: np.ndarray
) -> None:
    speech_s = 1.0
    pcm = np.concatenate((vowel(speech_s, (700.0, 1200.0)), np.zeros(SAMPLE_RATE_HZ)))
    mel_windows = windows(pcm)
    crops = np.repeat(crop[None], len(mel_windows), axis=0)
    out = engine.generate(mel_windows, crops).astype(int)
    diff = np.abs(out - crop.astype(int)).max(axis=(1, 2, 3))
    last_speech_frame = int(speech_s * FPS) - 1  # frame 24 at 0.96 s; speech ends at 1.00 s
    assert diff[last_speech_frame - 5] > 20  # open while speaking
    # Frame 25 (1.00 s) may still move; from frame 26 (40 ms after the end) on: at rest.
    assert (diff[last_speech_frame + 2 :] <= 1).all(), diff[last_speech_frame:]


def _dark_box_ratio(engine: LipSyncEngine, crop: np.ndarray, pcm: np.ndarray) -> float:
    mel_windows = windows(pcm)[10:20]
    out = engine.generate(mel_windows, np.repeat(crop[None], len(mel_windows), axis=0))
    dark = (crop.astype(np.float32).mean(-1) - out.astype(np.float32).mean(-1)) > 40
    ratios = []
    for d in dark:
        ys, xs = np.nonzero(d)
        assert len(xs), "mouth did not open"
        ratios.append((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1))
    return float(np.median(ratios))


def test_shape_varies_with_spectrum(engine: LipSyncEngine, crop: np.ndarray) -> None:
    round_ratio = _dark_box_ratio(engine, crop, vowel(1.0, (300.0, 800.0)))  # "oo"
    wide_ratio = _dark_box_ratio(engine, crop, vowel(1.0, (300.0, 2300.0, 3000.0)))  # "ee"
    assert wide_ratio > 1.3 * round_ratio, (wide_ratio, round_ratio)


def test_generator_is_deterministic() -> None:
    assert build_builtin_model().SerializeToString() == builtin_model_bytes()


def test_committed_model_matches_generator() -> None:
    committed = REPO / "models" / "builtin.onnx"
    assert committed.read_bytes() == builtin_model_bytes(), (
        "models/builtin.onnx is stale: run python scripts/build_builtin_model.py"
    )
