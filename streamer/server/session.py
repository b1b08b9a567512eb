"""One WebRTC call: the peer connection, its input drain, its pipeline and its tracks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.errors import AudioFormatError
from streamer.server.clock import Clock
from streamer.server.pipeline import FrameJob, OutputAudio, SessionPipeline
from streamer.server.tasks import cancel_and_wait
from streamer.server.tracks import (
    VIDEO_PTS_PER_FRAME_25FPS,
    AvatarAudioTrack,
    AvatarVideoTrack,
    wait_sent,
)

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


class Session:
    """Owns its peer connection and its ingest task; ``aclose()`` is idempotent and waits."""

    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        avatar: str,
        pipeline: SessionPipeline,
        clock: Clock,
        on_close: Callable[[Session], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.pc = pc
        self._avatar = avatar
        self._pipeline = pipeline
        self._clock = clock
        self._on_close = on_close
        self.video = AvatarVideoTrack()
        self.audio = AvatarAudioTrack()
        self._out_audio = OutputAudio()
        self._last_image: U8 | None = None
        self._ingest_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.created_at_s = clock.now()
        self.last_input_at_s = self.created_at_s  # when its last audio frame arrived

    # FrameSink
    @property
    def sink_id(self) -> str:
        return self.session_id

    @property
    def avatar(self) -> str:
        return self._avatar

    @property
    def pipeline(self) -> SessionPipeline:
        return self._pipeline

    @property
    def last_image(self) -> U8 | None:
        return self._last_image

    def deliver(self, job: FrameJob, image: U8, now_s: float) -> None:
        """Release this tick's video frame and its 40 ms of audio together."""
        self._last_image = image
        self.video.push(image, job.output_index * VIDEO_PTS_PER_FRAME_25FPS)
        self.audio.push(self._out_audio.convert(job.audio_16k))

    async def drain(self) -> None:
        """Wait until the frames delivered so far have been sent (at once if not connected)."""
        await wait_sent(self.pc, self.video, self.audio)

    def attach_input(self, track: MediaStreamTrack) -> None:
        if self._ingest_task is None:
            self._ingest_task = asyncio.create_task(
                self._ingest(track), name=f"ingest-{self.session_id}"
            )

    async def _ingest(self, track: MediaStreamTrack) -> None:
        # Drain always, even when nothing is rendered: aiortc's receive queue is unbounded.
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                log.info("session %s: input audio ended", self.session_id)
                return
            self.last_input_at_s = now_s = self._clock.now()
            try:
                self._pipeline.push_audio(frame, now_s)  # type: ignore[arg-type]
            except AudioFormatError as exc:
                log.warning("session %s: dropped an audio frame: %s", self.session_id, exc)

    def close_soon(self) -> None:
        """Start closing from a callback that cannot await (peer state changes)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name=f"close-{self.session_id}")

    async def aclose(self) -> None:
        self.close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self._on_close(self)
        task, self._ingest_task = self._ingest_task, None
        await cancel_and_wait(task)
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        log.info("session %s closed", self.session_id)
