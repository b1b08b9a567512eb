"""One 25 Hz scheduler for every session: one tick, one batched render, one hand-off.

Ticks are deadlines ``t0 + k / fps`` on the one process clock. At each tick every live sink
gives its job (its pipeline decides), the renderer turns all of them into images in one call
in the inference executor, and each sink gets its image. A tick that starts more than one
period late skips the missed ticks (drop and re-anchor, counted): it never bursts.

At shutdown, :meth:`FrameScheduler.finish` stops the ticks and sends every sink one last frame,
the avatar at rest, so viewers are not left on a half-open mouth when the stream ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.audio.jitter import LoopStalls
from streamer.playout.pipeline import FrameJob, SessionPipeline
from streamer.server.media.clock import Clock
from streamer.server.media.metrics import Metrics
from streamer.server.media.renderer import Renderer, RenderRequest
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


class FrameSink(Protocol):
    """A consumer of frames (a session or a channel)."""

    @property
    def sink_id(self) -> str: ...

    @property
    def avatar(self) -> str: ...

    @property
    def pipeline(self) -> SessionPipeline: ...

    @property
    def last_image(self) -> U8 | None: ...

    def deliver(self, job: FrameJob, image: U8, now_s: float) -> None: ...

    async def drain(self) -> None:
        """Return when every frame delivered so far has been sent to the sink's peers."""


class LateTickLog:
    """Late ticks for operators: the first one at once, then at most one summary line per
    ``period_s`` (a model slower than the frame rate makes every tick late)."""

    def __init__(self, period_s: float = 10.0) -> None:
        self.period_s = period_s
        self._window_start_s: float | None = None
        self._late = 0
        self._skipped = 0
        self._worst_s = 0.0

    def note(self, now_s: float, late_s: float, skipped: int) -> None:
        start = self._window_start_s
        if start is None or now_s - start >= self.period_s:
            self.flush()
            self._window_start_s = now_s
            log.warning("scheduler %.0f ms late: skipped %d ticks", late_s * 1e3, skipped)
            return
        self._late += 1
        self._skipped += skipped
        self._worst_s = max(self._worst_s, late_s)

    def flush(self) -> None:
        """Log what the current window held beyond its first line, and start over."""
        if self._late:
            log.warning(
                "scheduler: %d more late ticks in %.0f s, %d ticks skipped, worst %.0f ms late",
                self._late,
                self.period_s,
                self._skipped,
                self._worst_s * 1e3,
            )
        self._window_start_s, self._late, self._skipped, self._worst_s = None, 0, 0, 0.0


