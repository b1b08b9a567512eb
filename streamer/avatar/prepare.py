"""``prepare``: turn a photo or a video into an avatar cache, once, off the real-time path.

Synchronous and CPU-bound (seconds for a photo, about 20-60 ms per video frame). Steps: read the
source (cv2 for photos, PyAV for videos, resampled to the target fps), scale to ``max_size_px``,
find the face (largest, or ``face_index``) and track it, smooth the boxes and mouth landmarks
over time, make the sequence loop (a still gets a subtle breathing motion; a video plays forward
then backward), and write the cache into a temporary folder under the root that is renamed into
place at the end, so a failure leaves nothing half-written.

Over 400 lines as one pipeline read top to bottom (source, faces, landmarks, smoothing, loop,
write); its detectors live in :mod:`streamer.avatar.detect`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from streamer.avatar.cache import (
    CACHE_DIR,
    FORMAT_VERSION,
    FRAMES_FILE,
    MANIFEST,
    Avatar,
    cache_dir,
    crop_conventions_record,
    load_avatar,
    source_record,
    validate_name,
)
from streamer.avatar.detect import MIN_FACE_PX, FaceBox, FaceLocator, default_locator
from streamer.avatar.errors import (
    AvatarExistsError,
    FaceTooSmallError,
    NoFaceError,
    UnreadableSourceError,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one ``prepare`` run."""

    fps: int = 25
    max_size_px: int = 720  # longest side of the stored frames
    face_index: int | None = None  # index among faces sorted largest first; None: largest
    force: bool = False  # replace an existing cache
    max_seconds: float = 10.0  # video: source seconds kept (the cache holds twice that)
    idle_seconds: float = 3.2  # still: length of the breathing loop; 0 for a single frame
    locator: str = "auto"  # "auto" (mediapipe when installed, else Haar) or "haar"


@dataclass(frozen=True)
class PrepareProgress:
    """Reported after each prepared frame; ``total`` is an estimate (None when unknown)."""

    done: int
    total: int | None
    elapsed_s: float


ProgressCallback = Callable[[PrepareProgress], None]


