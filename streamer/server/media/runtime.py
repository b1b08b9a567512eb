"""Load what serving needs before the first peer: the engine, the avatars, a warm renderer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from streamer.avatar import open_avatar
from streamer.engine import EngineOptions, LipSyncEngine
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.manifest import is_model_folder
from streamer.errors import ModelError
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


LIVE_FPS = 25


def refuse_musetalk(folder: Path, options: EngineOptions | None) -> NoReturn:
    """Load a MuseTalk folder, measure its live frame rate and refuse it with one sentence.

    Live MuseTalk calls are not built yet (``render`` runs MuseTalk); a model too slow for
    25 fps on this provider would be refused anyway, and the sentence says which applies.
    """
    engine = MuseTalkEngine(folder, options)
    fps = engine.frames_per_s()
    where = f"model {engine.name} renders {fps:.1f} frames per second on {engine.providers[0]}"
    if fps < LIVE_FPS:
        raise ModelError(
            f"{where}, below the {LIVE_FPS} a live call needs: render files with it "
            "(`avatar-streamer render --model ...`) or serve it from a GPU"
        )
    raise ModelError(
        f"{where}, enough for live calls, but this version runs MuseTalk models in "
        "`avatar-streamer render` only: live MuseTalk calls are not built yet"
    )


def build_runtime(
    avatars_root: Path,
    avatar: str = "default",
    model: Path | None = None,
    options: EngineOptions | None = None,
) -> Runtime:
    """Load and warm the model, load (or prepare, for the default) the avatar, warm the path.

    Raises :class:`ModelError` for a model that cannot be served (a MuseTalk folder: see
    :func:`refuse_musetalk`)."""
    if model is not None and is_model_folder(model):
        refuse_musetalk(model, options)
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
    first = open_avatar(avatar, avatars_root)
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
