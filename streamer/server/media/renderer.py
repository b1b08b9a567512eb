"""The renderer seam: what the scheduler asks of whoever turns frame jobs into images, and
what offline render jobs ask of one that can also render whole clips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamer.offline.render import Renderer as ClipFrames
from streamer.playout.pipeline import FrameJob

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, kw_only=True)
class RenderRequest:
    avatar: str
    job: FrameJob
    previous: U8 | None  # the session's last image, for HOLD


class Renderer(Protocol):
    """Renders one tick's jobs (from every session) to BGR images, in order. Synchronous."""

    def render(self, requests: Sequence[RenderRequest]) -> list[U8]: ...

    def frame_count(self, avatar: str) -> int: ...


@runtime_checkable
class ClipRenderer(Protocol):
    """A renderer that also renders planned clips (``POST /render``), sharing its model."""

    def frame_renderer(self, avatar: str) -> ClipFrames:
        """A renderer of ``avatar``'s frames; loads it on first use (raises AvatarError)."""
        ...
