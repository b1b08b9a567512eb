"""Offline render with a MuseTalk v1.5 model folder: :class:`MuseTalkRenderer`.

The plan is the live path's (speech gate, mouth fade, avatar frames: :func:`plan_frames`) with
MuseTalk's own audio input, computed as MuseTalk computes it offline: Whisper's mel of each
30 s segment, one encoder run per segment; frame ``i`` reads positions ``[2i-4, 2i+6)`` of
those states when its batch is rendered.
Frames are UNet + VAE decoder on the avatar's cached latents, pasted into the MuseTalk box with
its lower-face mask. Synchronous; thread-safe as far as the engine is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from streamer.avatar import Avatar
from streamer.avatar.latents import musetalk_crops, prepare_latents
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.features import frame_windows, offline_states
from streamer.engine.musetalk.streaming import MEL_FRAME_OFFSET
from streamer.offline.render import FramePlan, RenderOptions, composite_range, plan_frames

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


class MuseTalkRenderer:
    """Renders a :class:`FramePlan` with a MuseTalk engine on one avatar. Building it prepares
    (or loads) the avatar's latents."""

    def __init__(self, engine: MuseTalkEngine, avatar: Avatar) -> None:
        self.engine = engine
        self._avatar = avatar
        self.crops = musetalk_crops(avatar)
        self.latents = prepare_latents(avatar, engine)

    @property
    def avatar(self) -> Avatar:
        return self._avatar

    @property
    def frame_size_px(self) -> tuple[int, int]:
        h, w = self._avatar.frames.shape[1:3]
        return int(w), int(h)

    def plan(self, pcm_16k: F32, options: RenderOptions) -> FramePlan:
        # The mel windows only gate speech here, aligned as in live calls.
        plan = plan_frames(pcm_16k, self._avatar.frame_count, MEL_FRAME_OFFSET, options)
        return dataclasses.replace(plan, features=offline_states(self.engine.encode_audio, pcm_16k))

    def render(self, plan: FramePlan, start: int, stop: int) -> U8:
        """BGR frames ``[stop - start, H, W, 3]`` uint8 for plan frames ``start..stop-1``."""
        states = plan.features
        if states is None:
            raise ValueError("a MuseTalk render needs a plan with MuseTalk encoder states")

        def generate(active: I64, rows: I64) -> U8:
            audio = frame_windows(states, 0, range(start, stop))[active]
            return self.engine.generate(audio, np.asarray(self.latents[rows]))

        return composite_range(self._avatar, self.crops, plan, start, stop, generate)
