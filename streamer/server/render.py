"""The renderer seam: what the scheduler asks of whoever turns frame jobs into images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.server.pipeline import FrameJob

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class RenderRequest:
    avatar: str
    job: FrameJob
    previous: U8 | None  # the session's last image, for HOLD


class Renderer(Protocol):
    """Renders one tick's jobs (from every session) to BGR images, in order. Synchronous."""

    def render(self, requests: Sequence[RenderRequest]) -> list[U8]: ...

    def frame_count(self, avatar: str) -> int: ...
