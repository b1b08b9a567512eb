"""The prepared-avatar cache on disk and the :class:`Avatar` loaded from it.

Layout: ``ROOT/NAME/cache/manifest.json`` (format version, source fingerprint, fps, sizes,
per-frame face boxes and mouth landmarks, crop conventions, array inventory) and
``ROOT/NAME/cache/frames.npy`` ([N,H,W,3] uint8 BGR, memory-mapped read-only on load, so
loading costs a JSON parse and an mmap, not a decode). A cache is validated completely before
anything is returned: another format version, a changed source, or an array file of the wrong
size raises :class:`AvatarCacheError` and nothing is half-read. Synchronous; an :class:`Avatar`
is read-only and may be shared between threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.avatar.crops import AvatarCrops, compute_crops
from streamer.avatar.errors import AvatarCacheError, AvatarNotFoundError, InvalidAvatarNameError
from streamer.crop import (
    MOUTH_CENTER_X,
    MOUTH_CENTER_Y,
    MOUTH_WIDTH,
    MUSETALK_BOTTOM_PAD_PX,
    MUSETALK_BRIDGE_ABOVE_LIP,
    WAV2LIP_BOTTOM_PAD_PX,
    CropConvention,
)
from streamer.names import NAME_RULE, is_valid_name

logger = logging.getLogger(__name__)

# Bump when the manifest or array layout changes; older caches are then refused, not guessed at.
FORMAT_VERSION = 1
CACHE_DIR = "cache"
MANIFEST = "manifest.json"
FRAMES_FILE = "frames.npy"

NOT_PREPARED = "not prepared"  # list_avatars' status of a folder without a cache


def validate_name(name: str) -> str:
    """Returns ``name`` if it is a plain folder name; raises :class:`InvalidAvatarNameError`."""
    if not is_valid_name(name):
        raise InvalidAvatarNameError(f"invalid avatar name {name!r}: use {NAME_RULE}")
    return name


def cache_dir(root: Path, name: str) -> Path:
    return root / validate_name(name) / CACHE_DIR


def crop_conventions_record() -> dict[str, Any]:
    """The crop geometry this code cuts crops with, recorded in each manifest for reference."""
    return {
        CropConvention.WAV2LIP.value: {"bottom_pad_px": WAV2LIP_BOTTOM_PAD_PX},
        CropConvention.MOUTH.value: {
            "center_x": MOUTH_CENTER_X,
            "center_y": MOUTH_CENTER_Y,
            "width": MOUTH_WIDTH,
        },
        CropConvention.MUSETALK.value: {
            "bottom_pad_px": MUSETALK_BOTTOM_PAD_PX,
            "bridge_above_lip": MUSETALK_BRIDGE_ABOVE_LIP,
        },
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_record(source: Path, avatar_dir: Path) -> dict[str, Any]:
    """Fingerprint of a source file: path (relative to the avatar folder when inside it),
    sha256, size and mtime (a cheap pre-check before rehashing on load)."""
    resolved = source.resolve()
    try:
        path = str(resolved.relative_to(avatar_dir.resolve()))
    except ValueError:
        path = str(resolved)
    st = resolved.stat()
    return {
        "path": path,
        "sha256": file_sha256(resolved),
        "size_bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


@dataclass(frozen=True, eq=False)
class Avatar:
    """A prepared avatar: looping frames and, per frame, the face box and mouth landmarks.

    ``frames`` [N,H,W,3] uint8 BGR (read-only memmap); ``face_boxes`` [N,4] int32 (x0, y0, x1,
    y1 px, smoothed); ``mouth`` [N,4,2] float32 (x, y px of left corner, right corner, upper
    lip centre, lower lip centre; pixel-centre coordinates). Frame ``i`` follows frame ``i-1``
    and frame 0 follows frame N-1 without a jump.
    """

    name: str
    fps: int
    frames: npt.NDArray[np.uint8]
    frame_count: int
    size_wh: tuple[int, int]
    face_boxes: npt.NDArray[np.int32]
    mouth: npt.NDArray[np.float32]
    cache_path: Path
    manifest: dict[str, Any] = field(repr=False)
    _crops: dict[tuple[CropConvention, int], AvatarCrops] = field(
        default_factory=dict, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def crops(self, convention: CropConvention, size_px: int) -> AvatarCrops:
        """Reference crops and blend masks for a model; computed once per (convention, size)
        and kept in memory (a few ms per 100 frames at 96 px). Thread-safe."""
        key = (convention, int(size_px))
        with self._lock:
            found = self._crops.get(key)
            if found is None:
                found = compute_crops(convention, key[1], self.frames, self.face_boxes, self.mouth)
                self._crops[key] = found
            return found


def _stale(name: str, why: str) -> AvatarCacheError:
    return AvatarCacheError(
        f"the cache of avatar {name!r} {why}; "
        f"run `avatar-streamer prepare ... --name {name} --force`"
    )


def read_manifest(root: Path, name: str) -> dict[str, Any]:
    """The parsed manifest of ``name``; raises AvatarNotFoundError or AvatarCacheError."""
    path = cache_dir(root, name) / MANIFEST
    if not path.is_file():
        raise AvatarNotFoundError(
            f"no prepared avatar {name!r} under {root}: run `avatar-streamer prepare SOURCE "
            f"--name {name}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _stale(name, f"has an unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise _stale(name, "has a malformed manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _stale(name, f"has format version {version}, this version reads {FORMAT_VERSION}")
    return manifest


def _check_source(name: str, record: dict[str, Any], avatar_dir: Path) -> None:
    path = Path(record["path"])
    if not path.is_absolute():
        path = avatar_dir / path
    try:
        st = path.stat()
    except OSError:
        # The source may be gone (a video the user deleted); the cache stands on its own.
        logger.debug("source %s of avatar %s is gone; using the cache as it is", path, name)
        return
    if st.st_size == record["size_bytes"] and st.st_mtime_ns == record["mtime_ns"]:
        return
    if file_sha256(path) != record["sha256"]:
        raise _stale(name, f"was prepared from another version of {path}")


def load_avatar(name: str, root: Path) -> Avatar:
    """Load a prepared avatar (well under a second: a JSON parse and an mmap).

    Raises :class:`InvalidAvatarNameError`, :class:`AvatarNotFoundError`, or
    :class:`AvatarCacheError` (another format version, a changed source, damaged files).
    """
    manifest = read_manifest(root, name)
    directory = cache_dir(root, name)
    try:
        _check_source(name, manifest["source"], directory.parent)
        n = int(manifest["frame_count"])
        width, height = (int(v) for v in manifest["frame_size_wh"])
        fps = int(manifest["fps"])
        boxes = np.asarray(manifest["face_boxes"], dtype=np.int32)
        mouth = np.asarray(manifest["mouth"], dtype=np.float32)
        spec = manifest["arrays"]["frames"]
        frames_path = directory / spec["file"]
        expected_shape = (n, height, width, 3)
        if tuple(spec["shape"]) != expected_shape or spec["dtype"] != "uint8":
            raise _stale(name, f"lists frames of shape {spec['shape']}, expected {expected_shape}")
        if not frames_path.is_file() or frames_path.stat().st_size != int(spec["size_bytes"]):
            raise _stale(name, f"has a missing or truncated {frames_path.name}")
        frames = np.load(frames_path, mmap_mode="r", allow_pickle=False)
    except AvatarCacheError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise _stale(name, f"is damaged ({type(exc).__name__}: {exc})") from exc
    if frames.shape != expected_shape or frames.dtype != np.uint8:
        raise _stale(name, f"holds frames {frames.shape} {frames.dtype}, expected {expected_shape}")
    if boxes.shape != (n, 4) or mouth.shape != (n, 4, 2) or n < 1 or fps < 1:
        raise _stale(name, "has per-frame landmarks that do not match its frame count")
    boxes.flags.writeable = False
    mouth.flags.writeable = False
    return Avatar(
        name=name,
        fps=fps,
        frames=frames,
        frame_count=n,
        size_wh=(width, height),
        face_boxes=boxes,
        mouth=mouth,
        cache_path=directory,
        manifest=manifest,
    )


def list_avatars(root: Path) -> list[tuple[str, dict[str, Any] | None, str]]:
    """``(name, manifest or None, status)`` for every folder under ``root`` with a valid name;
    status is ``"ok"``, :data:`NOT_PREPARED` or the one-sentence reason a load would fail."""
    found: list[tuple[str, dict[str, Any] | None, str]] = []
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if not child.is_dir() or not is_valid_name(child.name):
            continue
        try:
            manifest = read_manifest(root, child.name)
        except AvatarNotFoundError:
            found.append((child.name, None, NOT_PREPARED))
            continue
        except AvatarCacheError as exc:
            found.append((child.name, None, str(exc)))
            continue
        found.append((child.name, manifest, "ok"))
    return found
