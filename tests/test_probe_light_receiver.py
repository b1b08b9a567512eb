"""Light receivers for the capacity benchmarks: real peers, every packet received, keyframes
decoded, the rest counted (and aiortc's decoder lookup, private, still where it is patched)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiortc import rtcrtpreceiver

from streamer.probe.light_receiver import DECODED, is_vp8_keyframe, light_decoding
from streamer.probe.viewer import WhepViewer
from streamer.server.media.encoder import VideoEncoder, VideoEncoderSettings

pytestmark = pytest.mark.realtime


def test_vp8_keyframes_are_told_apart_by_their_header() -> None:
    encoder = VideoEncoder(VideoEncoderSettings())
    image = np.full((64, 64, 3), 120, np.uint8)
    packets = [encoder.encode(image, 3600 * i, keyframe=i == 3)[0] for i in range(5)]
    assert [is_vp8_keyframe(bytes(p)) for p in packets] == [True, False, False, True, False]
    assert not is_vp8_keyframe(b"")


async def test_a_light_viewer_counts_every_frame_and_decodes_the_keyframes(server) -> None:
    url, _app = server
    original = rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]
    with light_decoding() as decoded:
        video0, keys0 = decoded.video_frames, decoded.keyframes
        async with aiohttp.ClientSession() as http:
            viewer = WhepViewer(url, "light", keep_frames=True)
            await viewer.connect(http)
            await asyncio.sleep(2.0)
            await viewer.aclose(http)
    assert rtcrtpreceiver.get_decoder is original  # type: ignore[attr-defined]
    got = viewer.received
    assert len(got.video_at_s) >= 40  # every frame came out of track.recv()
    assert decoded.video_frames - video0 == len(got.video_at_s)
    assert {f.shape for f in got.video_frames} == {(16, 16, 3)}  # blank stand-ins, cheap
    assert decoded.keyframes - keys0 >= 1  # the first one at least, decoded for real
    image = DECODED.last_keyframe_bgr
    assert image is not None
    assert image.shape == (512, 512, 3)
    assert image.std() > 20  # the avatar, not a blank picture
    assert len(got.audio_pcm) >= 80  # 20 ms frames of silence, counted
