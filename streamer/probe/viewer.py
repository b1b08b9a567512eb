"""A real aiortc WHEP viewer for tests, benchmarks and soak runs: watch a channel, record it.

It offers recvonly audio and video, POSTs the offer as ``application/sdp`` to
``/channels/{name}/whep``, applies the complete answer (no trickle ICE) and records every
frame with its arrival time on the one monotonic clock. ``aclose()`` DELETEs its Location.
"""

from __future__ import annotations

import time

import aiohttp
from aiortc import RTCSessionDescription

from streamer.probe.peer import RecordingPeer


class WhepError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHEP offer refused: {status} {body}")
        self.status = status
        self.body = body


class WhepViewer(RecordingPeer):
    """One WHEP playback client. ``aclose()`` is idempotent."""

    def __init__(self, base_url: str, channel: str, keep_frames: bool = True) -> None:
        super().__init__(keep_frames)
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self.location: str | None = None
        self.answer_sdp: str | None = None
        self.answered_at_s: float | None = None

    async def connect(self, http: aiohttp.ClientSession, video_only: bool = False) -> None:
        if not video_only:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
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

    async def aclose(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.location is not None:
            async with http.delete(f"{self.base_url}{self.location}"):
                pass
            self.location = None
        await self._close_peer()
