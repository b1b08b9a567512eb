"""The sender seam: keyframe requests and REMB reach the server's own encoders (pinned aiortc).

Real calls and channel viewers over loopback: the client peers' receivers send real RTCP (PLI,
REMB) to the server's senders, which only packetise what the server encoded.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from streamer.probe.peer import LoopbackPeer
from streamer.probe.viewer import WhepViewer
from streamer.server.app import SERVER, Runtime
from streamer.server.channels.routes import CHANNELS
from streamer.server.media.send import (
    AIORTC_VERSION_CHECKED,
    SenderSeamError,
    check_sender,
    on_keyframe_request,
    remb_target_bps,
)

pytestmark = pytest.mark.realtime


def test_the_installed_aiortc_is_the_one_the_seam_was_checked_against() -> None:
    # An aiortc upgrade must come with a new look at streamer/server/media/send.py (and this).
    assert importlib.metadata.version("aiortc") == AIORTC_VERSION_CHECKED


async def test_aiortc_senders_still_have_what_the_seam_uses() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("video", direction="sendonly").sender
        check_sender(sender)
        asked = []
        on_keyframe_request(sender, lambda: asked.append(1))
        sender._send_keyframe()  # what aiortc calls on a PLI or FIR
        assert asked == [1]
        assert remb_target_bps(sender) is None  # no packet taken yet: no encoder
    finally:
        await pc.close()

    class Moved:  # an aiortc whose sender lost the internals
        pass

    with pytest.raises(SenderSeamError, match=r"send\.py"):
        check_sender(Moved())  # type: ignore[arg-type]


def _server_video_sender(pc: RTCPeerConnection) -> Any:
    return next(s for s in pc.getSenders() if s.track is not None and s.track.kind == "video")


def _client_video_receiver(pc: RTCPeerConnection) -> Any:
    return next(t.receiver for t in pc.getTransceivers() if t.kind == "video")


async def test_a_call_encodes_once_with_its_viewers_pli_and_remb(server, runtime: Runtime) -> None:
    url, app = server
    async with aiohttp.ClientSession() as http:
        peer = LoopbackPeer(url, np.zeros(48_000 * 4, np.float32), keep_frames=False)
        await peer.connect(http)
        await asyncio.sleep(2.0)
        session = next(iter(app[SERVER].sessions.values()))
        sender = _server_video_sender(session.pc)
        encoder = session.video.encoder
        keyframes = encoder.keyframes
        sound0, heard0 = session.audio.encoder.frames, len(peer.received.audio_pcm)
        produced0 = encoder.frames
        # A real PLI from the client's receiver, over RTCP.
        await _client_video_receiver(peer.pc)._send_rtcp_pli(sender._ssrc)
        await asyncio.sleep(0.5)
        assert encoder.keyframes == keyframes + 1
        # The client's receiver sends REMB on its own; the session's encoder follows it (at
        # most every 5 s, as each change costs a keyframe; here at every frame).
        session.video.encoder.bitrate_hold_s = 0.0
        await asyncio.sleep(1.0)
        target = remb_target_bps(sender)
        assert target is not None
        # Within the encoder's deadband of it: 10 % of its current rate (each change reopens).
        assert abs(encoder.bitrate_bps - target) <= 0.1 * encoder.bitrate_bps, target
        # aiortc's sender only packetised: its own encoder never opened a codec.
        assert sender._RTCRtpSender__encoder.codec is None
        frames = len(peer.received.video_at_s)
        sound, produced = session.audio.encoder.frames - sound0, encoder.frames - produced0
        heard = len(peer.received.audio_pcm) - heard0
        await peer.aclose(http)
    assert frames >= 75  # 3.5 s at 25 fps, all decoded by the client
    # The call's sound: Opus encoded by the server, two 20 ms frames per video frame, all of
    # it decoded by the client (~50 packets a second for the 1.5 s).
    assert abs(sound - 2 * produced) <= 4, (sound, produced)
    assert heard >= 65, heard


async def test_ten_viewers_of_a_channel_share_one_encoder_each_for_video_and_sound(
    server, runtime: Runtime
) -> None:
    url, app = server
    async with aiohttp.ClientSession() as http:
        viewers = [WhepViewer(url, "hall", keep_frames=False) for _ in range(10)]
        for viewer in viewers:
            await viewer.connect(http)
        channel = app[CHANNELS].get("hall")
        await asyncio.sleep(1.5)
        encoded0, produced0 = channel.video.encoder.frames, channel.frames_produced
        sound0 = channel.audio.frames
        received0 = [len(v.received.video_at_s) for v in viewers]
        heard0 = [len(v.received.audio_pcm) for v in viewers]
        await asyncio.sleep(2.0)
        encoded = channel.video.encoder.frames - encoded0
        produced = channel.frames_produced - produced0
        sound = channel.audio.frames - sound0
        received = [len(v.received.video_at_s) - n for v, n in zip(viewers, received0, strict=True)]
        heard = [len(v.received.audio_pcm) - n for v, n in zip(viewers, heard0, strict=True)]
        senders = [_server_video_sender(v.pc) for v in channel.viewers.values()]
        codecs_opened = [s._RTCRtpSender__encoder.codec for s in senders]
        for viewer in viewers:
            await viewer.aclose(http)
    # One encode per produced frame (not one per viewer), and every viewer decoded ~25 fps;
    # one Opus encode per 20 ms of sound, and every viewer decoded ~50 packets a second.
    assert abs(encoded - produced) <= 2, (encoded, produced)
    assert min(received) >= 45, received
    assert abs(sound - 2 * produced) <= 4, (sound, produced)
    assert min(heard) >= 90, heard
    assert len(codecs_opened) == 10
    assert codecs_opened == [None] * 10  # aiortc's senders only packetised
