"""Shutdown leaves every viewer on the avatar at rest: while the avatar speaks, stopping the
server (what ``serve`` does on SIGINT/SIGTERM) sends each call and each channel viewer a last
frame with the mouth closed, right after the stream's last frame, before their peers close.

Real parts: aiortc peers over loopback, the built-in model in ONNX Runtime, the default avatar,
VP8. Mouth openness is measured on the decoded frames against the avatar's own frames.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from streamer.client import ChannelClient
from streamer.probe.peer import LoopbackPeer, Received
from streamer.probe.viewer import WhepViewer
from streamer.server.app import Runtime, ServerConfig, create_app
from tests.audio_signals import pcm16, vowel
from tests.media_analysis import mouth_activity
from tests.servers import start_app

pytestmark = pytest.mark.realtime

LEAD_S = 2.0  # silence before the vowel: the frames that show the mouth at rest


def mouth_series(runtime: Runtime, frames: list[np.ndarray]) -> np.ndarray:
    prepared = runtime.renderer.avatars.get("default")  # type: ignore[attr-defined]
    avatar, crops = prepared.avatar, prepared.crops
    return mouth_activity(frames, np.asarray(avatar.frames), crops.boxes.mean(axis=0))


def check_ends_at_rest(
    runtime: Runtime, received: Received, rest_until_s: float, stopped_at_s: float
) -> str:
    """Assert the stream spoke until the stop and its last frame is at rest; describe it."""
    at = np.asarray(received.video_at_s)
    mouth = mouth_series(runtime, received.video_frames)
    rest = mouth[at < rest_until_s]
    before_stop = mouth[at < stopped_at_s]
    assert len(rest) > 10, len(rest)
    rest_level = float(np.percentile(rest, 99))
    speaking = float(np.median(before_stop[-10:]))
    # VP8 leaves ~4-5 at rest against the uncompressed avatar; the open mouth reads ~8.
    assert speaking > rest_level + 2.0, (rest_level, speaking)  # it spoke up to the stop
    threshold = rest_level + 0.25 * (speaking - rest_level)
    assert at[-1] >= stopped_at_s, "no frame arrived after the stop"
    assert mouth[-1] <= threshold, (mouth[-1], threshold)
    # It continues the stream's pts: the rest frames come one per period (an aiortc receiver
    # holds the last until a next one that never comes; an encoder may skip one under rate
    # pressure).
    assert 0 < received.video_pts[-1] - received.video_pts[-2] <= 2 * 3600, received.video_pts
    return f"mouth {speaking:.1f} speaking -> {mouth[-1]:.1f} last (rest {rest_level:.1f})"


async def test_shutdown_sends_calls_and_viewers_a_last_frame_at_rest(runtime: Runtime) -> None:
    runner, url = await start_app(create_app(ServerConfig(), runtime))
    speech_48k = np.concatenate((np.zeros(int(LEAD_S * 48_000), np.float32), vowel(60, 48_000)))
    stopped = False
    async with aiohttp.ClientSession() as http:
        viewer = WhepViewer(url, "stage")
        call = LoopbackPeer(url, speech_48k)
        try:
            await viewer.connect(http)
            await call.connect(http)
            await asyncio.sleep(LEAD_S)
            rest_until_s = time.monotonic() - 0.3  # margin for the lookahead and the hop
            async with await ChannelClient.connect(url, "stage", 24_000, http=http) as driver:
                await driver.push(pcm16(vowel(20)))
                await driver.wait_for("playback_started", 5)
                await asyncio.sleep(2.0)  # both mouths wide open by now
                assert len(call.received.video_frames) > 75, "the call got too few frames"
                stopped_at = time.monotonic()
                stopped = True
                await runner.cleanup()
                took_s = time.monotonic() - stopped_at
            await asyncio.sleep(0.3)  # the last packets: decode and record
            for name, peer in (("call", call.received), ("viewer", viewer.received)):
                print(f"{name}: {check_ends_at_rest(runtime, peer, rest_until_s, stopped_at)}")
            print(f"stopped in {took_s:.2f} s")
            assert took_s < 2.0, took_s
        finally:
            if not stopped:
                await runner.cleanup()
            await call.aclose()
            await viewer.aclose()
