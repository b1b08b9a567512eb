"""aiortc tracks that release what the scheduler produced, never pacing themselves.

aiortc's sender loops on ``await track.recv()`` and sends whatever it gets at once: the
scheduler's tick is the clock, and these tracks only hand over frames. Each holds a small
bounded queue; when the encoder falls behind, the oldest frame is dropped (counted) rather
than letting latency grow a frame at a time. ``wait_sent()`` tells when everything handed
over so far has gone out (the sender asked for more with nothing queued), so a last frame can
be flushed before the peer closes.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.tasks import DropOldestQueue

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
VIDEO_PTS_PER_FRAME_25FPS = 3600


class _QueueTrack(MediaStreamTrack):
    def __init__(self, maxsize: int) -> None:
        super().__init__()
        # Bounded: when full, the oldest item is dropped (counted in `dropped`).
        self._queue: DropOldestQueue[av.AudioFrame | av.VideoFrame | None] = DropOldestQueue(
            maxsize
        )
        self.dropped = 0
        # Set while the sender waits with nothing queued: aiortc's sender encodes and sends
        # each frame before it asks for the next, so everything pushed before has gone out.
        self._sent = asyncio.Event()

    def _put(self, item: av.AudioFrame | av.VideoFrame | None) -> None:
        self.dropped += len(self._queue.put_dropping(item))
        self._sent.clear()

    async def wait_sent(self) -> None:
        """Return once the sender has taken, encoded and sent every frame pushed so far (or the
        track has stopped). Never returns for a track no sender reads: bound it with a timeout."""
        await self._sent.wait()

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue.empty():
            self._sent.set()
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            # Wake a sender blocked in recv() so it ends instead of waiting forever.
            self._queue.put_dropping(None)
        self._sent.set()
        super().stop()


class AvatarVideoTrack(_QueueTrack):
    kind = "video"

    def __init__(self, maxsize: int = 2) -> None:
        super().__init__(maxsize)

    def push(self, image_bgr: npt.NDArray[np.uint8], pts_90khz: int) -> None:
        frame = av.VideoFrame.from_ndarray(image_bgr, format="bgr24")
        frame.pts = pts_90khz
        frame.time_base = VIDEO_TIME_BASE
        self._put(frame)


class AvatarAudioTrack(_QueueTrack):
    kind = "audio"

    def __init__(self, maxsize: int = 6) -> None:
        super().__init__(maxsize)

    def push(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            self._put(frame)


async def wait_sent(pc: RTCPeerConnection, *tracks: _QueueTrack) -> None:
    """Wait until ``tracks`` have sent everything pushed so far; at once unless ``pc`` is
    connected (no sender reads a track before that)."""
    if pc.connectionState == "connected":
        await asyncio.gather(*(t.wait_sent() for t in tracks))
