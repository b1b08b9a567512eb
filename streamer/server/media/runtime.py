"""Load what serving needs before the first peer: the engine, the avatars, a warm renderer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.avatar import open_avatar
from streamer.engine import EngineOptions, LipSyncEngine
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.features import FPS
from streamer.engine.musetalk.manifest import FACE_SIZE_PX, is_model_folder
from streamer.engine.musetalk.streaming import (
    MEL_FRAME_OFFSET,
    EncoderInput,
    LiveFeatures,
    LiveFeatureSettings,
)
from streamer.errors import ModelError
from streamer.playout.pipeline import FrameJob, JobKind
from streamer.server.media.lipsync import (
    AvatarLibrary,
    LipSyncRenderer,
    MuseTalkFaces,
    Wav2LipFaces,
)
from streamer.server.media.renderer import Renderer, RenderRequest

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Runtime:
    """What serving needs that is loaded before the first peer: the model and avatars."""

    renderer: Renderer
    model: dict[str, Any]  # name, family, provider, face size... for /health
    mel_frame_offset: int
    load_avatar: Callable[[str], object]  # raises AvatarError; loads (blocking) on first use
    # A model that reads its own audio features (MuseTalk): how each session computes them.
    live_features: LiveFeatureSettings | None = None


LIVE_FPS = 25


def check_live_speed(name: str, frames_per_s: float, provider: str, allow_slow: bool) -> None:
    """Refuse, in one sentence, a model too slow for live calls (unless ``allow_slow``)."""
    where = f"model {name} renders {frames_per_s:.1f} frames per second on {provider}"
    if frames_per_s >= LIVE_FPS:
        return
    if not allow_slow:
        raise ModelError(
            f"{where}, below the {LIVE_FPS} a live call needs: serve it from a GPU, render "
            "files with it (`avatar-streamer render --model ...`), or pass --allow-slow-model "
            "to serve it anyway"
        )
    log.warning(
        "%s, below the %d a live call needs: serving it anyway (--allow-slow-model); "
        "calls will stutter and drop frames",
        where,
        LIVE_FPS,
    )


def build_runtime(
    avatars_root: Path,
    avatar: str = "default",
    model: Path | None = None,
    options: EngineOptions | None = None,
    *,
    allow_slow_model: bool = False,
) -> Runtime:
    """Load and warm the model, load (or prepare, for the default) the avatar, warm the path.

    A MuseTalk folder's live frame rate is measured first: below 25 fps it raises
    :class:`ModelError` (see :func:`check_live_speed`)."""
    if model is not None and is_model_folder(model):
        return _musetalk_runtime(avatars_root, avatar, model, options, allow_slow_model)
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
    faces = Wav2LipFaces(engine)
    library = AvatarLibrary(avatars_root, faces.prepare)
    first = library.add(open_avatar(avatar, avatars_root))
    renderer = LipSyncRenderer(faces, library)
    _warm_up(renderer, first.avatar.name, np.full((80, 16), -1.0, np.float32), None)
    return Runtime(
        renderer=renderer,
        model={
            "name": info.name,
            "family": "wav2lip",
            "source": info.source,
            "provider": info.providers[0] if info.providers else None,
            "providers": list(info.providers),
            "face_size_px": info.face_size_px,
            "crop": info.crop.value,
        },
        mel_frame_offset=info.mel_frame_offset,
        load_avatar=library.get,
    )


def _musetalk_runtime(
    avatars_root: Path,
    avatar: str,
    folder: Path,
    options: EngineOptions | None,
    allow_slow_model: bool,
) -> Runtime:
    engine = MuseTalkEngine(folder, options)
    settings = LiveFeatureSettings()
    frames_per_s = engine.frames_per_s(context_s=settings.context_s)
    check_live_speed(engine.name, frames_per_s, engine.providers[0], allow_slow_model)
    faces = MuseTalkFaces(engine)
    library = AvatarLibrary(avatars_root, faces.prepare)
    # Prepares the avatar's latents on first use (the VAE encoder), else loads them.
    first = library.add(open_avatar(avatar, avatars_root))
    renderer = LipSyncRenderer(faces, library)
    # A frame with a whole context, as every frame after the first seconds has.
    frame = round(settings.context_s * FPS)
    live = LiveFeatures(settings)
    live.push(np.zeros(live.samples_needed(frame), np.float32))
    encoder_input = live.encoder_input(frame)
    _warm_up(renderer, first.avatar.name, None, encoder_input)
    return Runtime(
        renderer=renderer,
        model={
            "name": engine.name,
            "family": "musetalk",
            "source": str(folder),
            "provider": engine.providers[0],
            "providers": list(engine.providers),
            "face_size_px": FACE_SIZE_PX,
            "crop": "musetalk",
            "frames_per_s": round(frames_per_s, 1),
        },
        mel_frame_offset=MEL_FRAME_OFFSET,
        load_avatar=library.get,
        live_features=settings,
    )


def _warm_up(
    renderer: Renderer, avatar: str, window: F32 | None, encoder_input: EncoderInput | None
) -> None:
    """One full render, so the first real tick pays no first-call costs."""
    job = FrameJob(
        kind=JobKind.RENDER,
        output_index=0,
        avatar_frame=0,
        audio_16k=np.zeros(640, np.float32),
        input_frame=0,
        window=window,
        encoder_input=encoder_input,
        strength=1.0,
    )
    renderer.render([RenderRequest(avatar=avatar, job=job, previous=None)])
