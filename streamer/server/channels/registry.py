"""Every channel of one app: created on request or first use, deleted when idle, and the
viewers that join them (one peer lifecycle with the calls: :mod:`streamer.server.media.peer`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from streamer.playout.queue import ChannelPipeline
from streamer.server.channels.channel import (
    Channel,
    ChannelExistsError,
    ChannelNotFoundError,
    TooManyChannelsError,
    TooManyViewersError,
    Viewer,
    check_channel_name,
)
from streamer.server.config import ChannelConfig
from streamer.server.media.hub import MediaHub
from streamer.server.media.ice import new_server_peer
from streamer.server.media.peer import PeerSettings, PeerWatch, negotiate, run_every
from streamer.server.media.receive import install_passthrough
from streamer.server.media.sdp import OfferShape, prefer_video_codec
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class IdleTracker:
    """Which names have been idle for at least ``timeout_s``. Pure: the caller says what is
    busy and what time it is (seconds on the app's one clock)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._idle_since_s: dict[str, float] = {}

    def expired(self, busy_by_name: dict[str, bool], now_s: float) -> list[str]:
        """Names idle since at least ``timeout_s`` ago; busy or vanished names are forgotten."""
        for name in self._idle_since_s.keys() - busy_by_name.keys():
            del self._idle_since_s[name]
        for name, busy in busy_by_name.items():
            if busy:
                self._idle_since_s.pop(name, None)
            else:
                self._idle_since_s.setdefault(name, now_s)
        return [n for n, t in self._idle_since_s.items() if now_s - t >= self.timeout_s]


class ChannelRegistry:
    """Every channel of one app. Event-loop only; ``aclose()`` closes them all."""

    def __init__(
        self, config: ChannelConfig, hub: MediaHub, peers: PeerSettings, default_avatar: str
    ) -> None:
        self.config = config
        self.hub = hub
        self._peers = peers
        self.default_avatar = default_avatar
        self._watch = PeerWatch(hub.clock, peers.connect_timeout_s)
        self.channels: dict[str, Channel] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._idle: IdleTracker | None = None

    def start(self) -> None:
        """Start deleting idle channels (when ``config.idle_timeout_s`` is set)."""
        timeout_s = self.config.idle_timeout_s
        if timeout_s is not None and self._reaper is None:
            self._idle = IdleTracker(timeout_s)
            self._reaper = run_every(
                self.hub.clock, min(5.0, timeout_s / 4), self._reap_idle, "channel-idle-reaper"
            )

    async def _reap_idle(self, now_s: float) -> None:
        assert self._idle is not None
        busy = {name: not c.is_idle for name, c in self.channels.items()}
        for name in self._idle.expired(busy, now_s):
            log.info("channel %s: idle for %.0f s (no viewer, driver or audio), deleting",
                     name, self._idle.timeout_s)  # fmt: skip
            with contextlib.suppress(ChannelNotFoundError):  # deleted meanwhile
                await self.delete(name)

    def get(self, name: str) -> Channel:
        channel = self.channels.get(check_channel_name(name))
        if channel is None:
            raise ChannelNotFoundError(f"No channel named {name!r}.")
        return channel

    async def create(self, name: str, avatar: str | None = None) -> Channel:
        """Create a channel; raises ChannelExistsError if it exists, AvatarError if the avatar
        cannot be loaded."""
        check_channel_name(name)
        async with self._lock:
            if name in self.channels:
                raise ChannelExistsError(f"Channel {name!r} exists already.")
            return await self._create(name, avatar or self.default_avatar)

    async def get_or_create(self, name: str) -> Channel:
        """The channel, created with the default avatar on first use (when configured so)."""
        check_channel_name(name)
        if not self.config.create_on_first_use:
            return self.get(name)
        async with self._lock:
            found = self.channels.get(name)
            if found is not None:
                return found
            return await self._create(name, self.default_avatar)

    async def _create(self, name: str, avatar: str) -> Channel:
        if len(self.channels) >= self.config.max_channels:
            raise TooManyChannelsError(
                f"The server is at its limit of {self.config.max_channels} channels."
            )
        hub = self.hub
        await hub.load_avatar(avatar)
        frame_count = hub.runtime.renderer.frame_count(avatar)
        pipeline = hub.configure(
            ChannelPipeline(frame_count, hub.pipeline_config, self.config.playout)
        )
        channel = Channel(name, avatar, pipeline, hub.clock, self.config, self._peers.video)
        self.channels[name] = channel
        hub.scheduler.add(channel)
        log.info("channel %s: created with avatar %s", name, avatar)
        return channel

    async def delete(self, name: str) -> None:
        channel = self.get(name)
        self.hub.scheduler.remove(channel.sink_id)
        self.channels.pop(name, None)
        await asyncio.gather(*(v.aclose() for v in list(channel.viewers.values())))
        if channel.driver is not None:
            await channel.driver.revoke()
        await channel.aclose()
        log.info("channel %s: deleted", name)

    async def add_viewer(
        self,
        channel: Channel,
        offer: RTCSessionDescription,
        shape: OfferShape,
        publish: bool = False,
    ) -> tuple[Viewer, RTCSessionDescription]:
        """Answer ``offer`` (checked by the route: ``shape``) with the channel's audio and
        video. With ``publish``, the offer's audio becomes the channel's live driver (409 if
        busy)."""
        if len(channel.viewers) >= self.config.max_viewers_per_channel:
            raise TooManyViewersError(
                f"Channel {channel.name!r} is at its limit of "
                f"{self.config.max_viewers_per_channel} viewers."
            )
        total = sum(len(c.viewers) for c in self.channels.values())
        if total >= self.config.max_viewers_total:
            raise TooManyViewersError(
                f"The server is at its limit of {self.config.max_viewers_total} viewers."
            )
        claim = channel.claim("call", None) if publish else None
        pc = new_server_peer(self._peers.ice_servers, self._peers.turn)
        viewer = Viewer(uuid.uuid4().hex[:12], channel, pc, publishing=publish)
        # Answer what was offered: players may ask for video only (an unanswerable audio
        # transceiver would fail the negotiation).
        if publish:
            # The channel's playout buffer does all the waiting: aiortc's is bypassed.
            install_passthrough(pc.addTransceiver(viewer.audio, direction="sendrecv"))
        elif shape.audio:
            pc.addTransceiver(viewer.audio, direction="sendonly")
        video = pc.addTransceiver(viewer.video, direction="sendonly")
        prefer_video_codec(video, self._peers.video_codec)
        viewer.video_sender = video.sender

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if publish and track.kind == "audio":
                viewer.attach_input(track)

        try:
            answer = await negotiate(pc, offer)
        except Exception:
            if claim is not None:
                claim.release()
            raise
        channel.viewer_joined(viewer)
        self._watch.watch(viewer)
        log.info(
            "channel %s: viewer %s joined (%d watching)",
            channel.name,
            viewer.viewer_id,
            len(channel.viewers),
        )
        return viewer, answer

    async def hang_up_drivers(self) -> None:
        """Tell every driver the channels are going away (server shutdown: before aiohttp
        waits for open requests, so push WebSockets do not hold it up)."""
        for channel in list(self.channels.values()):
            if channel.driver is not None:
                await channel.driver.revoke()

    async def aclose(self) -> None:
        await cancel_and_wait(self._reaper)
        self._reaper = None
        await self._watch.aclose()
        for name in list(self.channels):
            await self.delete(name)
