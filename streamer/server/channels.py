"""Channels: named avatar stages, each driven by one audio source and watched by any number.

A :class:`Channel` is one more sink on the one :class:`FrameScheduler`: the same 25 Hz grid and
the same batched inference as the calls. It produces each frame once (idle frames when no one
speaks) and fans it out to its viewers, each through its own tracks with small bounded queues,
so a slow viewer drops its own oldest frames and never stalls the others. Its audio comes from
its :class:`~streamer.server.playout.ChannelPipeline`'s queue, fed by at most one *driver* at a
time (a WebSocket, a microphone, a call page, or uploaded files): a second driver is refused
with :class:`ChannelBusyError` (409).

:class:`ChannelRegistry` owns every channel of one app; ``aclose()`` closes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from streamer.errors import AudioFormatError, StreamerError
from streamer.server.clock import Clock
from streamer.server.ice import TurnConfig, new_server_peer
from streamer.server.pipeline import FrameJob, OutputAudio, PipelineConfig
from streamer.server.playout import ChannelPipeline, PlaybackEvent, PlayoutConfig
from streamer.server.receive import install_passthrough
from streamer.server.render import Renderer
from streamer.server.scheduler import FrameScheduler
from streamer.server.tasks import cancel_and_wait
from streamer.server.tracks import (
    VIDEO_PTS_PER_FRAME_25FPS,
    AvatarAudioTrack,
    AvatarVideoTrack,
    wait_sent,
)

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

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


class BadOfferError(ChannelError):
    code = "bad_sdp"
    status = 400


class ViewerNotFoundError(ChannelError):
    code = "viewer_not_found"
    status = 404


@dataclass(frozen=True)
class ChannelConfig:
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    max_channels: int = 16
    max_viewers_per_channel: int = 32
    max_viewers_total: int = 64  # over all channels: each viewer costs an encode per frame
    # Viewers, drivers and speak requests create a missing channel (with the default avatar);
    # when False they answer 404 and channels exist only through POST /channels.
    create_on_first_use: bool = True
    max_upload_bytes: int = 32 * 1024 * 1024
    max_ws_message_bytes: int = 1024 * 1024
    # Events waiting to be sent to a slow driver: beyond this the oldest is dropped (logged).
    max_pending_events: int = 256
    # A channel with no viewer, no driver and no queued audio for this long is deleted (its
    # frames cost CPU for no one); None keeps idle channels forever.
    idle_timeout_s: float | None = 600.0


def check_offer(sdp: str, audio_required: bool = False, video_required: bool = True) -> None:
    """Refuse an offer that cannot be answered, before anything is created for it.

    Raises BadOfferError when ``sdp`` does not parse, lacks a required audio or video section,
    or has a section without a DTLS fingerprint (it could never connect). aiortc's
    negotiation still has the last word.
    """
    try:
        media = SessionDescription.parse(sdp).media
    except Exception as exc:  # aiortc's parser raises anything, asserts included
        raise BadOfferError("The offer is not valid SDP.") from exc
    kinds = {m.kind for m in media}
    if video_required and "video" not in kinds:
        raise BadOfferError("The offer has no video to receive.")
    if audio_required and "audio" not in kinds:
        raise BadOfferError("The offer has no audio track to publish.")
    if any(m.dtls is None or not m.dtls.fingerprints for m in media):
        raise BadOfferError("The offer has a media section without a DTLS fingerprint.")


def check_channel_name(name: str) -> str:
    if not CHANNEL_NAME_RE.match(name):
        raise InvalidChannelNameError("Channel names are 1-64 letters, digits, _ or -.")
    return name


def prefer_video_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Offer only ``codec`` (plus RTX): must run before ``setRemoteDescription``."""
    codecs = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in (f"video/{codec}", "video/rtx")
    ]
    transceiver.setCodecPreferences(codecs)


def _copy_audio_frame(frame: av.AudioFrame) -> av.AudioFrame:
    """A private copy for one viewer's sender (each encoder owns the frames it is given)."""
    out = av.AudioFrame.from_ndarray(frame.to_ndarray(), format="s16", layout="mono")
    out.sample_rate = frame.sample_rate
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


