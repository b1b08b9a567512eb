"""One lifecycle for every server-side peer connection: calls and channel viewers alike.

- :class:`PeerSettings`: how the server's peers connect and how they encode video.
- :class:`ServerPeer` owns a peer connection, its two outgoing tracks (bounded, see
  :mod:`~streamer.server.media.tracks`: its subclass gives the video one) and, when the peer
  sends audio, the task that drains it; subclasses say what an incoming audio frame is for
  (:meth:`ServerPeer.on_input`) and what leaving means to their owner
  (:meth:`ServerPeer.on_closed`). ``aclose()`` is idempotent and waits.
- :func:`negotiate` answers an offer (already checked by
  :func:`~streamer.server.media.sdp.check_offer`), closing the peer when aiortc refuses it.
- :class:`PeerWatch` follows each peer's connection state: a peer that fails or closes is
  closed; one that has not connected within the connect timeout (an answer never applied, a
  network that never lets it through) is closed so it does not hold its slot. Timed on the one
  clock; it owns its watchdog tasks.
- :func:`run_every` is the periodic task (idle reapers) on that same clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.errors import AudioFormatError
from streamer.server.media.clock import Clock
from streamer.server.media.encoder import VideoEncoderSettings
from streamer.server.media.ice import TurnConfig
from streamer.server.media.sdp import BadOfferError
from streamer.server.media.tracks import (
    AudioPacketTrack,
    EncodingAudioTrack,
    EncodingVideoTrack,
    PacketTrack,
    wait_sent,
)
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerSettings:
    """How the server's peers connect and what they send: shared by calls and viewers."""

    video: VideoEncoderSettings = field(default_factory=VideoEncoderSettings)
    ice_servers: tuple[str, ...] = ()
    turn: TurnConfig | None = None
    connect_timeout_s: float = 15.0

    @property
    def video_codec(self) -> str:
        return self.video.codec


class ServerPeer:
    """A peer connection with the avatar's video and audio going out. Event-loop only."""

    def __init__(
        self,
        peer_id: str,
        pc: RTCPeerConnection,
        label: str,
        video: EncodingVideoTrack | PacketTrack,
        audio: EncodingAudioTrack | AudioPacketTrack,
    ) -> None:
        self.peer_id = peer_id
        self.pc = pc
        self.label = label  # for log lines: "session 1a2b", "channel live: viewer 3c4d"
        self.video = video
        self.audio = audio
        self._ingest_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # What subclasses decide.
    def on_input(self, frame: av.AudioFrame) -> None:
        """One audio frame from the peer, as it arrives (raises AudioFormatError for audio
        that cannot be converted: that frame is dropped and logged)."""

    async def on_closed(self) -> None:
        """Called once, first thing when the peer closes (unregister it)."""

    # The lifecycle.
    @property
    def closing(self) -> bool:
        return self._closing is not None

    async def drain(self) -> None:
        """Wait until the frames pushed so far have been sent (at once if not connected)."""
        await wait_sent(self.pc, self.video, self.audio)

    def attach_input(self, track: MediaStreamTrack) -> None:
        """Drain the peer's audio ``track`` into :meth:`on_input` until it ends."""
        if self._ingest_task is None:
            self._ingest_task = asyncio.create_task(
                self._ingest(track), name=f"ingest-{self.peer_id}"
            )

    async def _ingest(self, track: MediaStreamTrack) -> None:
        # Drain always, even when nothing is rendered: aiortc's receive queue is unbounded.
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                log.info("%s: input audio ended", self.label)
                return
            try:
                self.on_input(frame)  # type: ignore[arg-type]
            except AudioFormatError as exc:
                log.warning("%s: dropped an audio frame: %s", self.label, exc)

    def close_soon(self) -> None:
        """Start closing from a callback that cannot await (peer state changes)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name=f"close-{self.peer_id}")

    async def aclose(self) -> None:
        self.close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self.on_closed()
        task, self._ingest_task = self._ingest_task, None
        await cancel_and_wait(task)
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        log.info("%s: closed", self.label)


async def negotiate(pc: RTCPeerConnection, offer: RTCSessionDescription) -> RTCSessionDescription:
    """Answer ``offer`` (complete, no trickle ICE). Raises BadOfferError, with ``pc`` closed,
    when aiortc cannot negotiate it."""
    try:
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        await pc.close()
        raise BadOfferError(f"The offer could not be negotiated: {exc}") from exc
    return pc.localDescription


class PeerWatch:
    """Follows peers' connections on the one clock; ``aclose()`` ends its watchdogs."""

    def __init__(self, clock: Clock, connect_timeout_s: float) -> None:
        self._clock = clock
        self.connect_timeout_s = connect_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog_of: dict[str, asyncio.Task[None]] = {}  # by peer id, until answered

    def watch(self, peer: ServerPeer) -> None:
        """Close ``peer`` when its connection fails or closes, or if it is not connected within
        the connect timeout. Call once it is negotiated."""
        pc = peer.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("%s: connection %s", peer.label, pc.connectionState)
            if pc.connectionState in ("connected", "failed", "closed"):
                self._end_watchdog(peer.peer_id)  # its question is answered
            if pc.connectionState in ("failed", "closed"):
                peer.close_soon()

        task = asyncio.create_task(self._watchdog(peer), name=f"watchdog-{peer.peer_id}")
        self._tasks.add(task)
        self._watchdog_of[peer.peer_id] = task
        task.add_done_callback(self._tasks.discard)

    def _end_watchdog(self, peer_id: str) -> None:
        """Cancel a peer's watchdog (it ends at once; aclose() awaits the rest). Without this,
        every peer that connected or left would keep a sleeping task for the whole timeout."""
        task = self._watchdog_of.pop(peer_id, None)
        if task is not None:
            task.cancel()

    async def _watchdog(self, peer: ServerPeer) -> None:
        await self._clock.sleep_until(self._clock.now() + self.connect_timeout_s)
        # From here on it closes the peer itself: no state change may cancel it midway.
        self._watchdog_of.pop(peer.peer_id, None)
        if peer.pc.connectionState != "connected" and not peer.closing:
            log.warning(
                "%s: not connected after %.0f s, closing", peer.label, self.connect_timeout_s
            )
            await peer.aclose()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)


def run_every(
    clock: Clock, period_s: float, check: Callable[[float], Awaitable[None]], name: str
) -> asyncio.Task[None]:
    """A task that awaits ``check(now_s)`` every ``period_s`` on ``clock`` until cancelled."""

    async def loop() -> None:
        while True:
            await clock.sleep_until(clock.now() + period_s)
            await check(clock.now())

    return asyncio.create_task(loop(), name=name)