class FrameScheduler:
    """Owns the tick task; sinks join and leave between ticks. ``aclose()`` is idempotent."""

    def __init__(
        self,
        clock: Clock,
        renderer: Renderer,
        metrics: Metrics,
        executor: concurrent.futures.Executor,
        fps: int = 25,
    ) -> None:
        self._clock = clock
        self._renderer = renderer
        self._metrics = metrics
        self._executor = executor
        self.period_s = 1.0 / fps
        self._sinks: dict[str, FrameSink] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.t0_s = 0.0
        self.stalls = LoopStalls()  # what its late ticks say about the event loop
        self._late_log = LateTickLog()

    def start(self) -> None:
        if self._task is None:
            self.t0_s = self._clock.now()
            self.stalls.expect(self.t0_s)
            self._task = asyncio.create_task(self._run(), name="frame-scheduler")

    def add(self, sink: FrameSink) -> None:
        self._sinks[sink.sink_id] = sink

    def remove(self, sink_id: str) -> None:
        self._sinks.pop(sink_id, None)
        self._metrics.forget_sink(sink_id)

    def __len__(self) -> int:
        return len(self._sinks)

    def next_tick_s(self) -> float:
        return self.t0_s + self.ticks * self.period_s

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.stalls.expect(None)
        self._late_log.flush()

    async def finish(self, timeout_s: float, frames: int = 5) -> None:
        """Stop ticking, send every sink its last ``frames`` frames, the avatar at rest, one per
        period, and wait until they have gone out.

        The rest frame goes out as the next ``frames`` pts: a video encoder codes a big change
        coarsely first and refines it in the frames after, and a receiver's jitter buffer may
        release a frame only when the next one starts (aiortc's does). Waits at most
        ``timeout_s`` after the last for them to be sent (a peer that never connected never
        takes its frames). The sinks stay registered: their owners close them after.
        """
        await self.aclose()
        sinks = list(self._sinks.values())
        if not sinks:
            return
        requests = [
            RenderRequest(avatar=s.avatar, job=s.pipeline.final_job(), previous=s.last_image)
            for s in sinks
        ]
        loop = asyncio.get_running_loop()
        try:
            images = await loop.run_in_executor(self._executor, self._renderer.render, requests)
        except Exception:
            log.exception("rendering the last frames failed; ending without them")
            return
        start_s = self._clock.now()
        for k in range(frames):
            if k:  # paced like the ticks: each frame is taken before the next is queued
                await self._clock.sleep_until(start_s + k * self.period_s)
            for sink, request, image in zip(sinks, requests, images, strict=True):
                job = request.job if k == 0 else sink.pipeline.final_job()
                sink.deliver(job, image, self._clock.now())
        drains = [asyncio.create_task(s.drain(), name=f"drain-{s.sink_id}") for s in sinks]
        _done, pending = await asyncio.wait(drains, timeout=timeout_s)
        for task in pending:
            await cancel_and_wait(task)
        if pending:
            log.info("last frame not sent to %d of %d sinks in time", len(pending), len(sinks))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.t0_s + self.ticks * self.period_s
            await self._clock.sleep_until(deadline)
            now = self._clock.now()
            late_s = now - deadline
            self._metrics.loop_lag.observe(max(0.0, late_s))
            self.stalls.note(deadline, now)
            if late_s >= self.period_s:
                missed = int(late_s // self.period_s)
                self._metrics.late_ticks.inc(missed)
                self.ticks += missed
                self._late_log.note(now, late_s, missed)
            self.ticks += 1
            self.stalls.expect(self.next_tick_s())
            sinks = list(self._sinks.values())
            if not sinks:
                continue
            requests = [
                RenderRequest(avatar=s.avatar, job=s.pipeline.next_job(now), previous=s.last_image)
                for s in sinks
            ]
            started = time.perf_counter()
            try:
                images = await loop.run_in_executor(self._executor, self._renderer.render, requests)
            except Exception:
                log.exception(
                    "rendering failed for %d sinks; sending their last frames", len(sinks)
                )
                images = [s.last_image for s in sinks]  # type: ignore[misc]
            self._metrics.render_seconds.observe(time.perf_counter() - started)
            n_render = sum(1 for r in requests if r.job.window is not None)
            if n_render:
                self._metrics.batch_size.observe(n_render)
            handed_s = self._clock.now()
            for sink, request, image in zip(sinks, requests, images, strict=True):
                if image is None or sink.sink_id not in self._sinks:
                    continue
                job = request.job
                sink.deliver(job, image, handed_s)
                self._count(sink, job, handed_s - deadline)
                if job.heard_at_s is not None:
                    self._metrics.mic_to_lips.observe(handed_s - job.heard_at_s)

    def _count(self, sink: FrameSink, job: FrameJob, latency_s: float) -> None:
        m = self._metrics
        m.frames.labels(job.kind.value).inc()
        if job.input_frame is not None:
            m.frame_latency.observe(latency_s)
        if job.playout_delay_s is not None:
            m.playout_delay.observe(max(0.0, job.playout_delay_s))
        if job.relative_delay_s is not None:
            m.relative_delay.observe(job.relative_delay_s)
        if job.underrun:
            m.underruns.inc()
        if job.concealed:
            m.concealed.inc()
        if job.level_change is not None:
            m.level_changes.labels(job.level_change.value).inc()
        if job.dropped:
            m.dropped.inc(job.dropped)
        if job.speech_dropped:
            m.speech_dropped.inc(job.speech_dropped)
        if sink.pipeline.adaptive:
            m.playout_target.labels(sink.sink_id).set(sink.pipeline.target_delay_s)
        else:  # a channel back on its queue: no target to show
            m.forget_sink(sink.sink_id)
