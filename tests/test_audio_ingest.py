from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from streamer import AudioIngest, pcm_to_frame
from streamer.errors import AudioFormatError


def _aiortc_like_frames(n_frames: int) -> list[av.AudioFrame]:
    """20 ms s16 stereo 48 kHz frames with pts, as aiortc's decoder hands them over."""
    t = np.arange(960 * n_frames) / 48_000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    frames = []
    for k in range(n_frames):
        block = tone[k * 960 : (k + 1) * 960]
        frame = pcm_to_frame(np.stack((block, block), axis=1), 48_000)
        frame.pts = k * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        frames.append(frame)
    return frames


@pytest.mark.slow
def test_one_hour_of_20ms_frames_yields_exactly_57_6_million_samples() -> None:
    ingest = AudioIngest()
    block = np.zeros((960, 2), np.int16)
    expected_start = 0
    for _ in range(180_000):  # one hour of 20 ms frames
        chunk = ingest.push(pcm_to_frame(block, 48_000))
        assert chunk.start_index == expected_start
        expected_start = chunk.stop_index
    tail = ingest.flush()
    assert tail.start_index == expected_start
    assert tail.stop_index == ingest.samples_emitted == 57_600_000


def test_output_is_16k_mono_float32_and_preserves_the_signal() -> None:
    ingest = AudioIngest()
    chunks = [ingest.push(f) for f in _aiortc_like_frames(50)]
    chunks.append(ingest.flush())
    out = np.concatenate([c.samples for c in chunks])
    assert out.dtype == np.float32
    assert len(out) == 50 * 320
    spectrum = np.abs(np.fft.rfft(out[1600:14400]))
    peak_hz = np.argmax(spectrum) * 16_000 / len(out[1600:14400])
    assert abs(peak_hz - 440) < 5
    assert 0.2 < np.abs(out[1600:14400]).max() < 0.3  # 8000 / 32768 = 0.244


@pytest.mark.parametrize(
    ("rate_hz", "block", "fmt_dtype", "channels"),
    [(44_100, 1024, np.int16, 1), (22_050, 333, np.float32, 2), (8_000, 160, np.int16, 1)],
)
def test_exact_counts_for_odd_rates_and_block_sizes(
    rate_hz: int, block: int, fmt_dtype: type, channels: int
) -> None:
    seconds = 9
    n = rate_hz * seconds
    ingest = AudioIngest()
    total = 0
    pos = 0
    while pos < n:
        size = min(block, n - pos)
        shape = (size,) if channels == 1 else (size, channels)
        chunk = ingest.push(pcm_to_frame(np.zeros(shape, fmt_dtype), rate_hz))
        assert chunk.start_index == total
        total += len(chunk.samples)
        pos += size
    total += len(ingest.flush().samples)
    assert total == 16_000 * seconds


def test_format_change_midstream_loses_nothing() -> None:
    ingest = AudioIngest()
    total = 0
    for _ in range(50):  # 1 s at 48 kHz stereo
        total += len(ingest.push(pcm_to_frame(np.zeros((960, 2), np.int16), 48_000)).samples)
    for _ in range(25):  # then 1 s at 44.1 kHz mono float
        total += len(ingest.push(pcm_to_frame(np.zeros(1764, np.float32), 44_100)).samples)
    total += len(ingest.flush().samples)
    assert total == 32_000


def test_bad_pcm_is_one_clear_error() -> None:
    with pytest.raises(AudioFormatError, match="int16 or float32"):
        pcm_to_frame(np.zeros(10, np.float64), 16_000)
    with pytest.raises(AudioFormatError, match="shape"):
        pcm_to_frame(np.zeros((10, 5), np.int16), 16_000)
