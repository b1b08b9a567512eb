from __future__ import annotations

import numpy as np
import pytest

from streamer import SampleRing
from streamer.errors import AudioGoneError


def test_reads_back_what_was_written_by_absolute_index() -> None:
    ring = SampleRing(1000)
    data = np.arange(700, dtype=np.float32)
    assert ring.write(data[:300]) == 0
    assert ring.write(data[300:]) == 300
    np.testing.assert_array_equal(ring.read(250, 650), data[250:650])
    assert (ring.start_index, ring.end_index) == (0, 700)


def test_overwrites_the_oldest_and_says_so() -> None:
    ring = SampleRing(1000)
    data = np.arange(2500, dtype=np.float32)
    for start in range(0, 2500, 333):
        ring.write(data[start : start + 333])
    assert (ring.start_index, ring.end_index) == (1500, 2500)
    np.testing.assert_array_equal(ring.read(1500, 2500), data[1500:])
    np.testing.assert_array_equal(ring.read(1990, 2010), data[1990:2010])  # wraps inside
    with pytest.raises(AudioGoneError, match="gone"):
        ring.read(1499, 1600)


def test_a_write_larger_than_the_ring_keeps_the_newest() -> None:
    ring = SampleRing(100)
    ring.write(np.zeros(10, np.float32))
    data = np.arange(350, dtype=np.float32)
    assert ring.write(data) == 10
    assert ring.end_index == 360
    np.testing.assert_array_equal(ring.read(260, 360), data[-100:])


def test_future_audio_and_bad_ranges_are_errors() -> None:
    ring = SampleRing(100)
    ring.write(np.ones(50, np.float32))
    with pytest.raises(ValueError, match="not arrived"):
        ring.read(40, 51)
    with pytest.raises(ValueError, match="empty range"):
        ring.read(10, 5)
    with pytest.raises(ValueError, match="positive"):
        SampleRing(0)


def test_capacity_is_respected_under_random_writes() -> None:
    rng = np.random.default_rng(3)
    ring = SampleRing(777)
    written = []
    for _ in range(200):
        chunk = rng.standard_normal(int(rng.integers(0, 300))).astype(np.float32)
        ring.write(chunk)
        written.append(chunk)
        assert ring.end_index - ring.start_index == min(777, ring.end_index)
    everything = np.concatenate(written)
    np.testing.assert_array_equal(ring.read(ring.start_index, ring.end_index), everything[-777:])
