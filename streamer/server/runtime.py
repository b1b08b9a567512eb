"""Load what serving needs before the first peer: the engine, the avatars, a warm renderer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamer.avatar import ensure_default_avatar, load_avatar
from streamer.engine import EngineOptions, LipSyncEngine
from streamer.server.app import Runtime
from streamer.server.lipsync import AvatarLibrary, LipSyncRenderer
from streamer.server.pipeline import FrameJob, JobKind
from streamer.server.render import RenderRequest

log = logging.getLogger(__name__)


def build_runtime(
    avatars_root: Path,
    avatar: str = "default",
    model: Path | None = None,
    options: EngineOptions | None = None,
) -> Runtime:
    """Load and warm the model, load (or prepare, for the default) the avatar, warm the path."""
    engine = LipSyncEngine(model, options or EngineOptions())
    info = engine.info
    log.info(
        "model %s (%s): face %d px, crop %s, providers %s",
        info.name,
        info.source,
        info.face_size_px,
        info.crop.value,
        ", ".join(info.providers),
    )
    library = AvatarLibrary(avatars_root, info.face_size_px, engine)
    first = (
        ensure_default_avatar(avatars_root)
        if avatar == "default"
        else load_avatar(avatar, avatars_root)
    )
    library.add(first)
    renderer = LipSyncRenderer(engine, library)
    # One full render so the first real tick pays no first-call costs.
    window = np.full((80, 16), -1.0, np.float32)
    job = FrameJob(
        JobKind.RENDER, 0, 0, np.zeros(640, np.float32), input_frame=0, window=window, strength=1.0
    )
    renderer.render([RenderRequest(first.name, job, None)])
    return Runtime(
        renderer=renderer,
        model={
            "name": info.name,
            "source": info.source,
            "provider": info.providers[0] if info.providers else None,
            "providers": list(info.providers),
            "face_size_px": info.face_size_px,
            "crop": info.crop.value,
        },
        mel_frame_offset=info.mel_frame_offset,
        load_avatar=library.get,
    )
