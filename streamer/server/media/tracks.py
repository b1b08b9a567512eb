"""aiortc tracks that release what the scheduler produced, never pacing themselves.

aiortc's sender loops on ``await track.recv()`` and sends whatever it gets at once: the
scheduler's tick is the clock, and these tracks only hand over frames. Each holds a small
bounded queue; when the sender falls behind, the oldest frame is dropped (counted) rather
than letting latency grow a frame at a time. ``wait_sent()`` tells when everything handed
over so far has gone out (the sender asked for more with nothing queued), so a last frame can
be flushed before the peer closes.

Video goes to the sender encoded (:mod:`~streamer.server.media.encoder`), so aiortc only
packetises it: a call's :class:`EncodingVideoTrack` encodes its own frames; a channel encodes
once for all its viewers, each of which reads a :class:`PacketTrack`
(:mod:`~streamer.server.media.fanout`). Audio goes encoded too: a call's
:class:`EncodingAudioTrack` encodes its own Opus, a channel's viewers read an
:class:`AudioPacketTrack` of the channel's one encoder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.server.media.clock import Clock
from streamer.server.media.encoder import OpusEncoder, VideoEncoder, VideoEncoderSettings

if TYPE_CHECKING:
    from streamer.server.media.encoder import Packet
from streamer.server.media.send import on_keyframe_request, remb_target_bps
from streamer.tasks import DropOldestQueue

VIDEO_PTS_PER_FRAME_25FPS = 3600
U8 = npt.NDArray[np.uint8]
T = TypeVar("T")


class _QueueTrack(MediaStreamTrack, Generic[T]):
    def __init__(self, maxsize: int) -> None:
        super().__init__()
        # Bounded: when full, the oldest item is dropped (counted in `dropped`).
        self._queue: DropOldestQueue[T | None] = DropOldestQueue(maxsize)
        self.dropped = 0
        # Set while the sender waits with nothing queued: aiortc's sender encodes and sends
        # each frame before it asks for the next, so everything pushed before has gone out.
        self._sent = asyncio.Event()

    def _put(self, item: T) -> None:
        self.dropped += len(self._queue.put_dropping(item))
        self._sent.clear()

    async def wait_sent(self) -> None:
        """Return once the sender has taken, encoded and sent every frame pushed so far (or the
        track has stopped). Never returns for a track no sender reads: bound it with a timeout."""
        await self._sent.wait()

    async def _next(self) -> T:
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


class EncodingVideoTrack(_QueueTrack[tuple[U8, int]]):
    """A call's video: frames pushed by the scheduler, encoded here (in the default executor,
    as aiortc's sender would) with the server's settings, handed to the sender as packets.

    :meth:`follow` connects it to its sender: the viewer's keyframe requests and REMB bitrate
    then reach the encoder (the bitrate through :meth:`VideoEncoder.follow`).
    """

    kind = "video"

    def __init__(
        self,
        settings: VideoEncoderSettings,
        clock: Clock,
        maxsize: int = 2,
    ) -> None:
        super().__init__(maxsize)
        self.encoder = VideoEncoder(settings)
        self._clock = clock
        self._keyframe_wanted = False
        self._sender: RTCRtpSender | None = None
        self._pending: list[Packet] = []

    def follow(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        on_keyframe_request(sender, self.request_keyframe)

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    def push(self, image_bgr: U8, pts_90khz: int) -> None:
        self._put((image_bgr, pts_90khz))

    def stop(self) -> None:
        super().stop()
        # An encode running in the executor keeps its own reference to the codec until done.
        self.encoder.close()

    async def recv(self) -> Packet:
        # Both codecs, as configured, give one packet per frame, and the sender takes one
        # item per recv(): anything more waits here for the next call.
        while not self._pending:
            image, pts = await self._next()
            if self._sender is not None:
                self.encoder.follow(remb_target_bps(self._sender), self._clock.now())
            keyframe, self._keyframe_wanted = self._keyframe_wanted, False
            loop = asyncio.get_running_loop()
            self._pending = await loop.run_in_executor(
                None, self.encoder.encode, image, pts, keyframe
            )
        return self._pending.pop(0)


class PacketTrack(_QueueTrack["Packet"]):
    """One channel viewer's video: encoded packets fanned out by the channel's one encoder.

    Packets are only useful from a keyframe on: a new viewer waits for one (the channel is asked
    for it), and a viewer whose queue overflows drops everything queued and waits for the next
    keyframe (asking for it) rather than lose a single frame that later ones refer to.
    """

    kind = "video"

    def __init__(self, on_keyframe_needed: Callable[[], None], maxsize: int = 4) -> None:
        super().__init__(maxsize)
        self._on_keyframe_needed = on_keyframe_needed
        self.waiting_for_keyframe = True
        self.withheld = 0  # packets not queued while waiting for a keyframe

    def put(self, packet: Packet) -> None:
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
                self.dropped += 1
            self.waiting_for_keyframe = True
            self._on_keyframe_needed()
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                self.withheld += 1
                return
            self.waiting_for_keyframe = False
        self._put(packet)

    async def recv(self) -> Packet:
        return await self._next()


class AudioPacketTrack(_QueueTrack["Packet"]):
    """One channel viewer's audio: Opus packets the channel encoded once for every viewer.
    Each stands alone, so a full queue drops the oldest (counted) like a frame track."""

    kind = "audio"

    def __init__(self, maxsize: int = 6) -> None:
        super().__init__(maxsize)

    def put(self, packet: Packet) -> None:
        self._put(packet)

    async def recv(self) -> Packet:
        return await self._next()


class EncodingAudioTrack(_QueueTrack["Packet"]):
    """A call's audio: its frames Opus-encoded here, as they are pushed (on the event loop:
    ~0.1 ms a 20 ms frame), so the sender only packetises them. Each packet stands alone, so a
    full queue drops the oldest (counted) like a frame track."""

    kind = "audio"

    def __init__(self, maxsize: int = 6) -> None:
        super().__init__(maxsize)
        self.encoder = OpusEncoder()

    def push(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            for packet in self.encoder.encode(frame):
                self._put(packet)

    def stop(self) -> None:
        super().stop()
        self.encoder.close()

    async def recv(self) -> Packet:
        return await self._next()


async def wait_sent(pc: RTCPeerConnection, *tracks: _QueueTrack[Any]) -> None:
    """Wait until ``tracks`` have sent everything pushed so far; at once unless ``pc`` is
    connected (no sender reads a track before that)."""
    if pc.connectionState == "connected":
        await asyncio.gather(*(t.wait_sent() for t in tracks))
