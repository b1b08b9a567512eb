"""One WebRTC call: a server peer whose audio feeds its own pipeline, and a scheduler sink."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection

from streamer.playout.pipeline import FrameJob, OutputAudio, SessionPipeline
from streamer.server.media.clock import Clock
from streamer.server.media.encoder import VideoEncoderSettings
from streamer.server.media.peer import ServerPeer
from streamer.server.media.tracks import (
    VIDEO_PTS_PER_FRAME_25FPS,
    EncodingAudioTrack,
    EncodingVideoTrack,
)

U8 = npt.NDArray[np.uint8]


class Session(ServerPeer):
    """A call: the caller's audio in (placed by the pipeline), the avatar out. ``aclose()`` is
    idempotent and waits; ``on_close`` is awaited first (the registry forgets the call)."""

    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        avatar: str,
        pipeline: SessionPipeline,
        clock: Clock,
        on_close: Callable[[Session], Awaitable[None]],
        video: VideoEncoderSettings,
    ) -> None:
        self.video: EncodingVideoTrack
        self.audio: EncodingAudioTrack
        super().__init__(
            session_id,
            pc,
            f"session {session_id}",
            EncodingVideoTrack(video, clock),
            EncodingAudioTrack(),
        )
        self._avatar = avatar
        self._pipeline = pipeline
        self._clock = clock
        self._on_close = on_close
        self._out_audio = OutputAudio()
        self._last_image: U8 | None = None
        self.created_at_s = clock.now()
        self.last_input_at_s = self.created_at_s  # when its last audio frame arrived

    @property
    def session_id(self) -> str:
        return self.peer_id

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

    # ServerPeer
    def on_input(self, frame: av.AudioFrame) -> None:
        self.last_input_at_s = now_s = self._clock.now()
        self._pipeline.push_audio(frame, now_s)

    async def on_closed(self) -> None:
        await self._on_close(self)
