"""``POST /render`` and ``GET /render/{id}``: offline renders served next to live calls.

An upload (multipart, field ``audio``, optional field ``avatar``) is read into memory up to a
size limit and decoded; inputs up to ``sync_max_duration_s`` are rendered at once and answered
with the MP4, longer ones get a job id (202) to poll. One worker task renders one job at a
time, in chunks of a few frames submitted to the inference executor at background priority:
live ticks always run first, so a render never delays a tick by more than one chunk (larger
chunks while no session is live). The MP4
is encoded in the job manager's own encoder thread (libx264 limited to one thread).
Bounded: at most ``max_jobs`` waiting or running (more: 503 with Retry-After), at most
``keep_results`` finished jobs kept (the oldest file is deleted first).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import io
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from streamer.avatar import validate_name
from streamer.errors import StreamerError
from streamer.offline.audio import OUTPUT_RATE_HZ, DecodedAudio, decode_audio
from streamer.offline.mp4 import Mp4Writer
from streamer.offline.render import FramePlan, RenderOptions
from streamer.offline.render import Renderer as ClipFrames
from streamer.server.config import RenderConfig
from streamer.server.http.body import read_upload
from streamer.server.http.errors import HttpError
from streamer.server.media.hub import MediaHub
from streamer.server.media.renderer import ClipRenderer

log = logging.getLogger(__name__)


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class RenderJob:
    job_id: str
    avatar: str
    audio: DecodedAudio | None  # dropped once rendered
    duration_s: float
    state: JobState = JobState.QUEUED
    frames_done: int = 0
    frames_total: int = 0
    path: Path | None = None
    error: str | None = None
    created_at_s: float = field(default_factory=time.monotonic)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.state.value,
            "avatar": self.avatar,
            "duration_s": round(self.duration_s, 3),
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
        }
        if self.state is JobState.DONE:
            body["result_url"] = f"/render/{self.job_id}/result"
        if self.error is not None:
            body["message"] = self.error
        return body


class RenderJobs:
    """Owns the render queue, its worker task, its encoder thread and its result files."""

    def __init__(self, config: RenderConfig, hub: MediaHub, default_avatar: str) -> None:
        self.config = config
        self.hub = hub
        self.default_avatar = default_avatar
        self._jobs: dict[str, RenderJob] = {}
        self._finished: collections.deque[str] = collections.deque()
        # Bounded by max_jobs: submit() refuses (503) before it could fill.
        self._queue: asyncio.Queue[RenderJob] = asyncio.Queue(config.max_jobs)
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="render-mp4")
        self._dir = Path(tempfile.mkdtemp(prefix="avatar-render-"))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="render-worker")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Not cancel_and_wait: at shutdown the app's own task is being cancelled, and
            # re-raising that here makes aiohttp report a second cleanup error (the server's
            # own is the first) and the process exit 1. wait() returns once the worker ended.
            await asyncio.wait([task])
        for job in self._jobs.values():
            if job.state is JobState.QUEUED:  # never started: whoever waits gets an answer
                job.state, job.error = JobState.FAILED, "The server shut down."
                job.finished.set()
        self._encoder.shutdown(wait=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def get(self, job_id: str) -> RenderJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise HttpError(404, "render_not_found", "No such render job.")
        return job

    def submit(self, audio: DecodedAudio, avatar: str) -> RenderJob:
        waiting = sum(
            1 for j in self._jobs.values() if j.state in (JobState.QUEUED, JobState.RUNNING)
        )
        if waiting >= self.config.max_jobs:
            raise HttpError(
                503,
                "render_busy",
                f"{waiting} renders are waiting or running; try again later.",
                {"Retry-After": str(self.config.retry_after_s)},
            )
        job = RenderJob(uuid.uuid4().hex[:12], avatar, audio, audio.duration_s)
        self._jobs[job.job_id] = job
        self._queue.put_nowait(job)
        return job

    def _frame_renderer(self, avatar: str) -> ClipFrames:
        renderer = self.hub.runtime.renderer
        if not isinstance(renderer, ClipRenderer):
            raise HttpError(503, "render_unavailable", "This server cannot render offline.")
        return renderer.frame_renderer(avatar)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            job.state = JobState.RUNNING
            started = time.monotonic()
            try:
                await self._render(job)
            except asyncio.CancelledError:
                job.state, job.error = JobState.FAILED, "The server shut down."
                job.finished.set()
                raise
            except StreamerError as exc:
                job.state, job.error = JobState.FAILED, str(exc)
            except Exception as exc:
                log.exception("render %s failed", job.job_id)
                job.state, job.error = JobState.FAILED, f"Rendering failed: {exc}"
            else:
                job.state = JobState.DONE
                took_s = time.monotonic() - started
                log.info(
                    "render %s: %.1f s of audio in %.1f s (%.1fx real time)",
                    job.job_id,
                    job.duration_s,
                    took_s,
                    job.duration_s / max(took_s, 1e-9),
                )
            job.audio = None
            job.finished.set()
            self._retire(job)

    async def _render(self, job: RenderJob) -> None:
        assert job.audio is not None
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(None, self._frame_renderer, job.avatar)
        options = RenderOptions(batch_frames=self.config.chunk_frames)
        # Off the inference thread: a plan is one pass over the clip (MuseTalk's also runs its
        # audio encoder per 30 s) and must not hold live ticks back while it runs.
        plan: FramePlan = await loop.run_in_executor(None, frames.plan, job.audio.pcm_16k, options)
        job.frames_total = len(plan)
        width, height = frames.frame_size_px
        path = self._dir / f"{job.job_id}.mp4"
        writer = Mp4Writer(
            path, width, height, options.fps, OUTPUT_RATE_HZ, threads=self.config.encoder_threads
        )
        per_frame = OUTPUT_RATE_HZ // options.fps
        # Silence fills the last frame, so both tracks last len(plan) frames.
        sound = np.zeros(len(plan) * per_frame, np.float32)
        sound[: job.audio.pcm_48k.shape[0]] = job.audio.pcm_48k[: sound.shape[0]]
        executor = self.hub.executor
        scheduler = self.hub.scheduler
        try:
            start = 0
            while start < len(plan):
                chunk_frames = (
                    self.config.chunk_frames if len(scheduler) else self.config.idle_chunk_frames
                )
                stop = min(len(plan), start + chunk_frames)
                images = await asyncio.wrap_future(
                    executor.submit_background(frames.render, plan, start, stop)
                )
                chunk = sound[start * per_frame : stop * per_frame]
                await loop.run_in_executor(self._encoder, writer.write, images, chunk)
                job.frames_done = start = stop
        finally:
            await loop.run_in_executor(self._encoder, writer.close)
        job.path = path

    def _retire(self, job: RenderJob) -> None:
        self._finished.append(job.job_id)
        while len(self._finished) > self.config.keep_results:
            old = self._jobs.pop(self._finished.popleft(), None)
            if old is not None and old.path is not None:
                old.path.unlink(missing_ok=True)


RENDER_JOBS = web.AppKey("render_jobs", RenderJobs)


async def post_render(request: web.Request) -> web.StreamResponse:
    jobs = request.app[RENDER_JOBS]
    config = jobs.config
    form = await read_upload(
        request,
        config.max_upload_bytes,
        multipart_required="Send the audio as multipart/form-data (field audio).",
    )
    upload = form.get("audio")
    if not upload:
        raise HttpError(400, "missing_audio", "The form has no audio file (field audio).")
    named = form.get("avatar")
    avatar = (named or b"").decode("utf-8", errors="replace").strip() or jobs.default_avatar
    validate_name(avatar)
    await jobs.hub.load_avatar(avatar)
    audio = await asyncio.get_running_loop().run_in_executor(
        None, decode_audio, io.BytesIO(upload), config.max_duration_s
    )
    del upload, form
    job = jobs.submit(audio, avatar)
    if audio.duration_s > config.sync_max_duration_s:
        return web.json_response(
            {**job.status(), "status_url": f"/render/{job.job_id}"}, status=202
        )
    await job.finished.wait()
    if job.state is not JobState.DONE or job.path is None:
        raise HttpError(500, "render_failed", job.error or "Rendering failed.")
    return web.FileResponse(
        job.path, headers={"Content-Type": "video/mp4", "X-Render-Job": job.job_id}
    )


async def get_render(request: web.Request) -> web.Response:
    job = request.app[RENDER_JOBS].get(request.match_info["job_id"])
    return web.json_response(job.status())


async def get_render_result(request: web.Request) -> web.StreamResponse:
    job = request.app[RENDER_JOBS].get(request.match_info["job_id"])
    if job.state is JobState.FAILED:
        raise HttpError(500, "render_failed", job.error or "Rendering failed.")
    if job.state is not JobState.DONE or job.path is None:
        raise HttpError(
            409, "render_not_ready", f"The render is {job.state.value}; poll its status."
        )
    return web.FileResponse(job.path, headers={"Content-Type": "video/mp4"})


def add_routes(app: web.Application, jobs: RenderJobs) -> None:
    """Keep ``jobs`` under :data:`RENDER_JOBS`, run its worker with the app, add the routes."""
    app[RENDER_JOBS] = jobs

    async def lifecycle(_app: web.Application) -> Any:
        jobs.start()
        yield
        await jobs.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/render", post_render)
    app.router.add_get("/render/{job_id}", get_render)
    app.router.add_get("/render/{job_id}/result", get_render_result)
