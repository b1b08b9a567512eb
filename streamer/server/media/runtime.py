"""Load what serving needs before the first peer: the engine, the avatars, a warm renderer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.avatar import ensure_default_avatar, load_avatar
from streamer.engine import EngineOptions, LipSyncEngine
from streamer.playout.pipeline import FrameJob, JobKind
from streamer.server.media.lipsync import AvatarLibrary, LipSyncRenderer
from streamer.server.media.renderer import Renderer, RenderRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What serving needs that is loaded before the first peer: the model and avatars."""

    renderer: Renderer
    model: dict[str, Any]  # name, source, provider, face size... for /health
    mel_frame_offset: int
    load_avatar: Callable[[str], object]  # raises AvatarError; loads (blocking) on first use


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
        kind=JobKind.RENDER,
        output_index=0,
        avatar_frame=0,
        audio_16k=np.zeros(640, np.float32),
        input_frame=0,
        window=window,
        strength=1.0,
    )
    renderer.render([RenderRequest(avatar=first.name, job=job, previous=None)])
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
