"""MuseTalk's audio contract: Whisper's mel, the per-frame windows, the positional encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.audio.whisper_mel import (
    SEGMENT_COLUMNS,
    StreamingWhisperMel,
    offline_segments,
    whisper_log10_mel,
    whisper_log_mel,
)
from streamer.engine.musetalk.features import (
    D_MODEL,
    HIDDEN_STATES,
    clip_frames,
    clip_positions,
    frame_window,
    frame_windows,
    positional_encoding,
)
from streamer.errors import AudioGoneError
from tests.speech import spoken_clip


def test_whisper_mel_is_transformers_feature_extractor() -> None:
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor()  # whisper-tiny's preprocessor defaults
    # 35 s of speech and silence: two segments, the second mostly zero padding.
    speech = spoken_clip(rate_hz=16_000)
    clip = np.tile(speech, math.ceil(35 * 16_000 / speech.shape[0]))[: 35 * 16_000]
    ours = offline_segments(clip)
    assert [s.shape for s in ours] == [(80, SEGMENT_COLUMNS)] * 2
    for index, segment in enumerate(ours):
        audio = clip[index * 480_000 : (index + 1) * 480_000]
        reference = extractor(audio, sampling_rate=16_000, return_tensors="np").input_features[0]
        # transformers computes in float32 when torch is installed (3e-5 off at quiet bins);
        # ours in float64.
        assert np.abs(segment - reference).max() < 1e-4
        assert np.abs(segment - reference).mean() < 1e-6


def test_whisper_mel_columns_and_floor() -> None:
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000) + 1e-3 * rng.standard_normal(16_000)
    mel = whisper_log_mel(tone)
    assert mel.shape == (80, 100)  # 100 columns a second, the last STFT frame dropped
    # Everything sits within 8 decades of the loudest value: (x + 4) / 4 spans 2.0.
    assert mel.max() - mel.min() <= 2.0 + 1e-6
    assert np.isclose(mel.max() - mel.min(), 2.0)  # the tone is far louder than its floor
    with pytest.raises(ValueError, match="more than 200 samples"):
        whisper_log_mel(np.zeros(200))


def upstream_chunks(states: np.ndarray, n_samples: int) -> np.ndarray:
    """MuseTalk's ``AudioProcessor.get_whisper_chunk`` written out as upstream does it:
    trim to floor(s * 50) positions, pad 4 zero positions before and 12 after, take 10
    positions from 2i for each of floor(s * 25) frames, rearrange 'b c h w -> b (c h) w'."""
    actual = math.floor(n_samples / 16_000 * 50)
    trimmed = states[:actual]
    padded = np.concatenate(
        [np.zeros_like(trimmed[:4]), trimmed, np.zeros((12, *trimmed.shape[1:]), np.float32)]
    )
    frames = math.floor(n_samples / 16_000 * 25)
    clips = [padded[math.floor(i * 2.0) : math.floor(i * 2.0) + 10] for i in range(frames)]
    assert all(c.shape[0] == 10 for c in clips)
    return np.stack(clips).reshape(frames, 50, D_MODEL)


def ramp(positions: int) -> np.ndarray:
    """states[p, s, d] = 1000 (p + 1) + 10 s + d / 1000: every value names its place."""
    p = np.arange(positions)[:, None, None] + 1
    s = np.arange(HIDDEN_STATES)[None, :, None]
    d = np.arange(D_MODEL)[None, None, :]
    return (1000.0 * p + 10.0 * s + d / 1000.0).astype(np.float32)


@pytest.mark.parametrize("n_samples", [16_000, 40_000, 16_000 * 7 + 333, 6_400])
def test_windows_are_upstreams_exactly(n_samples: int) -> None:
    # A whole 30 s segment's states, as the offline path has them before trimming.
    states = ramp(1500)
    ours = frame_windows(states[: clip_positions(n_samples)], 0, range(clip_frames(n_samples)))
    np.testing.assert_array_equal(ours, upstream_chunks(states, n_samples))


def test_window_layout_is_time_major_from_2i_minus_4() -> None:
    states = ramp(200)
    window = frame_windows(states, 0, range(10, 11))[0]
    assert frame_window(10) == (16, 26)
    for token in range(50):
        position, state = divmod(token, HIDDEN_STATES)
        assert window[token, 0] == pytest.approx(1000.0 * (16 + position + 1) + 10.0 * state)
    # Frame 0 reads 4 zero positions before the clip's start, then positions 0..5.
    first = frame_windows(states, 0, range(1))[0].reshape(10, HIDDEN_STATES, D_MODEL)
    assert not first[:4].any()
    assert (first[4:, 0, 0] == 1000.0 * np.arange(1, 7)).all()


def test_a_slice_of_states_gives_the_same_windows_as_the_whole() -> None:
    # Live features arrive as a span of positions; any frame whose window lies inside the span
    # (or before the clip's start) gets what it would have got from the whole clip.
    states = ramp(300)
    whole = frame_windows(states, 0, range(0, 140))
    part = frame_windows(states[100:260], 100, range(52, 127))
    np.testing.assert_array_equal(part, whole[52:127])


def test_positional_encoding_is_the_sinusoid() -> None:
    table = positional_encoding()
    assert table.shape == (50, D_MODEL)
    assert table.dtype == np.float32
    p, k = 17, 25
    angle = p / 10_000 ** (2 * k / D_MODEL)
    assert table[p, 2 * k] == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[p, 2 * k + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def test_the_streaming_mel_computes_the_offline_columns_as_audio_arrives() -> None:
    rng = np.random.default_rng(7)
    pcm = (0.1 * rng.standard_normal(16_000 * 3)).astype(np.float32)
    offline = whisper_log10_mel(pcm)  # [80, 300]
    stream = StreamingWhisperMel(capacity_columns=150)
    pushed, ready_after = 0, []
    while pushed < pcm.shape[0]:
        k = int(rng.integers(1, 900))
        stream.push(pcm[pushed : pushed + k])
        pushed = min(pcm.shape[0], pushed + k)
        ready_after.append((pushed, stream.columns_ready))
    # Column t is computed as soon as samples [160 t - 200, 160 t + 200) are in, not before.
    for n, ready in ready_after:
        assert ready == (0 if n <= 200 else (n - 200) // 160 + 1), (n, ready)
        assert ready == 0 or StreamingWhisperMel.samples_needed(ready) <= n
    # Every column equals offline's (the first two read the start reflected, as offline).
    ready = stream.columns_ready
    np.testing.assert_allclose(stream.read(ready - 150, ready), offline[:, ready - 150 : ready])
    with pytest.raises(AudioGoneError):
        stream.read(0, 10)
    with pytest.raises(ValueError, match="not ready"):
        stream.read(ready - 2, ready + 1)
    first = StreamingWhisperMel(capacity_columns=10)
    first.push(pcm[:400])
    np.testing.assert_allclose(first.read(0, 2), offline[:, :2])
