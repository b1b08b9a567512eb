"""The real renderer: one batched model call per tick, then the compositor.

Runs in the inference executor thread, never on the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.avatar import Avatar, AvatarCrops, composite, load_avatar
from streamer.engine import LipSyncEngine
from streamer.offline.render import FrameRenderer
from streamer.playout.pipeline import JobKind
from streamer.server.media.renderer import RenderRequest

U8 = npt.NDArray[np.uint8]


class AvatarLibrary:
    """Avatars loaded once and their crops for one model, shared by all sessions.

    Thread-safe: the event loop asks for frame counts, the executor renders.
    """

    def __init__(self, root: Path, crop_size_px: int, engine: LipSyncEngine) -> None:
        self._root = root
        self._engine = engine
        self._crop_size_px = crop_size_px
        self._loaded: dict[str, tuple[Avatar, AvatarCrops]] = {}
        self._lock = threading.Lock()

    def add(self, avatar: Avatar) -> None:
        crops = avatar.crops(self._engine.info.crop, self._crop_size_px)
        with self._lock:
            self._loaded[avatar.name] = (avatar, crops)

    def get(self, name: str) -> tuple[Avatar, AvatarCrops]:
        """The avatar and its crops; loads it from disk on first use (raises AvatarError)."""
        with self._lock:
            found = self._loaded.get(name)
        if found is None:
            self.add(load_avatar(name, self._root))
            with self._lock:
                found = self._loaded[name]
        return found

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._loaded)


class LipSyncRenderer:
    """The real renderer: the engine plus the avatars' crops and the compositor."""

    def __init__(self, engine: LipSyncEngine, avatars: AvatarLibrary) -> None:
        self.engine = engine
        self.avatars = avatars

    def frame_count(self, avatar: str) -> int:
        return self.avatars.get(avatar)[0].frame_count

    def frame_renderer(self, avatar: str) -> FrameRenderer:
        loaded, crops = self.avatars.get(avatar)
        return FrameRenderer(self.engine, loaded, crops)

    def render(self, requests: Sequence[RenderRequest]) -> list[U8]:
        images: list[U8 | None] = [None] * len(requests)
        todo = [k for k, r in enumerate(requests) if r.job.kind is JobKind.RENDER]
        if todo:
            windows = np.stack([requests[k].job.window for k in todo])  # type: ignore[misc]
            faces = []
            for k in todo:
                _, crops = self.avatars.get(requests[k].avatar)
                faces.append(crops.faces[requests[k].job.avatar_frame])
            generated = self.engine.generate(windows, np.stack(faces))
            for row, k in enumerate(todo):
                req = requests[k]
                avatar, crops = self.avatars.get(req.avatar)
                f = req.job.avatar_frame
                images[k] = composite(
                    avatar.frames[f : f + 1],
                    generated[row : row + 1],
                    crops.boxes[f : f + 1],
                    crops.masks[f : f + 1],
                    np.array([req.job.strength], np.float32),
                )[0]
        for k, req in enumerate(requests):
            if images[k] is not None:
                continue
            if req.job.kind is JobKind.HOLD and req.previous is not None:
                images[k] = req.previous
            else:
                avatar, _ = self.avatars.get(req.avatar)
                images[k] = np.array(avatar.frames[req.job.avatar_frame])
        return [img for img in images if img is not None]
