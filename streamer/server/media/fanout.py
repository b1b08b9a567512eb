"""A channel's media: each frame encoded once, the packets fanned out to every viewer.

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
targets), followed as :meth:`~streamer.server.media.encoder.VideoEncoder.follow` allows (at
most every 5 s, past a 10 % change), since each change restarts the encoder and so costs
every viewer a keyframe. With no estimate yet, the
codec's default (VP8 500 kbps).

Frames produced while no one watches are not encoded. Event-loop only.

:class:`ChannelAudio` does the same for the sound: each 20 ms frame is Opus-encoded once (each
viewer's sender used to encode it again: ~1.8 % of a core per viewer here) and each viewer's
:class:`~streamer.server.media.tracks.AudioPacketTrack` gets the packets. Opus packets stand
alone, so a late joiner or a full queue needs nothing special. Packets go without the
audio-level header extension (aiortc computes it only from frames).
"""

from __future__ import annotations

import asyncio
import logging

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCRtpSender

from streamer.server.media.clock import Clock
from streamer.server.media.encoder import OpusEncoder, VideoEncoder, VideoEncoderSettings
from streamer.server.media.send import on_keyframe_request, remb_target_bps
from streamer.server.media.tracks import AudioPacketTrack, PacketTrack
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
    ) -> None:
        self.encoder = VideoEncoder(settings)
        self._clock = clock
        self._name = name
        self.keyframe_gap_s = keyframe_gap_s
        self._tracks: dict[PacketTrack, RTCRtpSender | None] = {}
        # Raw frames waiting for the encoder: dropping one here breaks nothing.
        self._frames: DropOldestQueue[tuple[U8, int]] = DropOldestQueue(2)
        self.frames_dropped = 0
        self._keyframe_wanted = False
        self._last_keyframe_s = -float("inf")
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
        estimates = (remb_target_bps(s) for s in self._tracks.values() if s is not None)
        targets = [t for t in estimates if t is not None]
        if self.encoder.follow(min(targets, default=None), now_s):
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
                    # It serves every request made so far (a viewer added while it was being
                    # encoded gets it below): one keyframe per join, not two.
                    self._last_keyframe_s = now_s
                    self._keyframe_wanted = False
                for track in list(self._tracks):
                    track.put(packet)


class ChannelAudio:
    """One Opus encoder for a channel's sound (48 kHz mono, 20 ms frames), fanned out."""

    def __init__(self, bitrate_bps: int = 64_000) -> None:
        self._encoder = OpusEncoder(bitrate_bps)
        self._tracks: set[AudioPacketTrack] = set()

    def new_track(self) -> AudioPacketTrack:
        return AudioPacketTrack()

    def add(self, track: AudioPacketTrack) -> None:
        self._tracks.add(track)

    def remove(self, track: AudioPacketTrack) -> None:
        self._tracks.discard(track)

    def push(self, frames: list[av.AudioFrame]) -> None:
        """This tick's 20 ms frames (48 kHz mono s16); not encoded while no one listens."""
        if not self._tracks:
            return
        for frame in frames:
            for packet in self._encoder.encode(frame):
                for track in self._tracks:
                    track.put(packet)

    @property
    def frames(self) -> int:
        """20 ms frames encoded so far."""
        return self._encoder.frames

    def close(self) -> None:
        self._encoder.close()
