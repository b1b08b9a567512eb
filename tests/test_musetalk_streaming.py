"""Live MuseTalk features (streamer/engine/musetalk/streaming.py) against offline ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.audio.whisper_mel import SEGMENT_SAMPLES, whisper_log_mel
from streamer.engine.musetalk.features import clip_frames, clip_positions, frame_windows
from streamer.engine.musetalk.streaming import (
    LiveFeatures,
    LiveFeatureSettings,
    frame_span,
    replay,
)
from streamer.errors import AudioGoneError
from tests.speech import spoken_clip

F32 = np.ndarray


class LocalEncoder:
    """A stand-in encoder whose position p reads only mel columns 2p and 2p + 1 (a fixed
    random projection): with it, live features must equal offline ones (the same mel columns,
    the same floor once the loud start is heard), so any misalignment of positions shows."""

    def __init__(self) -> None:
        self.weights = np.random.default_rng(0).standard_normal((160, 5 * 384)).astype(np.float32)

    def __call__(self, mel: F32, first_position: F32) -> F32:
        batch, _, columns = mel.shape
        pairs = mel.reshape(batch, 80, columns // 2, 2).transpose(0, 2, 3, 1)
        pairs = pairs.reshape(batch, columns // 2, 160)
        return (pairs @ self.weights).reshape(batch, columns // 2, 5, 384)


def clip_with_a_loud_start() -> np.ndarray:
    speech = spoken_clip(rate_hz=16_000, lead_silence_s=0.0)[: 16_000 * 6]
    # 50 ms of loud noise first: the recent peak is the segment's from frame 0 on.
    burst = 40.0 * np.random.default_rng(1).standard_normal(800).astype(np.float32)
    return np.concatenate([np.zeros(800, np.float32), burst, speech])


def offline_features(encoder: LocalEncoder, clip: np.ndarray) -> np.ndarray:
    segment = np.zeros(SEGMENT_SAMPLES, np.float32)
    segment[: clip.shape[0]] = clip
    mel = whisper_log_mel(segment)[None]
    states = encoder(mel, np.zeros(1, np.int64))[0][: clip_positions(clip.shape[0])]
    return frame_windows(states, 0, range(clip_frames(clip.shape[0])))


@pytest.mark.parametrize("context_s", [0.26, 1.0, 2.0])
def test_live_positions_line_up_with_offline_ones(context_s: float) -> None:
    encoder = LocalEncoder()
    clip = clip_with_a_loud_start()
    offline = offline_features(encoder, clip)
    live = LiveFeatures(LiveFeatureSettings(context_s=context_s, lookahead_s=0.16))
    # Frames whose lookahead the clip holds (the last few would need audio past its end).
    frames = range(clip_frames(clip.shape[0]) - 4)
    ours = replay(live, encoder, clip, frames)
    # Float32 matmuls of other shapes round differently (up to ~3e-5 on values near 40 with
    # numpy 2.4.6's OpenBLAS); a misaligned position would differ by the values themselves.
    np.testing.assert_allclose(ours, offline[: len(frames)], rtol=1e-5, atol=1e-4)


def push_to(live: LiveFeatures, clip: np.ndarray, frame: int) -> None:
    """Push ``clip`` up to what ``frame`` needs, as a session hears it."""
    live.push(clip[live.samples_pushed : live.samples_needed(frame)])


def test_live_features_do_not_depend_on_how_the_audio_arrives() -> None:
    clip = clip_with_a_loud_start()
    settings = LiveFeatureSettings(context_s=1.0)
    all_at_once, in_packets = LiveFeatures(settings), LiveFeatures(settings)
    all_at_once.push(clip)
    sizes = np.random.default_rng(4).integers(1, 1_000, 400)
    for i in range(60):
        while in_packets.samples_pushed < in_packets.samples_needed(i):
            k = int(sizes[in_packets.samples_pushed % 400])
            in_packets.push(clip[in_packets.samples_pushed : in_packets.samples_pushed + k])
        a, b = all_at_once.encoder_input(i), in_packets.encoder_input(i)
        np.testing.assert_array_equal(a.mel, b.mel)
        assert (a.first_position, a.start_position) == (b.first_position, b.start_position)
    with pytest.raises(ValueError, match="not ready"):
        in_packets.encoder_input(200)
    # Columns older than the capacity are gone, said so.
    short = LiveFeatures(settings, capacity_s=2.0)
    short.push(clip)
    with pytest.raises(AudioGoneError):
        short.encoder_input(0)


def test_a_window_floor_forgets_the_loud_start_and_a_recent_one_does_not() -> None:
    clip = clip_with_a_loud_start()
    recent = LiveFeatures(LiveFeatureSettings(context_s=1.0, floor="recent"))
    window = LiveFeatures(LiveFeatureSettings(context_s=1.0, floor="window"))
    segment = np.zeros(SEGMENT_SAMPLES, np.float32)
    segment[: clip.shape[0]] = clip
    floor = whisper_log_mel(segment).min()  # the offline floor: the segment's peak - 8
    late = 100  # 4 s in: the burst is out of the window
    for live in (recent, window):
        live.push(clip)
        live.encoder_input(0)
    assert recent.encoder_input(late).mel.min() >= floor - 1e-6
    assert window.encoder_input(late).mel.min() < floor - 0.1


def test_spans_and_settings() -> None:
    settings = LiveFeatureSettings(context_s=2.0, lookahead_s=0.16)
    assert frame_span(0, settings) == (0, 2_560)
    assert frame_span(100, settings) == (64_000 + 2_560 - 32_000, 64_000 + 2_560)
    with pytest.raises(ValueError, match="whole 20 ms"):
        LiveFeatureSettings(context_s=1.01)
    with pytest.raises(ValueError, match=r"at least 0\.14"):
        LiveFeatureSettings(lookahead_s=0.12)
    with pytest.raises(ValueError, match="whole window"):
        LiveFeatureSettings(context_s=0.2, lookahead_s=0.16)


def test_the_encoder_graph_gives_live_windows_the_offline_positions(musetalk_tiny: Path) -> None:
    # With the real (random-weight) encoder graph, the stem state (conv features + positional
    # embedding) of a live window equals the offline one away from the window's edges: the
    # graph's first_position puts the window at its place in the 30 s segment.
    ort = pytest.importorskip("onnxruntime")
    graph = ort.InferenceSession(
        str(musetalk_tiny / "audio_encoder.onnx"), providers=["CPUExecutionProvider"]
    )

    def encoder(mel: F32, first_position: F32) -> F32:
        return graph.run(None, {"mel": mel, "first_position": first_position})[0]

    clip = clip_with_a_loud_start()
    segment = np.zeros(SEGMENT_SAMPLES, np.float32)
    segment[: clip.shape[0]] = clip
    offline = encoder(whisper_log_mel(segment)[None], np.zeros(1, np.int64))[0]
    live = LiveFeatures(LiveFeatureSettings(context_s=1.0))
    live.push(clip)
    live.encoder_input(0)  # hear the loud start: the same floor as offline
    frame = 80
    start, _ = frame_span(frame, live.settings)
    run = live.encoder_input(frame)
    mel, first = run.mel[None], run.first_position
    assert first == start // 320 == run.start_position
    states = encoder(mel, np.array([first], np.int64))[0]
    inner = slice(2, states.shape[0] - 2)  # the edge positions read reflect-padded mel
    offline_part = offline[first : first + states.shape[0]]
    np.testing.assert_allclose(states[inner, 0], offline_part[inner, 0], atol=1e-4)
    # The positions really matter: the same window at position 0 is far off.
    at_zero = encoder(mel, np.zeros(1, np.int64))[0]
    assert np.abs(at_zero[inner, 0] - offline_part[inner, 0]).max() > 0.1


def test_the_recent_floor_forgets_after_30_s() -> None:
    rng = np.random.default_rng(2)
    burst = 40.0 * rng.standard_normal(1_600).astype(np.float32)
    hum = 0.01 * np.sin(2 * np.pi * 200 * np.arange(16_000 * 33) / 16_000).astype(np.float32)
    clip = np.concatenate([burst, hum])
    live = LiveFeatures(LiveFeatureSettings(context_s=1.0))
    push_to(live, clip, 0)
    live.encoder_input(0)
    loud = live.peak_log10
    push_to(live, clip, 25 * 20)
    live.encoder_input(25 * 20)  # 20 s later: still remembered
    assert live.peak_log10 == loud
    push_to(live, clip, 25 * 31)
    live.encoder_input(25 * 31)  # 31 s later: forgotten
    assert live.peak_log10 < loud - 2


def test_the_feature_bench_measures_live_against_offline(
    musetalk_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.bench import musetalk_features

    assert (
        musetalk_features.run(musetalk_tiny, (1.0,), (0.16,), threads=1, record=False, frame_step=8)
        == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 s")]
    assert len(rows) == 1
    cosine_mean = float(rows[0].split("|")[6])
    # Aligned positions keep live features close to offline ones even with random weights
    # (0.98 measured; windows placed at position 0 read 0.32-0.39).
    assert cosine_mean > 0.9
