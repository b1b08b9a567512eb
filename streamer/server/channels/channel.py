"""Channels: named avatar stages, each driven by one audio source and watched by any number.

A :class:`Channel` is one more sink on the one :class:`FrameScheduler`: the same 25 Hz grid and
the same batched inference as the calls. It produces and encodes each frame once (idle frames when
no one speaks) and fans the packets out to its viewers (:mod:`~streamer.server.media.fanout`),
each through its own tracks with small bounded queues, so a slow viewer drops its own packets
and never stalls the others. Its audio comes from
its :class:`~streamer.playout.queue.ChannelPipeline`'s queue, fed by at most one *driver* at a
time (a WebSocket, a microphone, a call page, or uploaded files): a second driver is refused
with :class:`ChannelBusyError` (409).

:class:`~streamer.server.channels.registry.ChannelRegistry` owns every channel of one app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection, RTCRtpSender

from streamer.errors import StreamerError
from streamer.names import NAME_RULE, is_valid_name
from streamer.playout.pipeline import FrameJob, OutputAudio
from streamer.playout.queue import ChannelPipeline, PlaybackEvent
from streamer.server.config import ChannelConfig
from streamer.server.media.clock import Clock
from streamer.server.media.encoder import VideoEncoderSettings
from streamer.server.media.fanout import ChannelAudio, ChannelVideo
from streamer.server.media.peer import ServerPeer
from streamer.server.media.tracks import (
    VIDEO_PTS_PER_FRAME_25FPS,
    AudioPacketTrack,
    PacketTrack,
)

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

# Drivers whose audio arrives in real time with its own clock: they go through the adaptive
# playout buffer instead of the queue.
LIVE_DRIVERS = frozenset({"mic", "call"})


class ChannelError(StreamerError):
    """A channel request that cannot be served; ``status`` is its HTTP status."""

    status = 400


class ChannelNotFoundError(ChannelError):
    code = "channel_not_found"
    status = 404


class ChannelExistsError(ChannelError):
    code = "channel_exists"
    status = 409


class ChannelBusyError(ChannelError):
    code = "channel_busy"
    status = 409


class InvalidChannelNameError(ChannelError):
    code = "invalid_channel_name"
    status = 400


class TooManyViewersError(ChannelError):
    code = "too_many_viewers"
    status = 503


class TooManyChannelsError(ChannelError):
    code = "too_many_channels"
    status = 503


class ViewerNotFoundError(ChannelError):
    code = "viewer_not_found"
    status = 404


def check_channel_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidChannelNameError(f"Channel names are {NAME_RULE}.")
    return name


class Viewer(ServerPeer):
    """One peer connection watching a channel (WHEP, the view page, or a publishing call page);
    a publisher's audio is the channel's live driver. ``aclose()`` is idempotent and waits."""

    def __init__(
        self, viewer_id: str, channel: Channel, pc: RTCPeerConnection, publishing: bool = False
    ) -> None:
        self.video: PacketTrack
        self.audio: AudioPacketTrack
        label = f"channel {channel.name}: viewer {viewer_id}"
        super().__init__(viewer_id, pc, label, channel.video.new_track(), channel.audio.new_track())
        self.channel = channel
        self.publishing = publishing
        self.video_sender: RTCRtpSender | None = None  # set once its transceiver is added

    @property
    def viewer_id(self) -> str:
        return self.peer_id

    # ServerPeer
    def on_input(self, frame: av.AudioFrame) -> None:
        self.channel.push_live(frame)  # the playout buffer paces it

    async def on_closed(self) -> None:
        self.channel.viewer_left(self)


class DriverClaim:
    """Held by the one driver of a channel; ``release()`` is idempotent.

    ``on_revoke`` (optional) is awaited when the channel goes away under its driver (deleted,
    server shutting down), so the driver can say so and close its connection.
    """

    def __init__(
        self,
        channel: Channel,
        kind: str,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.channel = channel
        self.kind = kind
        self.released = False
        self._on_revoke = on_revoke

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.channel.driver_left(self)

    async def revoke(self) -> None:
        on_revoke, self._on_revoke = self._on_revoke, None
        self.release()
        if on_revoke is not None:
            await on_revoke()


class Channel:
    """One avatar stage: a scheduler sink that fans its frames out. Event-loop only."""

    def __init__(
        self,
        name: str,
        avatar: str,
        pipeline: ChannelPipeline,
        clock: Clock,
        config: ChannelConfig,
        video: VideoEncoderSettings,
    ) -> None:
        self.name = name
        self._avatar = avatar
        self._pipeline = pipeline
        self._clock = clock
        self.config = config
        self.viewers: dict[str, Viewer] = {}
        self.driver: DriverClaim | None = None
        self._out_audio = OutputAudio()
        self._last_image: U8 | None = None
        self._listener: Callable[[PlaybackEvent], None] | None = None
        self.frames_produced = 0
        self.created_at_s = clock.now()
        self.video = ChannelVideo(video, clock, name)  # one encoder for all the viewers
        self.audio = ChannelAudio()  # and one for their sound

    # FrameSink
    @property
    def sink_id(self) -> str:
        return f"channel:{self.name}"

    @property
    def avatar(self) -> str:
        return self._avatar

    @property
    def pipeline(self) -> ChannelPipeline:
        return self._pipeline

    @property
    def last_image(self) -> U8 | None:
        return self._last_image

    def deliver(self, job: FrameJob, image: U8, now_s: float) -> None:
        """Hand this tick's frame and its 40 ms of audio to every viewer; send due events."""
        self._last_image = image
        self.video.push(image, job.output_index * VIDEO_PTS_PER_FRAME_25FPS)
        self.audio.push(self._out_audio.convert(job.audio_16k))
        self.frames_produced += 1
        self._dispatch(self._pipeline.take_events())
        if self.driver is not None and self.driver.kind == "file" and not self.has_pending_audio:
            self.driver.release()  # the uploaded files have played: the channel is free

    async def drain(self) -> None:
        """Wait until every viewer has been sent the frames delivered so far."""
        await self.video.drain()
        await asyncio.gather(*(v.drain() for v in list(self.viewers.values())))

    async def aclose(self) -> None:
        """End the encoders (once the viewers are gone)."""
        await self.video.aclose()
        self.audio.close()

    def _dispatch(self, events: list[PlaybackEvent]) -> None:
        if self._listener is None:
            return
        for event in events:
            self._listener(event)

    # Drivers
    def claim(
        self,
        kind: str,
        listener: Callable[[PlaybackEvent], None] | None,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
    ) -> DriverClaim:
        """Become the channel's driver; raises ChannelBusyError while another one is active.

        Uploaded files (``kind == "file"``) share the claim: a second upload queues behind the
        first. Anything else while a driver is active is refused.
        """
        if self.driver is not None:
            if kind == "file" and self.driver.kind == "file":
                return self.driver
            raise ChannelBusyError(
                f"Channel {self.name!r} is already driven by a {self.driver.kind} driver; "
                "only one audio source at a time."
            )
        self.driver = DriverClaim(self, kind, on_revoke)
        self._listener = listener
        self._pipeline.set_live(kind in LIVE_DRIVERS)
        log.info("channel %s: %s driver connected", self.name, kind)
        return self.driver

    def driver_left(self, claim: DriverClaim) -> None:
        if self.driver is claim:
            self.driver = None
            self._listener = None
            self._pipeline.set_live(False)
            log.info("channel %s: %s driver left", self.name, claim.kind)

    def push(self, samples_16k: F32) -> int:
        """Queue a driver's audio; raises AudioQueueFullError beyond the bound."""
        return self._pipeline.playout.push(samples_16k)

    def push_live(self, frame: av.AudioFrame) -> None:
        """A live driver's audio frame, as it arrives (placed by its pts; raises
        AudioFormatError for audio that cannot be converted)."""
        self._pipeline.push_audio(frame, self._clock.now())

    def end_segment(self) -> int | None:
        return self._pipeline.playout.end_segment()

    def interrupt(self) -> None:
        """Drop every queued sample; the next frame is at rest."""
        self._pipeline.interrupt()
        self._dispatch(self._pipeline.take_events())
        if self.driver is not None and self.driver.kind == "file":
            self.driver.release()
        log.info("channel %s: interrupted", self.name)

    @property
    def queued_s(self) -> float:
        return self._pipeline.playout.queued_s

    @property
    def has_pending_audio(self) -> bool:
        """Whether driver audio is still queued or on its way to the viewers."""
        return self._pipeline.has_pending_audio

    @property
    def is_idle(self) -> bool:
        """No viewer, no driver, nothing queued: its frames are produced for no one."""
        return not self.viewers and self.driver is None and not self.has_pending_audio

    # Viewers
    def viewer_joined(self, viewer: Viewer) -> None:
        self.viewers[viewer.viewer_id] = viewer
        self.video.add(viewer.video, viewer.video_sender)
        self.audio.add(viewer.audio)

    def viewer_left(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer.viewer_id, None)
        self.video.remove(viewer.video)
        self.audio.remove(viewer.audio)
        if viewer.publishing and self.driver is not None and self.driver.kind == "call":
            self.driver.release()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "avatar": self.avatar,
            "viewers": len(self.viewers),
            "driver": self.driver.kind if self.driver else None,
            "queued_s": round(self.queued_s, 3),
            "frames": self.frames_produced,
            "playout": self._pipeline.snapshot().as_json(),
        }
