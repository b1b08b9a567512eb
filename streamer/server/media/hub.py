"""What every call, channel and render job of one app shares.

The one clock, the metrics, the model and avatars (:class:`Runtime`), the one inference thread
(live ticks first, offline renders in between) and the one 25 Hz scheduler. The app builds one
hub and hands it to the call registry, the channel registry and the render jobs; ``aclose()``
stops the scheduler, then the inference thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

from streamer.engine.musetalk.streaming import LiveFeatures
from streamer.playout.pipeline import PipelineConfig, SessionPipeline
from streamer.server.media.clock import Clock
from streamer.server.media.inference import PriorityExecutor
from streamer.server.media.metrics import Metrics
from streamer.server.media.runtime import Runtime
from streamer.server.media.scheduler import FrameScheduler

P = TypeVar("P", bound=SessionPipeline)


class MediaHub:
    def __init__(self, runtime: Runtime, clock: Clock, pipeline: PipelineConfig) -> None:
        self.runtime = runtime
        self.clock = clock
        self.pipeline_config = pipeline
        self.metrics = Metrics()
        # One thread runs every model call: live ticks first, offline renders in between.
        self.executor = PriorityExecutor("inference")
        self.scheduler = FrameScheduler(clock, runtime.renderer, self.metrics, self.executor)
        self.started_at = time.monotonic()

    async def load_avatar(self, name: str) -> None:
        """Load ``name`` (and its crops) off the event loop; raises AvatarError."""
        await asyncio.get_running_loop().run_in_executor(None, self.runtime.load_avatar, name)

    def configure(self, pipeline: P) -> P:
        """Give a new pipeline the model's lookahead (its mel frame offset), its own audio
        features if it reads them (MuseTalk), and the record of the server's own stalls."""
        pipeline.set_mel_frame_offset(self.runtime.mel_frame_offset)
        if self.runtime.live_features is not None:
            pipeline.set_live_features(LiveFeatures(self.runtime.live_features))
        pipeline.watch_stalls(self.scheduler.stalls)
        return pipeline

    def start(self) -> None:
        self.metrics.watch_gc()
        self.scheduler.start()

    async def farewell(self, timeout_s: float) -> None:
        """Shutdown, first step: stop the frames and send every sink a last one, at rest."""
        await self.scheduler.finish(timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self.scheduler.aclose()
        self.executor.shutdown(wait=True)
        self.metrics.unwatch_gc()
