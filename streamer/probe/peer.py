"""A real aiortc client peer for tests, benchmarks and soak runs: send a clip, record what returns.

It offers one audio track (sendrecv) playing a clip in real time as 20 ms s16 stereo 48 kHz
frames, paced on deadlines, and one recvonly video transceiver, exactly like the call page.
Everything received is recorded with its arrival time on the one monotonic clock.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.probe.impaired_link import ImpairedLink, impair_audio_sender
from streamer.probe.impairment import Impairment
from streamer.tasks import cancel_and_wait

RATE_HZ = 48_000
FRAME_SAMPLES = 960  # 20 ms


def clip_packet(pcm: npt.NDArray[np.int16], n: int, loop: bool) -> npt.NDArray[np.int16]:
    """Packet ``n`` (960 samples) of ``pcm``, a whole number of packets long: looped, packet n
    is packet ``n % (len(pcm) // 960)``; else silence after the end."""
    packets = pcm.shape[0] // FRAME_SAMPLES
    if loop and packets:
        n %= packets
    if n >= packets:
        return np.zeros(FRAME_SAMPLES, np.int16)
    return pcm[n * FRAME_SAMPLES : (n + 1) * FRAME_SAMPLES]


class ClipTrack(MediaStreamTrack):
    """Plays mono float32 48 kHz audio in real time (then silence), recording send times."""

    kind = "audio"

    def __init__(self, clip_48k: npt.NDArray[np.float32], loop: bool = False) -> None:
        super().__init__()
        pcm = (np.clip(clip_48k, -1, 1) * 32767).astype(np.int16)
        # Padded to whole packets: a looped clip repeats every len(pcm) // 960 packets exactly,
        # which is what the soak's onset and speech bookkeeping assume.
        self._pcm = np.concatenate((pcm, np.zeros(-pcm.shape[0] % FRAME_SAMPLES, np.int16)))
        self._repeat = loop
        self._n = 0
        self._t0: float | None = None
        self.sent_at_s: list[float] = []  # send time of frame k (samples k*960...)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        deadline = self._t0 + self._n * FRAME_SAMPLES / RATE_HZ
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        block = clip_packet(self._pcm, self._n, self._repeat)
        stereo = np.stack((block, block), axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = RATE_HZ
        frame.pts = self._n * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, RATE_HZ)
        self._n += 1
        self.sent_at_s.append(time.monotonic())
        return frame


@dataclass
class Received:
    video_at_s: list[float] = field(default_factory=list)
    video_pts: list[int] = field(default_factory=list)
    video_frames: list[npt.NDArray[np.uint8]] = field(default_factory=list)  # BGR, as sent
    audio_at_s: list[float] = field(default_factory=list)
    audio_pts: list[int] = field(default_factory=list)  # RTP position, 48 kHz samples
    audio_pcm: list[npt.NDArray[np.int16]] = field(default_factory=list)  # mono 48 kHz blocks


class RecordingPeer:
    """A client peer connection that records every frame it receives, with its arrival time.

    Subclasses add the signaling (a call, a WHEP viewer); ``on_video``/``on_audio`` are the
    seam for peers that keep other figures (the soak peer keeps numbers, not frames).
    """

    def __init__(self, keep_frames: bool) -> None:
        self.keep_frames = keep_frames
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = Received()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        name = f"{type(self).__name__}-{track.kind}"
        self._tasks.append(asyncio.create_task(self._read(track), name=name))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            at_s = time.monotonic()
            if isinstance(frame, av.VideoFrame):
                self.on_video(frame, at_s)
            else:
                assert isinstance(frame, av.AudioFrame)
                self.on_audio(frame, at_s)

    def on_video(self, frame: av.VideoFrame, at_s: float) -> None:
        self.received.video_at_s.append(at_s)
        self.received.video_pts.append(int(frame.pts or 0))
        if self.keep_frames:
            self.received.video_frames.append(
                frame.to_ndarray(format="bgr24").astype(np.uint8, copy=False)
            )

    def on_audio(self, frame: av.AudioFrame, at_s: float) -> None:
        self.received.audio_at_s.append(at_s)
        self.received.audio_pts.append(int(frame.pts or 0))
        pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        self.received.audio_pcm.append(pcm.astype(np.int16))

    async def _close_peer(self) -> None:
        """Close the connection and end the readers (idempotent)."""
        await self.pc.close()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()


class LoopbackPeer(RecordingPeer):
    """One client call against a server URL. ``aclose()`` ends it and is idempotent.

    With an active ``impairment`` the audio it sends crosses an impaired network on its way
    out (:mod:`streamer.probe.impaired_link`): ``link`` then holds what it did.
    """

    def __init__(
        self,
        base_url: str,
        clip_48k: npt.NDArray[np.float32],
        loop: bool = False,
        keep_frames: bool = True,
        avatar: str | None = None,
        impairment: Impairment | None = None,
    ) -> None:
        super().__init__(keep_frames)
        self.base_url = base_url.rstrip("/")
        self.track = ClipTrack(clip_48k, loop)
        self.avatar = avatar
        self.impairment = impairment or Impairment()
        self.link: ImpairedLink | None = None
        self.session_id: str | None = None
        self.answered_at_s: float | None = None

    async def connect(self, http: aiohttp.ClientSession) -> None:
        audio = self.pc.addTransceiver(self.track, direction="sendrecv")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if self.avatar:
            body["avatar"] = self.avatar
        async with http.post(f"{self.base_url}/offer", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"offer refused: {response.status} {answer}")
        self.session_id = answer["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        if self.impairment.active:
            name = f"{type(self).__name__}-{self.session_id}-impairment"
            self.link = ImpairedLink(self.impairment.schedule(), name)
            impair_audio_sender(audio.sender, self.link)
        self.answered_at_s = time.monotonic()

    async def aclose(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.session_id is not None:
            async with http.delete(f"{self.base_url}/sessions/{self.session_id}"):
                pass
            self.session_id = None
        await self._close_peer()
        if self.link is not None:
            await self.link.aclose()
