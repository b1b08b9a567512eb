"""A real aiortc WHEP viewer for tests, benchmarks and soak runs: watch a channel, record it.

It offers recvonly audio and video, POSTs the offer as ``application/sdp`` to
``/channels/{name}/whep``, applies the complete answer (no trickle ICE) and records every
frame with its arrival time on the one monotonic clock. ``aclose()`` DELETEs its Location.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.bench.peer import Received
from streamer.server.tasks import cancel_and_wait


class WhepError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHEP offer refused: {status} {body}")
        self.status = status
        self.body = body


class WhepViewer:
    """One WHEP playback client. ``aclose()`` is idempotent."""

    def __init__(self, base_url: str, channel: str, keep_frames: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self.keep_frames = keep_frames
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = Received()
        self.location: str | None = None
        self.answer_sdp: str | None = None
        self.answered_at_s: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, http: aiohttp.ClientSession, video_only: bool = False) -> None:
        if not video_only:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            reader = self._read_video if track.kind == "video" else self._read_audio
            self._tasks.append(asyncio.create_task(reader(track), name=f"whep-{track.kind}"))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        url = f"{self.base_url}/channels/{self.channel}/whep"
        headers = {"Content-Type": "application/sdp"}
        async with http.post(url, data=self.pc.localDescription.sdp, headers=headers) as r:
            body = await r.text()
            if r.status != 201:
                raise WhepError(r.status, body)
            self.location = r.headers["Location"]
        self.answer_sdp = body
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        self.answered_at_s = time.monotonic()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame)
            self.received.video_at_s.append(time.monotonic())
            self.received.video_pts.append(int(frame.pts or 0))
            if self.keep_frames:
                self.received.video_frames.append(
                    frame.to_ndarray(format="bgr24").astype(np.uint8, copy=False)
                )

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            self.received.audio_at_s.append(time.monotonic())
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.received.audio_pcm.append(pcm.astype(np.int16))

    async def aclose(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.location is not None:
            async with http.delete(f"{self.base_url}{self.location}"):
                pass
            self.location = None
        await self.pc.close()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
