"""The streaming STFT framing and column ring both feature extractors stand on, against numpy's
own reflect padding and framing of the whole stream."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.audio.stft import ColumnRing, StreamingFrames
from streamer.errors import AudioGoneError


@pytest.mark.parametrize(("n_fft", "hop"), [(800, 200), (400, 160), (8, 3)])
def test_frames_are_the_whole_streams_centred_frames_each_once(n_fft: int, hop: int) -> None:
    rng = np.random.default_rng(n_fft)
    x = rng.standard_normal(20 * n_fft)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    whole = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    framer = StreamingFrames(n_fft, hop)
    got, pushed = [], 0
    while pushed < x.shape[0]:
        k = int(rng.integers(0, 2 * hop + 2))
        frames = framer.push(x[pushed : pushed + k])
        pushed = min(x.shape[0], pushed + k)
        # Frame t is handed out as soon as samples up to hop t + n_fft / 2 are in, not before.
        done = framer.frames_done
        assert done == (0 if pushed <= n_fft // 2 else (pushed - n_fft // 2) // hop + 1)
        assert done == 0 or framer.samples_needed(done) <= pushed < framer.samples_needed(done + 1)
        got.append(frames.copy())
    streamed = np.concatenate(got)
    np.testing.assert_array_equal(streamed, whole[: streamed.shape[0]])
    assert streamed.shape[0] == framer.frames_done == (x.shape[0] - n_fft // 2) // hop + 1


def test_the_framer_keeps_only_what_the_next_frame_reads() -> None:
    framer = StreamingFrames(400, 160)
    for _ in range(1000):
        framer.push(np.ones(320))
    assert framer._pending.shape[0] <= 400 + 320
    with pytest.raises(ValueError, match="hop"):
        StreamingFrames(400, 201)


def test_the_ring_keeps_the_last_columns_and_says_what_is_gone_or_not_ready() -> None:
    ring = ColumnRing(2, 5, np.float32, fill=-4.0)
    ring.append(np.arange(6, dtype=np.float32).reshape(2, 3))  # columns 0..2
    np.testing.assert_array_equal(ring.read(1, 3), [[1, 2], [4, 5]])
    big = np.arange(14, dtype=np.float32).reshape(2, 7) + 100  # columns 3..9: only 5..9 kept
    ring.append(big)
    assert (ring.count, ring.oldest) == (10, 5)
    np.testing.assert_array_equal(ring.read(5, 10), big[:, 2:])
    with pytest.raises(AudioGoneError, match="gone"):
        ring.read(4, 6)
    with pytest.raises(ValueError, match="not ready"):
        ring.read(8, 11)