class Viewer:
    """One peer connection watching a channel (WHEP, the view page, or a publishing call page).

    Owns its peer connection, its tracks and, for a publisher, the task draining its
    microphone. ``aclose()`` is idempotent and waits.
    """

    def __init__(self, viewer_id: str, channel: Channel, pc: RTCPeerConnection) -> None:
        self.viewer_id = viewer_id
        self.channel = channel
        self.pc = pc
        self.video = AvatarVideoTrack()
        self.audio = AvatarAudioTrack()
        self.publishing = False
        self._ingest_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    def push(self, image: U8, pts_90khz: int, audio: list[av.AudioFrame]) -> None:
        self.video.push(image, pts_90khz)
        self.audio.push([_copy_audio_frame(f) for f in audio])

    async def drain(self) -> None:
        """Wait until the frames pushed so far have been sent (at once if not connected)."""
        await wait_sent(self.pc, self.video, self.audio)

    def attach_input(self, track: MediaStreamTrack) -> None:
        if self._ingest_task is None:
            self._ingest_task = asyncio.create_task(
                self._ingest(track), name=f"channel-{self.channel.name}-publish-{self.viewer_id}"
            )

    async def _ingest(self, track: MediaStreamTrack) -> None:
        # Drain always: aiortc's receive queue is unbounded. The playout buffer paces.
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                self.channel.push_live(frame)  # type: ignore[arg-type]
            except AudioFormatError as exc:
                log.warning("channel %s: dropped a published frame: %s", self.channel.name, exc)

    def close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(
                self._close(), name=f"channel-{self.channel.name}-close-{self.viewer_id}"
            )

    async def aclose(self) -> None:
        self.close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.channel.viewer_left(self)
        task, self._ingest_task = self._ingest_task, None
        await cancel_and_wait(task)
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        log.info("channel %s: viewer %s left", self.channel.name, self.viewer_id)


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
        audio = self._out_audio.convert(job.audio_16k)
        pts = job.output_index * VIDEO_PTS_PER_FRAME_25FPS
        for viewer in self.viewers.values():
            viewer.push(image, pts, audio)
        self.frames_produced += 1
        self._dispatch(self._pipeline.take_events())
        if self.driver is not None and self.driver.kind == "file" and not self.has_pending_audio:
            self.driver.release()  # the uploaded files have played: the channel is free

    async def drain(self) -> None:
        """Wait until every viewer has been sent the frames delivered so far."""
        await asyncio.gather(*(v.drain() for v in list(self.viewers.values())))

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

    def viewer_left(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer.viewer_id, None)
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
        self,
        config: ChannelConfig,
        *,
        scheduler: FrameScheduler,
        renderer: Renderer,
        clock: Clock,
        pipeline: PipelineConfig,
        mel_frame_offset: int,
        load_avatar: Callable[[str], object],
        default_avatar: str,
        ice_servers: tuple[str, ...],
        video_codec: str,
        turn: TurnConfig | None = None,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.config = config
        self._connect_timeout_s = connect_timeout_s
        self._watchdogs: set[asyncio.Task[None]] = set()
        self._watchdog_of: dict[str, asyncio.Task[None]] = {}  # by viewer id, until answered
        self._scheduler = scheduler
        self._renderer = renderer
        self._clock = clock
        self._pipeline_config = pipeline
        self._mel_frame_offset = mel_frame_offset
        self._load_avatar = load_avatar
        self.default_avatar = default_avatar
        self._ice_servers = ice_servers
        self._turn = turn
        self._video_codec = video_codec
        self.channels: dict[str, Channel] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start deleting idle channels (when ``config.idle_timeout_s`` is set)."""
        if self.config.idle_timeout_s is not None and self._reaper is None:
            self._reaper = asyncio.create_task(
                self._reap_idle(self.config.idle_timeout_s), name="channel-idle-reaper"
            )

    async def _reap_idle(self, timeout_s: float) -> None:
        tracker = IdleTracker(timeout_s)
        period_s = min(5.0, timeout_s / 4)
        while True:
            await self._clock.sleep_until(self._clock.now() + period_s)
            busy = {name: not c.is_idle for name, c in self.channels.items()}
            for name in tracker.expired(busy, self._clock.now()):
                log.info("channel %s: idle for %.0f s (no viewer, driver or audio), deleting",
                         name, timeout_s)  # fmt: skip
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
        await asyncio.get_running_loop().run_in_executor(None, self._load_avatar, avatar)
        pipeline = ChannelPipeline(
            self._renderer.frame_count(avatar), self._pipeline_config, self.config.playout
        )
        pipeline.set_mel_frame_offset(self._mel_frame_offset)
        channel = Channel(name, avatar, pipeline, self._clock, self.config)
        self.channels[name] = channel
        self._scheduler.add(channel)
        log.info("channel %s: created with avatar %s", name, avatar)
        return channel

    async def delete(self, name: str) -> None:
        channel = self.get(name)
        self._scheduler.remove(channel.sink_id)
        self.channels.pop(name, None)
        await asyncio.gather(*(v.aclose() for v in list(channel.viewers.values())))
        if channel.driver is not None:
            await channel.driver.revoke()
        log.info("channel %s: deleted", name)

    async def add_viewer(
        self, channel: Channel, offer: RTCSessionDescription, publish: bool = False
    ) -> tuple[Viewer, RTCSessionDescription]:
        """Answer ``offer`` with the channel's audio and video (complete, no trickle ICE).

        With ``publish``, the offer's audio becomes the channel's live driver (409 if busy).
        """
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
        if "m=video" not in offer.sdp:
            raise BadOfferError("The offer has no video to receive.")
        claim = channel.claim("call", None) if publish else None
        pc = new_server_peer(self._ice_servers, self._turn)
        viewer = Viewer(uuid.uuid4().hex[:12], channel, pc)
        viewer.publishing = publish
        # Answer what was offered: players may ask for video only (an unanswerable audio
        # transceiver would fail the negotiation).
        if publish:
            # The channel's playout buffer does all the waiting: aiortc's is bypassed.
            install_passthrough(pc.addTransceiver(viewer.audio, direction="sendrecv"))
        elif "m=audio" in offer.sdp:
            pc.addTransceiver(viewer.audio, direction="sendonly")
        prefer_video_codec(pc.addTransceiver(viewer.video, direction="sendonly"), self._video_codec)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if publish and track.kind == "audio":
                viewer.attach_input(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("channel %s: viewer %s %s", channel.name, viewer.viewer_id, pc.connectionState)
            if pc.connectionState in ("connected", "failed", "closed"):
                self._end_watchdog(viewer.viewer_id)  # its question is answered
            if pc.connectionState in ("failed", "closed"):
                viewer.close_soon()

        try:
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            if claim is not None:
                claim.release()
            raise BadOfferError(f"The offer could not be negotiated: {exc}") from exc
        channel.viewer_joined(viewer)
        watchdog = asyncio.create_task(
            self._connect_watchdog(viewer), name=f"channel-{channel.name}-watch-{viewer.viewer_id}"
        )
        self._watchdogs.add(watchdog)
        self._watchdog_of[viewer.viewer_id] = watchdog
        watchdog.add_done_callback(self._watchdogs.discard)
        log.info(
            "channel %s: viewer %s joined (%d watching)",
            channel.name,
            viewer.viewer_id,
            len(channel.viewers),
        )
        return viewer, pc.localDescription

    def _end_watchdog(self, viewer_id: str) -> None:
        """Cancel a viewer's connect watchdog (it ends at once; aclose() awaits the rest).

        Without this, every viewer that connected or left would keep a sleeping task for
        the whole connect timeout.
        """
        task = self._watchdog_of.pop(viewer_id, None)
        if task is not None:
            task.cancel()

    async def _connect_watchdog(self, viewer: Viewer) -> None:
        # A viewer that never connects (an answer never applied) must not hold its slot.
        await asyncio.sleep(self._connect_timeout_s)
        # From here on it closes the viewer itself: no state change may cancel it midway.
        self._watchdog_of.pop(viewer.viewer_id, None)
        if viewer.pc.connectionState != "connected":
            log.warning(
                "channel %s: viewer %s not connected after %.0f s, closing",
                viewer.channel.name,
                viewer.viewer_id,
                self._connect_timeout_s,
            )
            await viewer.aclose()

    async def hang_up_drivers(self) -> None:
        """Tell every driver the channels are going away (server shutdown: before aiohttp
        waits for open requests, so push WebSockets do not hold it up)."""
        for channel in list(self.channels.values()):
            if channel.driver is not None:
                await channel.driver.revoke()

    async def aclose(self) -> None:
        await cancel_and_wait(self._reaper)
        self._reaper = None
        for task in list(self._watchdogs):
            await cancel_and_wait(task)
        for name in list(self.channels):
            await self.delete(name)
