"""prepare: stills, videos, the default portrait, and every bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.avatar import (
    AvatarExistsError,
    FaceTooSmallError,
    InvalidAvatarNameError,
    NoFaceError,
    PrepareOptions,
    UnreadableSourceError,
    ensure_default_avatar,
    load_avatar,
    prepare_avatar,
)
from streamer.cli import main
from tests.avatar_media import (
    PORTRAIT,
    PORTRAIT_FACE,
    PORTRAIT_MOUTH,
    moving_portrait_frames,
    portrait,
    write_image,
    write_video,
)

STILL = PrepareOptions(idle_seconds=0)


def _only_nothing_left(root: Path) -> None:
    assert not root.exists() or list(root.iterdir()) == []


def test_portrait_face_box_and_mouth(tmp_path: Path) -> None:
    avatar = prepare_avatar(PORTRAIT, "still", tmp_path, STILL)
    assert avatar.frame_count == 1
    assert avatar.size_wh == (512, 512)
    assert avatar.frames.shape == (1, 512, 512, 3)
    assert avatar.frames.dtype == np.uint8
    np.testing.assert_allclose(avatar.face_boxes[0], PORTRAIT_FACE, atol=3)
    np.testing.assert_allclose(avatar.mouth[0], PORTRAIT_MOUTH, atol=4)
    np.testing.assert_array_equal(avatar.frames[0], portrait())


@pytest.mark.parametrize(
    ("scale", "dx", "dy"), [(1.0, 37.0, -21.0), (1.4, 0.0, 0.0), (0.75, 10.0, 5.0)]
)
def test_transformed_portrait_moves_the_landmarks(
    tmp_path: Path, scale: float, dx: float, dy: float
) -> None:
    image = portrait()
    m = np.float32([[scale, 0, dx], [0, scale, dy]])
    size = (int(512 * scale), int(512 * scale))
    moved = cv2.warpAffine(image, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    avatar = prepare_avatar(write_image(tmp_path / "p.png", moved), "t", tmp_path / "av", STILL)
    expected = PORTRAIT_MOUTH * scale + np.float32([dx, dy])
    np.testing.assert_allclose(avatar.mouth[0], expected, atol=4 * scale)
    box = PORTRAIT_FACE * scale + np.array([dx, dy, dx, dy])
    np.testing.assert_allclose(avatar.face_boxes[0], box, atol=4 * scale)


def test_portrait_on_larger_canvas_is_downscaled_to_max_size(tmp_path: Path) -> None:
    canvas = np.full((900, 1200, 3), 200, np.uint8)
    canvas[300:812, 500:1012] = portrait()
    source = write_image(tmp_path / "canvas.jpg", canvas)
    avatar = prepare_avatar(
        source, "canvas", tmp_path / "av", PrepareOptions(idle_seconds=0, max_size_px=900)
    )
    assert avatar.size_wh == (900, 675)
    expected = (PORTRAIT_MOUTH + np.float32([500, 300])) * 0.75
    np.testing.assert_allclose(avatar.mouth[0], expected, atol=4)


def test_idle_motion_loops_and_landmarks_follow_the_warp(tmp_path: Path) -> None:
    avatar = prepare_avatar(PORTRAIT, "idle", tmp_path, PrepareOptions(idle_seconds=1.0, fps=25))
    assert avatar.frame_count == 25
    frames = avatar.frames.astype(np.int16)
    steps = [np.abs(frames[i] - frames[(i + 1) % 25]).mean() for i in range(25)]
    seam = steps[-1]
    assert seam <= 1.5 * float(np.median(steps[:-1])) + 0.05
    # Subtle: the mouth moves a few px at most, and the landmarks move with it.
    drift = np.abs(avatar.mouth - avatar.mouth[:1]).max()
    assert 0.3 < drift < 5
    for i in (0, 6, 12, 18):
        redo = prepare_avatar(
            _frame_file(tmp_path, avatar.frames[i]), f"f{i}", tmp_path / "redo", STILL
        )
        np.testing.assert_allclose(redo.mouth[0], avatar.mouth[i], atol=3)


def _frame_file(tmp_path: Path, frame: np.ndarray) -> Path:
    return write_image(tmp_path / f"frame{id(frame)}.png", np.asarray(frame))


def test_video_is_resampled_tracked_smoothed_and_loops(tmp_path: Path) -> None:
    frames = moving_portrait_frames(30, step_px=2.0)
    source = write_video(tmp_path / "pan.mp4", frames, fps=30)
    avatar = prepare_avatar(source, "pan", tmp_path / "av", PrepareOptions(fps=25))
    # 1 s at 30 fps -> 25 frames at 25 fps -> ping-pong 25 + 23.
    assert avatar.fps == 25
    assert avatar.frame_count == 48
    assert avatar.size_wh == (384, 384)
    # Output frame k shows source frame round(k * 30 / 25); the face pans 2 px per source frame.
    for k in (0, 5, 12, 24):
        src = round(k * 30 / 25)
        expected = PORTRAIT_MOUTH + np.float32([-64 + 2 * src, -20])
        np.testing.assert_allclose(avatar.mouth[k], expected, atol=5)
        box = PORTRAIT_FACE + np.array([-64 + 2 * src, -20, -64 + 2 * src, -20])
        np.testing.assert_allclose(avatar.face_boxes[k], box, atol=6)
    # Smoothed: the box centre moves monotonically on the forward half.
    cx = avatar.face_boxes[:25, [0, 2]].mean(axis=1)
    assert np.all(np.diff(cx) >= 0)
    # Ping-pong: played backwards after the turn, and the seam is an ordinary step.
    np.testing.assert_array_equal(avatar.frames[25], avatar.frames[23])
    f = avatar.frames.astype(np.int16)
    steps = np.array([np.abs(f[i] - f[(i + 1) % 48]).mean() for i in range(48)])
    assert steps[-1] <= steps[:-1].max()


def test_webm_video(tmp_path: Path) -> None:
    frames = moving_portrait_frames(10, step_px=1.0, size=320)
    source = write_video(tmp_path / "clip.webm", frames, fps=25, codec="libvpx")
    avatar = prepare_avatar(source, "webm", tmp_path / "av", PrepareOptions(fps=25))
    assert avatar.frame_count == 18
    np.testing.assert_allclose(avatar.mouth[0], PORTRAIT_MOUTH + np.float32([-64, -20]), atol=5)


def test_progress_is_reported_per_video_frame(tmp_path: Path) -> None:
    source = write_video(tmp_path / "p.mp4", moving_portrait_frames(8, size=320), fps=25)
    seen = []
    prepare_avatar(source, "p", tmp_path / "av", progress=seen.append)
    assert [p.done for p in seen] == list(range(1, 9))
    assert seen[-1].total == 8


def test_default_avatar_is_prepared_on_first_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "source.jpg").write_bytes(PORTRAIT.read_bytes())
    with caplog.at_level(logging.INFO):
        avatar = ensure_default_avatar(tmp_path)
    assert "preparing the default avatar" in caplog.text
    assert avatar.name == "default"
    assert avatar.frame_count > 1  # idle motion
    assert avatar.manifest["source"]["path"] == "source.jpg"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = ensure_default_avatar(tmp_path)
    assert "preparing" not in caplog.text
    np.testing.assert_array_equal(again.face_boxes, avatar.face_boxes)


def test_default_avatar_without_its_own_source_is_prepared_from_the_shipped_one(
    tmp_path: Path,
) -> None:
    from streamer.resources import locate

    shipped = locate().shipped_default_source
    mtime_ns = shipped.stat().st_mtime_ns
    avatar = ensure_default_avatar(tmp_path / "user-avatars")  # a fresh per-user folder
    assert avatar.cache_path == tmp_path / "user-avatars" / "default" / "cache"
    assert avatar.manifest["source"]["path"] == str(shipped)  # outside the folder: absolute
    assert shipped.stat().st_mtime_ns == mtime_ns  # only read
    assert not (tmp_path / "user-avatars" / "default" / "source.jpg").exists()


# ---- bad input: one clear sentence, a typed error, nothing left behind ----


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "a.b", "", "a\\b", "-x", "x" * 65])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidAvatarNameError, match="invalid avatar name"):
        prepare_avatar(PORTRAIT, name, tmp_path / "av", STILL)
    with pytest.raises(InvalidAvatarNameError):
        load_avatar(name, tmp_path / "av")
    _only_nothing_left(tmp_path / "av")


def test_not_an_image_or_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a picture\n" * 20)
    with pytest.raises(UnreadableSourceError, match="not a readable image or video"):
        prepare_avatar(text, "x", tmp_path / "av", STILL)
    fake_jpg = tmp_path / "fake.jpg"
    fake_jpg.write_text("not a jpeg")
    with pytest.raises(UnreadableSourceError, match="not a readable image"):
        prepare_avatar(fake_jpg, "x", tmp_path / "av", STILL)
    with pytest.raises(UnreadableSourceError, match="does not exist"):
        prepare_avatar(tmp_path / "missing.png", "x", tmp_path / "av", STILL)
    _only_nothing_left(tmp_path / "av")


def test_corrupt_video(tmp_path: Path) -> None:
    good = write_video(tmp_path / "good.mp4", moving_portrait_frames(10, size=320), fps=25)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(5000))
    with pytest.raises(UnreadableSourceError, match="corrupt\\.mp4"):
        prepare_avatar(corrupt, "x", tmp_path / "av")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:400])
    with pytest.raises(UnreadableSourceError):
        prepare_avatar(truncated, "x", tmp_path / "av")
    _only_nothing_left(tmp_path / "av")


def test_no_face(tmp_path: Path) -> None:
    blank = write_image(tmp_path / "blank.png", np.full((400, 400, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="no face found"):
        prepare_avatar(blank, "x", tmp_path / "av", STILL)
    _only_nothing_left(tmp_path / "av")


def test_face_too_small(tmp_path: Path) -> None:
    tiny = cv2.resize(portrait(), (256, 256), interpolation=cv2.INTER_AREA)  # face ~47 px
    with pytest.raises(FaceTooSmallError, match="under 64 px"):
        prepare_avatar(write_image(tmp_path / "tiny.png", tiny), "x", tmp_path / "av", STILL)
    _only_nothing_left(tmp_path / "av")


def test_several_faces_largest_or_face_index(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = portrait()
    small = cv2.resize(image, (410, 410), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 1000, 3), 235, np.uint8)
    canvas[:, :512] = image
    canvas[51:461, 560:970] = small
    source = write_image(tmp_path / "two.png", canvas)
    big = PrepareOptions(idle_seconds=0, max_size_px=1000)
    with caplog.at_level(logging.WARNING):
        largest = prepare_avatar(source, "two", tmp_path / "av", big)
    assert "2 faces" in caplog.text
    np.testing.assert_allclose(largest.mouth[0], PORTRAIT_MOUTH, atol=4)
    second = prepare_avatar(
        source,
        "two",
        tmp_path / "av",
        PrepareOptions(idle_seconds=0, max_size_px=1000, face_index=1, force=True),
    )
    np.testing.assert_allclose(
        second.mouth[0], PORTRAIT_MOUTH * 0.8 + np.float32([560, 51]), atol=4
    )
    with pytest.raises(NoFaceError, match="--face-index 2"):
        prepare_avatar(
            source,
            "two",
            tmp_path / "av",
            PrepareOptions(idle_seconds=0, max_size_px=1000, face_index=2, force=True),
        )


def test_existing_cache_needs_force_and_failure_keeps_the_old_one(tmp_path: Path) -> None:
    first = prepare_avatar(PORTRAIT, "a", tmp_path, STILL)
    with pytest.raises(AvatarExistsError, match="--force"):
        prepare_avatar(PORTRAIT, "a", tmp_path, STILL)
    blank = write_image(tmp_path / "blank.png", np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(NoFaceError):
        prepare_avatar(blank, "a", tmp_path, PrepareOptions(idle_seconds=0, force=True))
    np.testing.assert_array_equal(load_avatar("a", tmp_path).face_boxes, first.face_boxes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "blank.png"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["cache"]


def test_cli_prepare_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "av")
    assert (
        main(["prepare", str(PORTRAIT), "--name", "cli", "--root", root, "--idle-seconds", "0"])
        == 0
    )
    assert "prepared cli: 1 frames, 512x512, 25 fps" in capsys.readouterr().out
    assert main(["avatars", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "cli" in out
    assert "512x512" in out
    assert main(["prepare", str(PORTRAIT), "--name", "a.b", "--root", root]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "invalid avatar name" in err
