"""A channel's video: each frame encoded once, the packets fanned out to every viewer.

Without this every viewer's sender encoded the same picture again (0.14 core per viewer of
one channel here). :class:`ChannelVideo` owns one :class:`~streamer.server.media.encoder.
VideoEncoder` and the task that runs it (in the default executor, off the event loop); each
viewer reads its own bounded :class:`~streamer.server.media.tracks.PacketTrack`, so a slow
viewer drops its own packets (to the next keyframe) and never holds up the others.

Keyframes (each one goes to every viewer, at several times the size of a P-frame):

- a new viewer, a viewer's PLI, or a viewer's overflow asks for one; requests are coalesced to
  at most one keyframe per ``keyframe_gap_s`` (a request inside the gap is served when it ends);
- the encoder's own interval adds one every ``keyframe_interval_frames`` as a safety net.

Bitrate: one target for the channel, the lowest of its viewers' REMB estimates (their senders'
targets), followed at most every ``bitrate_check_s`` and only past a 10 % change, since each
change restarts the encoder and so costs every viewer a keyframe. With no estimate yet, the
codec's default (VP8 500 kbps).

Frames produced while no one watches are not encoded. Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import numpy.typing as npt
from aiortc import RTCRtpSender

from streamer.server.media.clock import Clock
from streamer.server.media.encoder import VideoEncoder, VideoEncoderSettings
from streamer.server.media.send import on_keyframe_request, remb_target_bps
from streamer.server.media.tracks import PacketTrack
from streamer.tasks import DropOldestQueue, cancel_and_wait

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


class ChannelVideo:
    """One encoder for a channel's frames, fanned out to its viewers' packet tracks."""

    def __init__(
        self,
        settings: VideoEncoderSettings,
        clock: Clock,
        name: str,
        keyframe_gap_s: float = 1.0,
        bitrate_check_s: float = 5.0,
    ) -> None:
        self.encoder = VideoEncoder(settings)
        self._clock = clock
        self._name = name
        self.keyframe_gap_s = keyframe_gap_s
        self.bitrate_check_s = bitrate_check_s
        self._tracks: dict[PacketTrack, RTCRtpSender | None] = {}
        # Raw frames waiting for the encoder: dropping one here breaks nothing.
        self._frames: DropOldestQueue[tuple[U8, int]] = DropOldestQueue(2)
        self.frames_dropped = 0
        self._keyframe_wanted = False
        self._last_keyframe_s = -float("inf")
        self._bitrate_checked_s = -float("inf")
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._run(), name=f"channel-{name}-video")

    def new_track(self) -> PacketTrack:
        """A packet track for a viewer (fed once :meth:`add` is called)."""
        return PacketTrack(self.request_keyframe)

    def add(self, track: PacketTrack, sender: RTCRtpSender | None) -> None:
        """Feed ``track`` from now on; its first packet will be a keyframe. With the ``sender``
        that reads it, the viewer's PLI and REMB reach the encoder."""
        self._tracks[track] = sender
        if sender is not None:
            on_keyframe_request(sender, self.request_keyframe)
        self.request_keyframe()

    def remove(self, track: PacketTrack) -> None:
        self._tracks.pop(track, None)

    @property
    def viewers(self) -> int:
        return len(self._tracks)

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    def push(self, image_bgr: U8, pts_90khz: int) -> None:
        """This tick's frame (from the scheduler); not encoded while no one watches."""
        if not self._tracks:
            return
        self.frames_dropped += len(self._frames.put_dropping((image_bgr, pts_90khz)))
        self._idle.clear()

    async def drain(self) -> None:
        """Wait until every frame pushed so far is encoded and sent to each viewer."""
        await self._idle.wait()
        await asyncio.gather(*(t.wait_sent() for t in list(self._tracks)))

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        self._idle.set()
        self.encoder.close()

    def _keyframe_due(self, now_s: float) -> bool:
        if self._keyframe_wanted and now_s - self._last_keyframe_s >= self.keyframe_gap_s:
            self._keyframe_wanted = False
            return True
        return False

    def _follow_bitrate(self, now_s: float) -> None:
        if now_s - self._bitrate_checked_s < self.bitrate_check_s:
            return
        self._bitrate_checked_s = now_s
        targets = [
            t for t in (remb_target_bps(s) for s in self._tracks.values() if s) if t is not None
        ]
        if targets and self.encoder.set_bitrate(min(targets)):
            log.info(
                "channel %s: video bitrate %d kbps", self._name, self.encoder.bitrate_bps // 1000
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._frames.empty():
                self._idle.set()
            image, pts = await self._frames.get()
            now_s = self._clock.now()
            self._follow_bitrate(now_s)
            keyframe = self._keyframe_due(now_s)
            packets = await loop.run_in_executor(None, self.encoder.encode, image, pts, keyframe)
            for packet in packets:
                if packet.is_keyframe:
                    self._last_keyframe_s = now_s
                for track in list(self._tracks):
                    track.put(packet)