def _fit(frame: Frame, max_size_px: int) -> Frame:
    h, w = frame.shape[:2]
    scale = max_size_px / max(h, w)
    if scale >= 1.0:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _read_image(source: Path) -> Frame | None:
    data = np.fromfile(source, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else np.asarray(image, dtype=np.uint8)


def _video_frames(source: Path, fps: int, max_seconds: float) -> tuple[Iterator[Frame], int | None]:
    """Frames resampled to ``fps`` (nearest source frame in time) and an estimated count."""
    import av  # PyAV: only prepare decodes video

    try:
        container = av.open(str(source))
        if container.format.name == "tty":
            # FFmpeg renders any text file as an ANSI-art "video": not a source.
            container.close()
            raise ValueError("text, not video")
        stream = container.streams.video[0]
    except (av.FFmpegError, IndexError, OSError, ValueError) as exc:
        what = "video" if source.suffix.lower() in VIDEO_SUFFIXES else "image or video"
        raise UnreadableSourceError(f"{source} is not a readable {what} ({exc})") from exc
    duration_s: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration_s = container.duration / 1e6
    total = None if duration_s is None else max(1, int(min(duration_s, max_seconds) * fps))

    def frames() -> Iterator[Frame]:
        period = 1.0 / fps
        k = 0  # next output frame, due at k * period after the first source frame
        prev: tuple[float, Frame] | None = None
        t_first: float | None = None
        try:
            for i, vf in enumerate(container.decode(stream)):
                t = vf.time if vf.time is not None else i / float(stream.average_rate or 25)
                t_first = t if t_first is None else t_first
                t -= t_first
                img = np.asarray(vf.to_ndarray(format="bgr24"), dtype=np.uint8)
                while k * period <= t and k * period < max_seconds:
                    due = k * period
                    if prev is not None and due - prev[0] <= t - due:
                        yield prev[1]
                    else:
                        yield img
                    k += 1
                if k * period >= max_seconds:
                    break
                prev = (t, img)
            if prev is not None and k == 0:
                yield prev[1]
        except av.FFmpegError as exc:
            raise UnreadableSourceError(f"{source} is a corrupt video ({exc})") from exc
        finally:
            container.close()

    return frames(), total


def _choose_face(faces: list[FaceBox], face_index: int | None, source: Path) -> FaceBox:
    if not faces:
        raise NoFaceError(f"no face found in {source}: use a frontal photo with the face visible")
    if faces[0].width_px < MIN_FACE_PX:
        raise FaceTooSmallError(
            f"the face in {source} is {faces[0].width_px:.0f} px wide, under {MIN_FACE_PX} px: "
            "use a closer or larger picture"
        )
    usable = [f for f in faces if f.width_px >= MIN_FACE_PX]
    if face_index is not None:
        if not 0 <= face_index < len(usable):
            raise NoFaceError(
                f"--face-index {face_index} asked for, but {source} has {len(usable)} usable "
                f"face(s) (0 is the largest)"
            )
        return usable[face_index]
    if len(usable) > 1:
        logger.warning(
            "%d faces in %s; using the largest (choose another with --face-index 0..%d)",
            len(usable),
            source,
            len(usable) - 1,
        )
    return usable[0]


def smooth_track(values: npt.NDArray[np.float64], sigma_frames: float) -> npt.NDArray[np.float64]:
    """Gaussian smoothing along axis 0. values [N,...].

    The ends are extended by point reflection (2*end - mirrored values), which keeps steady
    motion unbiased: landmarks near the ends still follow the pictures instead of lagging.
    """
    n = values.shape[0]
    if n < 3 or sigma_frames <= 0:
        return values.copy()
    radius = max(1, min(n - 1, int(3 * sigma_frames)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    taps /= taps.sum()
    head = 2 * values[:1] - values[radius:0:-1]
    tail = 2 * values[-1:] - values[-2 : -radius - 2 : -1]
    padded = np.concatenate([head, values, tail], axis=0)
    out = np.zeros_like(values)
    for j, tap in enumerate(taps):
        out += tap * padded[j : j + n]
    return out


def _idle_transforms(frame: Frame, face: FaceBox, n: int) -> list[npt.NDArray[np.float64]]:
    """n affine [2,3] matrices of a slow breathing sway that loops exactly over n frames:
    a scale of +-0.6% about a point below the face, 1.2 px of rise and 0.8 px of sway."""
    h = frame.shape[0]
    anchor = (0.5 * (face.x0 + face.x1), min(h - 1.0, face.y1 + 1.5 * face.height_px))
    mats = []
    for k in range(n):
        phase = 2.0 * math.pi * k / n
        m = cv2.getRotationMatrix2D(anchor, 0.3 * math.sin(phase), 1.0 + 0.006 * math.sin(phase))
        m[0, 2] += 0.8 * math.sin(phase + math.pi / 3)
        m[1, 2] -= 1.2 * math.sin(phase)
        mats.append(np.asarray(m, dtype=np.float64))
    return mats


def _transform_points(
    m: npt.NDArray[np.float64], pts: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = pts @ m[:, :2].T + m[:, 2]
    return out


class _FrameWriter:
    """Appends frames to a raw file, then lays them out as the final looping frames.npy."""

    def __init__(self, directory: Path) -> None:
        self._raw_path = directory / "frames.raw"
        self._raw = self._raw_path.open("wb")
        self.count = 0
        self.shape: tuple[int, ...] | None = None

    def append(self, frame: Frame) -> None:
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise UnreadableSourceError(f"the video changes frame size mid-stream ({frame.shape})")
        self._raw.write(np.ascontiguousarray(frame).tobytes())
        self.count += 1

    def appended(self) -> npt.NDArray[np.uint8]:
        """Read-only view [n,H,W,3] of the frames appended so far."""
        self._raw.flush()
        assert self.shape is not None
        return np.memmap(self._raw_path, dtype=np.uint8, mode="r", shape=(self.count, *self.shape))

    def finish(self, order: list[int], path: Path) -> int:
        """Write frames in ``order`` (indices into the appended ones) to ``path``; its bytes."""
        self._raw.close()
        assert self.shape is not None
        raw = np.memmap(self._raw_path, dtype=np.uint8, mode="r", shape=(self.count, *self.shape))
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(len(order), *self.shape)
        )
        for i, j in enumerate(order):
            out[i] = raw[j]
        out.flush()
        del out, raw
        self._raw_path.unlink()
        return path.stat().st_size

    def close(self) -> None:
        self._raw.close()


def prepare_avatar(
    source: Path,
    name: str,
    root: Path,
    options: PrepareOptions = PrepareOptions(),
    progress: ProgressCallback | None = None,
    locator: FaceLocator | None = None,
) -> Avatar:
    """Prepare ``source`` (photo or video) as avatar ``name`` under ``root``; returns it loaded.

    Raises :class:`InvalidAvatarNameError`, :class:`AvatarExistsError` (cache present and not
    ``force``), :class:`UnreadableSourceError`, :class:`NoFaceError`, :class:`FaceTooSmallError`.
    On any failure nothing new is left under ``root``.
    """
    validate_name(name)
    final = cache_dir(root, name)
    if final.exists() and not options.force:
        raise AvatarExistsError(
            f"avatar {name!r} is already prepared in {final}; add --force to replace it"
        )
    if not source.is_file():
        raise UnreadableSourceError(f"{source} does not exist or is not a file")
    suffix = source.suffix.lower()
    image = _read_image(source) if suffix not in VIDEO_SUFFIXES else None
    if image is None and suffix in IMAGE_SUFFIXES:
        raise UnreadableSourceError(f"{source} is not a readable image")
    loc = locator if locator is not None else default_locator(options.locator)

    root_existed = root.exists()
    avatar_dir_existed = final.parent.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.prepare-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder once renamed
    writer = _FrameWriter(tmp)
    try:
        if image is not None:
            meta = _prepare_still(_fit(image, options.max_size_px), source, options, loc, writer)
        else:
            frames, total = _video_frames(source, options.fps, options.max_seconds)
            meta = _prepare_video(frames, total, source, options, loc, writer, progress)
        frames_bytes = writer.finish(meta.pop("order"), tmp / FRAMES_FILE)
        h, w = writer.shape[:2] if writer.shape else (0, 0)
        n = len(meta["face_boxes"])
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": source_record(source, final.parent),
            "fps": options.fps,
            "frame_count": n,
            "frame_size_wh": [w, h],
            "crop_conventions": crop_conventions_record(),
            "locator": loc.name,
            "arrays": {
                "frames": {
                    "file": FRAMES_FILE,
                    "shape": [n, h, w, 3],
                    "dtype": "uint8",
                    "size_bytes": frames_bytes,
                }
            },
            **meta,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        final.parent.mkdir(exist_ok=True)
        if final.exists():
            old = final.with_name(f".{CACHE_DIR}.old-{time.monotonic_ns()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if not avatar_dir_existed and final.parent.exists() and not any(final.parent.iterdir()):
            final.parent.rmdir()
        if not root_existed and not any(root.iterdir()):
            root.rmdir()
        raise
    logger.info("prepared avatar %s: %d frames of %dx%d at %d fps", name, n, w, h, options.fps)
    return load_avatar(name, root)


def _landmark_lists(
    boxes: npt.NDArray[np.float64], mouth: npt.NDArray[np.float64]
) -> dict[str, Any]:
    return {
        "face_boxes": np.rint(boxes).astype(int).tolist(),
        "mouth": np.round(mouth, 2).tolist(),
    }


def _prepare_still(
    image: Frame, source: Path, options: PrepareOptions, loc: FaceLocator, writer: _FrameWriter
) -> dict[str, Any]:
    face = _choose_face(loc.faces(image), options.face_index, source)
    mouth = loc.mouth(image, face).astype(np.float64)
    n = max(1, round(options.idle_seconds * options.fps))
    if n == 1:
        writer.append(image)
        return {
            "loop": "still",
            "order": [0],
            **_landmark_lists(face.as_array()[None], mouth[None]),
        }
    h, w = image.shape[:2]
    boxes, mouths = [], []
    centre = np.array([[0.5 * (face.x0 + face.x1), 0.5 * (face.y0 + face.y1)]])
    for m in _idle_transforms(image, face, n):
        warped = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101
        )
        writer.append(np.asarray(warped, dtype=np.uint8))
        # The landmarks follow the very same warp; the box keeps its shape, moved and scaled.
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        cx, cy = _transform_points(m, centre)[0]
        hw, hh = 0.5 * face.width_px * scale, 0.5 * face.height_px * scale
        boxes.append([cx - hw, cy - hh, cx + hw, cy + hh])
        mouths.append(_transform_points(m, mouth))
    return {
        "loop": "idle",
        "order": list(range(n)),
        **_landmark_lists(np.array(boxes), np.array(mouths)),
    }


def _prepare_video(
    frames: Iterator[Frame],
    total: int | None,
    source: Path,
    options: PrepareOptions,
    loc: FaceLocator,
    writer: _FrameWriter,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    raw_boxes: list[FaceBox | None] = []
    last: FaceBox | None = None
    for frame in frames:
        frame = _fit(frame, options.max_size_px)
        if last is None:
            last = _choose_face(loc.faces(frame), options.face_index, source)
            found: FaceBox | None = last
        else:
            # Track: the detection overlapping the last box most, searched near it first.
            candidates = loc.faces(frame, near=last) or loc.faces(frame)
            best = max(candidates, key=last.iou, default=None)
            found = best if best is not None and best.iou(last) > 0.3 else None
            last = found or last
        raw_boxes.append(found)
        writer.append(frame)
        if progress is not None:
            progress(PrepareProgress(len(raw_boxes), total, time.perf_counter() - t0))
    if not raw_boxes:
        raise UnreadableSourceError(f"{source} has no decodable video frames")
    boxes = _fill_and_smooth([b.as_array() if b else None for b in raw_boxes], options.fps)
    # Mouth per frame inside the smoothed box, then smoothed in time as well.
    raw = writer.appended()
    mouths = np.stack(
        [
            loc.mouth(np.asarray(raw[i]), FaceBox(*(float(v) for v in boxes[i])))
            for i in range(len(boxes))
        ]
    ).astype(np.float64)
    del raw
    mouths = smooth_track(mouths, sigma_frames=0.06 * options.fps)
    n = len(boxes)
    # Ping-pong: forward then backward, so the last frame is a neighbour of the first.
    order = list(range(n)) + list(range(n - 2, 0, -1)) if n >= 3 else list(range(n))
    return {"loop": "pingpong", "order": order, **_landmark_lists(boxes[order], mouths[order])}


def _fill_and_smooth(
    boxes: list[npt.NDArray[np.float64] | None], fps: int
) -> npt.NDArray[np.float64]:
    """Interpolate frames without a detection, then smooth (sigma 0.08 s) centre and size."""
    idx = np.array([i for i, b in enumerate(boxes) if b is not None])
    known = np.stack([b for b in boxes if b is not None])
    all_idx = np.arange(len(boxes))
    filled = np.stack([np.interp(all_idx, idx, known[:, k]) for k in range(4)], axis=1)
    centre = 0.5 * (filled[:, :2] + filled[:, 2:])
    size = filled[:, 2:] - filled[:, :2]
    centre = smooth_track(centre, 0.08 * fps)
    size = smooth_track(size, 0.16 * fps)
    return np.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=1)
