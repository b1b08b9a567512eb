"""Wav2Lip features: the offline reference against librosa, streaming against offline."""

from __future__ import annotations

import numpy as np
import pytest

from streamer import MelExtractor, compute_mel, window_start_column
from streamer.errors import AudioGoneError
from tests.audio_signals import speechlike

librosa = pytest.importorskip("librosa")
signal = pytest.importorskip("scipy.signal")


def wav2lip_reference(pcm: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.py written with librosa and scipy, as the original repository does."""
    y = signal.lfilter([1, -0.97], [1], pcm.astype(np.float64))
    stft = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(stft))) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_offline_features_match_independent_reference(seed: int) -> None:
    pcm = speechlike(4.0, seed=seed)
    ours = compute_mel(pcm)
    ref = wav2lip_reference(pcm)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (80, 1 + len(pcm) // 200)
    assert np.abs(ours - ref)[:, 2:-2].max() < 1e-3
    # The features are not trivially saturated: speech spans a good part of [-4, 4].
    assert ours.max() > 0
    assert ours.min() == -4.0


def test_silence_is_minus_four() -> None:
    assert np.all(compute_mel(np.zeros(16000, np.float32)) == -4.0)


def test_loud_tone_lights_up_its_mel_band() -> None:
    t = np.arange(16000) / 16000
    mel = compute_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    loudest_bin = int(np.argmax(mel[:, 40]))
    low = int(np.argmin(np.abs(librosa.mel_frequencies(82, fmin=55, fmax=7600)[1:-1] - 1000)))
    assert abs(loudest_bin - low) <= 1


def test_window_start_follows_wav2lip_training_alignment() -> None:
    expected = [int(80 * (i - 2) / 25) for i in range(200)]
    assert [window_start_column(i) for i in range(200)] == expected
    assert window_start_column(10, frame_offset=0) == 32


def _reference_window(offline: np.ndarray, start: int) -> np.ndarray:
    out = np.full((80, 16), -4.0, np.float32)
    lo = max(start, 0)
    out[:, lo - start :] = offline[:, lo : start + 16]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_windows_equal_offline_for_random_chunks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = speechlike(12.0, seed=seed)
    offline = compute_mel(pcm)
    extractor = MelExtractor(capacity_s=20.0)
    checked = 0
    frame = 0
    pos = 0
    while pos < len(pcm):
        n = int(rng.integers(1, 2001))
        extractor.push(pcm[pos : pos + n])
        pos += n
        while (window := extractor.window(frame)) is not None:
            ref = _reference_window(offline, extractor.window_start(frame))
            assert np.abs(window - ref).max() < 1e-3, frame
            frame += 1
            checked += 1
    assert checked == extractor.frames_ready()
    # Every frame whose window lies inside the audio was produced (12 s at 25 fps, minus the
    # 120 ms lookahead and the 50 ms half-window the last column waits for).
    assert checked >= 12 * 25 - 5


def test_window_is_none_until_complete_and_columns_computed_once() -> None:
    extractor = MelExtractor()
    assert extractor.window(0) is None
    pcm = speechlike(1.0)
    # Frame 2's window is columns 0..15; column 15 needs samples up to 15*200+400.
    extractor.push(pcm[: 15 * 200 + 400])
    assert extractor.columns_computed == 16
    assert extractor.window(2) is not None
    assert extractor.window(3) is None
    computed = extractor.columns_computed
    for i in range(3):
        extractor.window(i)
    assert extractor.columns_computed == computed
    # Pushing audio one sample at a time adds exactly one column per 200 samples.
    for k in range(400):
        extractor.push(pcm[3400 + k : 3401 + k])
    assert extractor.columns_computed == computed + 2


def test_early_frames_see_silence_before_the_start() -> None:
    extractor = MelExtractor()
    pcm = speechlike(1.0)
    extractor.push(pcm)
    first = extractor.window(0)
    assert first is not None
    start = window_start_column(0)  # -6
    assert np.all(first[:, :-start] == -4.0)
    assert np.any(first[:, -start:] != -4.0)


def test_overwritten_windows_raise() -> None:
    extractor = MelExtractor(capacity_s=1.0)
    extractor.push(speechlike(3.0))
    assert extractor.window(extractor.frames_ready() - 1) is not None
    with pytest.raises(AudioGoneError, match="gone"):
        extractor.window(5)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="fps"):
        MelExtractor(fps=0)
    with pytest.raises(ValueError, match="capacity"):
        MelExtractor(capacity_s=0.1)
