"""The avatar cache: manifest validation, loading, crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.avatar import (
    Avatar,
    AvatarCacheError,
    AvatarNotFoundError,
    PrepareOptions,
    list_avatars,
    load_avatar,
    prepare_avatar,
)
from streamer.avatar.cache import FORMAT_VERSION
from streamer.crop import MOUTH_CENTER_X, MOUTH_CENTER_Y, MOUTH_WIDTH, CropConvention
from tests.avatar_media import PORTRAIT, write_image


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[Path, Path, Avatar]:
    """An idle-motion avatar 'p' (10 frames) prepared from a copy of the portrait."""
    source = tmp_path / "portrait.jpg"
    source.write_bytes(PORTRAIT.read_bytes())
    root = tmp_path / "avatars"
    avatar = prepare_avatar(source, "p", root, PrepareOptions(idle_seconds=0.4))
    return root, source, avatar


def _manifest_path(root: Path) -> Path:
    return root / "p" / "cache" / "manifest.json"


def test_load_matches_prepare(prepared: tuple[Path, Path, Avatar]) -> None:
    root, _, made = prepared
    avatar = load_avatar("p", root)
    assert (avatar.name, avatar.fps, avatar.frame_count, avatar.size_wh) == (
        "p",
        25,
        10,
        (512, 512),
    )
    assert avatar.frames.shape == (10, 512, 512, 3)
    assert isinstance(avatar.frames, np.memmap)
    assert not avatar.frames.flags.writeable
    assert avatar.face_boxes.dtype == np.int32
    assert avatar.face_boxes.shape == (10, 4)
    assert avatar.mouth.dtype == np.float32
    assert avatar.mouth.shape == (10, 4, 2)
    np.testing.assert_array_equal(avatar.frames, made.frames)
    manifest = json.loads(_manifest_path(root).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["crop_conventions"]["mouth"]["width"] == MOUTH_WIDTH
    assert len(manifest["source"]["sha256"]) == 64


def test_missing_avatar(tmp_path: Path) -> None:
    with pytest.raises(AvatarNotFoundError, match="run `avatar-streamer prepare"):
        load_avatar("nobody", tmp_path)


def test_older_format_version_is_refused(prepared: tuple[Path, Path, Avatar]) -> None:
    root = prepared[0]
    path = _manifest_path(root)
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION - 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(AvatarCacheError, match=r"format version .*--force`$") as info:
        load_avatar("p", root)
    assert info.value.code == "avatar_cache_stale"
    assert "format version" in list_avatars(root)[0][2]


def test_changed_source_is_detected(prepared: tuple[Path, Path, Avatar]) -> None:
    root, source, _ = prepared
    image = np.asarray(prepared[2].frames[0]).copy()
    image[:8] = 0
    write_image(source.with_suffix(".png"), image)
    source.write_bytes(source.with_suffix(".png").read_bytes())
    with pytest.raises(AvatarCacheError, match=r"another version of .*--force`$"):
        load_avatar("p", root)


def test_touched_but_identical_source_still_loads(prepared: tuple[Path, Path, Avatar]) -> None:
    root, source, _ = prepared
    source.write_bytes(source.read_bytes())  # new mtime, same bytes: rehashed, accepted
    load_avatar("p", root)


def test_deleted_source_does_not_block_loading(prepared: tuple[Path, Path, Avatar]) -> None:
    root, source, _ = prepared
    source.unlink()
    assert load_avatar("p", root).frame_count == 10


def test_truncated_frames_are_refused(prepared: tuple[Path, Path, Avatar]) -> None:
    root = prepared[0]
    frames = root / "p" / "cache" / "frames.npy"
    data = frames.read_bytes()
    frames.write_bytes(data[: len(data) // 2])
    with pytest.raises(AvatarCacheError, match="truncated"):
        load_avatar("p", root)


@pytest.mark.parametrize("damage", ["not json", "[]", '{"format_version": 1}'])
def test_damaged_manifest_is_refused(prepared: tuple[Path, Path, Avatar], damage: str) -> None:
    root = prepared[0]
    _manifest_path(root).write_text(damage)
    with pytest.raises(AvatarCacheError, match=r"--force`$"):
        load_avatar("p", root)


def test_landmark_count_mismatch_is_refused(prepared: tuple[Path, Path, Avatar]) -> None:
    root = prepared[0]
    path = _manifest_path(root)
    manifest = json.loads(path.read_text())
    manifest["mouth"] = manifest["mouth"][:-1]
    path.write_text(json.dumps(manifest))
    with pytest.raises(AvatarCacheError, match="do not match"):
        load_avatar("p", root)


def test_mouth_crops_follow_the_convention(prepared: tuple[Path, Path, Avatar]) -> None:
    avatar = prepared[2]
    crops = avatar.crops(CropConvention.MOUTH, 96)
    assert avatar.crops(CropConvention.MOUTH, 96) is crops  # cached in memory
    assert crops.faces.shape == (10, 96, 96, 3)
    assert crops.faces.dtype == np.uint8
    assert crops.masks.shape == (10, 96, 96)
    assert crops.masks.dtype == np.float32
    assert crops.boxes.shape == (10, 4)
    assert crops.boxes.dtype == np.int32
    side = crops.boxes[:, 2] - crops.boxes[:, 0]
    np.testing.assert_array_equal(side, crops.boxes[:, 3] - crops.boxes[:, 1])  # square
    mouth_w = np.linalg.norm(avatar.mouth[:, 1] - avatar.mouth[:, 0], axis=1)
    np.testing.assert_allclose(side * MOUTH_WIDTH, mouth_w, atol=1.5)
    assert np.ptp(side) == 0  # a still: no scale jitter at all
    centre = 0.5 * (avatar.mouth[:, 0] + avatar.mouth[:, 1])
    np.testing.assert_allclose(crops.boxes[:, 0] + MOUTH_CENTER_X * side, centre[:, 0], atol=1)
    np.testing.assert_allclose(crops.boxes[:, 1] + MOUTH_CENTER_Y * side, centre[:, 1], atol=1)
    _check_mask(crops.masks, lower_only=False)
    # The mask covers the mouth fully.
    assert crops.masks[0, int(0.42 * 96), int(0.5 * 96)] > 0.99


def test_wav2lip_crops_follow_the_convention(prepared: tuple[Path, Path, Avatar]) -> None:
    avatar = prepared[2]
    crops = avatar.crops(CropConvention.WAV2LIP, 96)
    expected = avatar.face_boxes.copy()
    expected[:, 3] += 10
    np.testing.assert_array_equal(crops.boxes, expected)
    _check_mask(crops.masks, lower_only=True)
    # Reference crop 0 is the padded face box resized.
    import cv2

    x0, y0, x1, y1 = expected[0]
    ref = cv2.resize(
        np.asarray(avatar.frames[0, y0:y1, x0:x1]), (96, 96), interpolation=cv2.INTER_AREA
    )
    assert np.abs(ref.astype(int) - crops.faces[0]).mean() < 2


def test_crop_past_the_frame_edge_replicates_edge_pixels(tmp_path: Path) -> None:
    frame = np.zeros((512, 512, 3), np.uint8)
    frame[:, :256] = 255  # left half white: the source portrait is pasted at the corner below
    from streamer.avatar.crops import cut_crop

    crop = cut_crop(frame, np.array([-64, -64, 64, 64], np.int32), 64)
    assert crop.shape == (64, 64, 3)
    assert (crop == 255).all()


def _check_mask(masks: np.ndarray, lower_only: bool) -> None:
    assert masks.min() >= 0
    assert masks.max() <= 1
    assert masks.max() == pytest.approx(1.0)
    for border in (masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]):
        assert (border == 0).all()
    s = masks.shape[1]
    if lower_only:
        assert (masks[:, : s // 2] == 0).all()
    # Feathered: no jump bigger than a fraction of the range between neighbouring pixels.
    assert np.abs(np.diff(masks, axis=1)).max() < 0.25
    assert np.abs(np.diff(masks, axis=2)).max() < 0.25
