"""An avatar's MuseTalk latents, computed once per VAE encoder and cached beside the avatar.

MuseTalk's UNet reads, for each avatar frame, the VAE latents of the frame's 256² crop with its
lower half blanked and of the whole crop (``[8, 32, 32]``). They depend on the frames, the crop
geometry and the VAE encoder's weights, so they live under the avatar's cache as
``musetalk/<encoder key>/latents.npy`` with ``info.json`` beside it, and are memory-mapped on
later loads: loading a prepared avatar never runs the VAE encoder again. The encoder is a seam
(:class:`LatentEncoder`); the MuseTalk engine is one. Synchronous.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.avatar.cache import Avatar, crop_conventions_record
from streamer.avatar.crops import AvatarCrops
from streamer.avatar.errors import AvatarCacheError
from streamer.crop import CropConvention

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

LATENTS_FORMAT_VERSION = 1
MUSETALK_DIR = "musetalk"
CROP_SIZE_PX = 256
LATENT_SHAPE = (8, 32, 32)


class LatentEncoder(Protocol):
    """What computes latents: ``latent_key`` names its weights."""

    @property
    def latent_key(self) -> str: ...

    def encode_crops(self, crops_bgr: U8) -> F32: ...


def latents_dir(avatar: Avatar, key: str) -> Path:
    return avatar.cache_path / MUSETALK_DIR / key[:16]


def _avatar_fingerprint(avatar: Avatar) -> str:
    """What the crops depend on: the source, the frames' layout and every frame's landmarks."""
    manifest = avatar.manifest
    parts = [
        manifest.get("source", {}).get("sha256"),
        manifest.get("arrays", {}).get("frames"),
        manifest.get("face_boxes"),
        manifest.get("mouth"),
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _expected_info(avatar: Avatar, key: str) -> dict[str, object]:
    return {
        "format_version": LATENTS_FORMAT_VERSION,
        "encoder_key": key,
        "frame_count": avatar.frame_count,
        "avatar": _avatar_fingerprint(avatar),
        "crop": crop_conventions_record()[CropConvention.MUSETALK.value],
        "shape": [avatar.frame_count, *LATENT_SHAPE],
    }


def musetalk_crops(avatar: Avatar) -> AvatarCrops:
    """The avatar's 256² MuseTalk crops, boxes and blend masks (computed once, in memory)."""
    return avatar.crops(CropConvention.MUSETALK, CROP_SIZE_PX)


def load_latents(avatar: Avatar, key: str) -> F32 | None:
    """The cached latents ``[N, 8, 32, 32]`` (read-only memmap), or None when there are none
    for this encoder key, frames and crop geometry."""
    directory = latents_dir(avatar, key)
    try:
        info = json.loads((directory / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info != _expected_info(avatar, key):
        logger.info("avatar %s: cached MuseTalk latents are stale; computing them", avatar.name)
        return None
    try:
        latents = np.load(directory / "latents.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if latents.shape != (avatar.frame_count, *LATENT_SHAPE) or latents.dtype != np.float32:
        return None
    result: F32 = latents
    return result


def prepare_latents(avatar: Avatar, encoder: LatentEncoder, batch: int = 8) -> F32:
    """The avatar's latents for ``encoder``: loaded from the cache, or computed in batches of
    ``batch`` crops and cached (written to a temporary name, then renamed, so a crash leaves
    no half-written cache). Raises :class:`AvatarCacheError` when the cache cannot be written.
    """
    key = encoder.latent_key
    cached = load_latents(avatar, key)
    if cached is not None:
        return cached
    crops = musetalk_crops(avatar)
    latents = np.empty((avatar.frame_count, *LATENT_SHAPE), np.float32)
    for start in range(0, avatar.frame_count, batch):
        stop = min(avatar.frame_count, start + batch)
        latents[start:stop] = encoder.encode_crops(np.asarray(crops.faces[start:stop]))
    directory = latents_dir(avatar, key)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / "latents.npy.partial"
        with partial.open("wb") as f:
            np.save(f, latents, allow_pickle=False)
        os.replace(partial, directory / "latents.npy")
        info = json.dumps(_expected_info(avatar, key), indent=2)
        (directory / "info.json").write_text(info + "\n", encoding="utf-8")
    except OSError as exc:
        raise AvatarCacheError(
            f"cannot cache MuseTalk latents of avatar {avatar.name!r} in {directory}: {exc}"
        ) from exc
    logger.info("avatar %s: MuseTalk latents of %d frames cached", avatar.name, avatar.frame_count)
    latents.flags.writeable = False
    return latents
