"""The real renderer: one batched model call per tick for every session, then the compositor.

A model family (:class:`Wav2LipFaces`, :class:`MuseTalkFaces`) says how an avatar is prepared
for it (crops; MuseTalk also the VAE latents) and how one tick's faces are generated in one
batch; :class:`LipSyncRenderer` does the rest, the same for both. Runs in the inference
executor thread, never on the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from streamer.avatar import Avatar, AvatarCrops, composite, load_avatar
from streamer.engine import LipSyncEngine
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.features import D_MODEL, WINDOW_TOKENS
from streamer.engine.musetalk.streaming import EncoderInput, frame_audio
from streamer.offline.musetalk import MuseTalkRenderer
from streamer.offline.render import FrameRenderer
from streamer.offline.render import Renderer as ClipFrames
from streamer.playout.pipeline import FrameJob, JobKind
from streamer.server.media.renderer import RenderRequest

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


class PreparedAvatar(ClipFrames, Protocol):
    """An avatar prepared for one model: renders clips (``POST /render``) and has the crops
    the compositor pastes live faces into."""

    @property
    def crops(self) -> AvatarCrops: ...


P = TypeVar("P", bound=PreparedAvatar)


class FaceModel(Protocol[P]):
    """A model family's live half: prepare an avatar, generate one tick's faces in one batch."""

    def prepare(self, avatar: Avatar) -> P:
        """Blocking (MuseTalk's first preparation of an avatar runs its VAE encoder)."""
        ...

    def faces(self, jobs: Sequence[tuple[FrameJob, P]]) -> U8:
        """Faces uint8 BGR ``[len(jobs), S, S, 3]`` for RENDER jobs on their avatars."""
        ...


class Wav2LipFaces:
    """Wav2Lip-contract models (the built-in one included): mel windows and face crops."""

    def __init__(self, engine: LipSyncEngine) -> None:
        self.engine = engine

    def prepare(self, avatar: Avatar) -> FrameRenderer:
        info = self.engine.info
        return FrameRenderer(self.engine, avatar, avatar.crops(info.crop, info.face_size_px))

    def faces(self, jobs: Sequence[tuple[FrameJob, FrameRenderer]]) -> U8:
        windows = np.stack([_required(job.window, "a mel window") for job, _ in jobs])
        crops = np.stack([p.crops.faces[job.avatar_frame] for job, p in jobs])
        return self.engine.generate(windows, crops)


class MuseTalkFaces:
    """MuseTalk v1.5 folders: one audio encoder run per frame (batched by window length),
    then UNet + VAE decoder for the whole tick on the avatars' cached latents."""

    def __init__(self, engine: MuseTalkEngine) -> None:
        self.engine = engine

    def prepare(self, avatar: Avatar) -> MuseTalkRenderer:
        return MuseTalkRenderer(self.engine, avatar)

    def faces(self, jobs: Sequence[tuple[FrameJob, MuseTalkRenderer]]) -> U8:
        runs = [_required(job.encoder_input, "a MuseTalk encoder input") for job, _ in jobs]
        audio = np.empty((len(runs), WINDOW_TOKENS, D_MODEL), np.float32)
        # Early in a session the windows are shorter: one encoder batch per length.
        by_length: dict[int, list[int]] = {}
        for row, run in enumerate(runs):
            by_length.setdefault(run.positions, []).append(row)
        for rows in by_length.values():
            group: list[EncoderInput] = [runs[r] for r in rows]
            states = self.engine.encode_audio(
                np.stack([run.mel for run in group]),
                np.array([run.first_position for run in group], np.int64),
            )
            for k, row in enumerate(rows):
                audio[row] = frame_audio(states[k], runs[row])
        latents = np.stack([p.latents[job.avatar_frame] for job, p in jobs])
        return self.engine.generate(audio, latents)


T = TypeVar("T")


def _required(value: T | None, what: str) -> T:
    if value is None:
        raise ValueError(f"a RENDER job without {what}: the pipeline was not set up for the model")
    return value


class AvatarLibrary(Generic[P]):
    """Avatars loaded once and prepared for the model, shared by all sessions.

    Thread-safe: the event loop asks for frame counts, the executor renders.
    """

    def __init__(self, root: Path, prepare: Callable[[Avatar], P]) -> None:
        self._root = root
        self._prepare = prepare
        self._loaded: dict[str, P] = {}
        self._lock = threading.Lock()

    def add(self, avatar: Avatar) -> P:
        prepared = self._prepare(avatar)
        with self._lock:
            self._loaded[avatar.name] = prepared
        return prepared

    def get(self, name: str) -> P:
        """The prepared avatar; loads and prepares it on first use (raises AvatarError)."""
        with self._lock:
            found = self._loaded.get(name)
        return found if found is not None else self.add(load_avatar(name, self._root))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._loaded)


class LipSyncRenderer(Generic[P]):
    """The real renderer: a model family, the avatars prepared for it and the compositor."""

    def __init__(self, model: FaceModel[P], avatars: AvatarLibrary[P]) -> None:
        self.model = model
        self.avatars = avatars

    def frame_count(self, avatar: str) -> int:
        return self.avatars.get(avatar).avatar.frame_count

    def frame_renderer(self, avatar: str) -> PreparedAvatar:
        return self.avatars.get(avatar)

    def render(self, requests: Sequence[RenderRequest]) -> list[U8]:
        images: list[U8 | None] = [None] * len(requests)
        todo = [k for k, r in enumerate(requests) if r.job.kind is JobKind.RENDER]
        if todo:
            jobs = [(requests[k].job, self.avatars.get(requests[k].avatar)) for k in todo]
            generated = self.model.faces(jobs)
            for row, (k, (job, prepared)) in enumerate(zip(todo, jobs, strict=True)):
                f = job.avatar_frame
                images[k] = composite(
                    prepared.avatar.frames[f : f + 1],
                    generated[row : row + 1],
                    prepared.crops.boxes[f : f + 1],
                    prepared.crops.masks[f : f + 1],
                    np.array([job.strength], np.float32),
                )[0]
        for k, req in enumerate(requests):
            if images[k] is not None:
                continue
            if req.job.kind is JobKind.HOLD and req.previous is not None:
                images[k] = req.previous
            else:
                avatar = self.avatars.get(req.avatar).avatar
                images[k] = np.array(avatar.frames[req.job.avatar_frame])
        return [img for img in images if img is not None]
