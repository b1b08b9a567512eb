"""The compositor: pastes generated crops through masks, never touching its input."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.avatar import composite


def _batch(b: int = 3, size: int = 128, s: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 42, 52]] * b, dtype=np.int32)
    masks = np.ones((b, s, s), np.float32)
    return frames, generated, boxes, masks


def test_strength_zero_returns_frames_bit_for_bit() -> None:
    frames, generated, boxes, masks = _batch()
    out = composite(frames, generated, boxes, masks, np.zeros(3, np.float32))
    np.testing.assert_array_equal(out, frames)
    assert out is not frames


def test_full_mask_pastes_generated_pixels_and_only_in_the_box() -> None:
    frames, generated, boxes, masks = _batch()
    before = frames.copy()
    frames.flags.writeable = False  # like a memmap
    out = composite(frames, generated, boxes, masks)
    assert out.dtype == np.uint8
    assert out.shape == frames.shape
    np.testing.assert_array_equal(out[:, 20:52, 10:42], generated)  # same size: no resampling
    outside = np.ones(frames.shape[:3], bool)
    outside[:, 20:52, 10:42] = False
    np.testing.assert_array_equal(out[outside], before[outside])
    np.testing.assert_array_equal(frames, before)


def test_half_strength_blends_halfway() -> None:
    frames, generated, boxes, masks = _batch()
    out = composite(frames, generated, boxes, masks, np.full(3, 0.5, np.float32))
    expect = (frames[:, 20:52, 10:42].astype(np.float32) + generated.astype(np.float32)) / 2
    assert np.abs(out[:, 20:52, 10:42] - expect).max() <= 0.5 + 1e-3


def test_zero_mask_keeps_frame_and_box_is_resized() -> None:
    frames, generated, _, masks = _batch(b=1)
    masks[:] = 0
    masks[0, 8:24, 8:24] = 1
    boxes = np.array([[0, 0, 64, 64]], np.int32)  # 32 px crop into a 64 px box
    generated[:] = 7
    out = composite(frames, generated, boxes, masks)
    np.testing.assert_array_equal(out[0, 20:44, 20:44], 7)
    np.testing.assert_array_equal(out[0, 64:], frames[0, 64:])
    assert (out[0, :8, :8] == frames[0, :8, :8]).all()


def test_box_past_the_frame_edge_pastes_the_inside_part() -> None:
    frames, generated, _, masks = _batch(b=2)
    boxes = np.array([[-16, -16, 16, 16], [112, 100, 144, 132]], np.int32)
    out = composite(frames, generated, boxes, masks)
    np.testing.assert_array_equal(out[0, :16, :16], generated[0, 16:, 16:])
    np.testing.assert_array_equal(out[1, 100:128, 112:128], generated[1, :28, :16])


def test_mismatched_batches_are_rejected() -> None:
    frames, generated, boxes, masks = _batch()
    with pytest.raises(ValueError, match="batch"):
        composite(frames, generated[:2], boxes, masks)
