"""Limits answered cleanly over real HTTP/WebRTC: viewers per channel and in all, channels (503 with
Retry-After, the one JSON error), while the admitted viewer keeps its 25 fps."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

from streamer.probe.peer import LoopbackPeer
from streamer.probe.viewer import WhepError, WhepViewer
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from streamer.server.config import ChannelConfig
from tests.servers import start_app

pytestmark = pytest.mark.realtime


async def test_viewer_and_channel_limits_are_503_with_retry_after(runtime: Runtime) -> None:
    config = ServerConfig(
        retry_after_s=7,
        channels=ChannelConfig(max_channels=2, max_viewers_per_channel=1, max_viewers_total=1),
    )
    runner, url = await start_app(create_app(config, runtime))
    try:
        async with aiohttp.ClientSession() as http:
            first = WhepViewer(url, "one", keep_frames=False)
            await first.connect(http)
            second = WhepViewer(url, "one", keep_frames=False)
            with pytest.raises(WhepError) as refused:
                await second.connect(http)
            await second.aclose()
            assert refused.value.status == 503
            assert json.loads(refused.value.body)["error"] == "too_many_viewers"
            # The same over plain HTTP, to read the headers.
            offer = first.pc.localDescription.sdp
            headers = {"Content-Type": "application/sdp"}
            async with http.post(f"{url}/channels/one/whep", data=offer, headers=headers) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "7"
                assert (await r.json())["error"] == "too_many_viewers"
            async with http.post(f"{url}/channels", json={"name": "two"}) as r:
                assert r.status == 201
            # A viewer of another channel: the server-wide viewer limit.
            async with http.post(f"{url}/channels/two/whep", data=offer, headers=headers) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "7"
                assert "limit of 1 viewers" in (await r.json())["message"]
            async with http.post(f"{url}/channels", json={"name": "three"}) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "7"
                assert (await r.json())["error"] == "too_many_channels"
            # The admitted viewer never noticed.
            n0, t0 = len(first.received.video_at_s), time.monotonic()
            await asyncio.sleep(2.0)
            fps = (len(first.received.video_at_s) - n0) / (time.monotonic() - t0)
            assert abs(fps - 25.0) <= 1.5, fps
            await first.aclose(http)
    finally:
        await runner.cleanup()


async def test_a_call_whose_peer_stops_sending_audio_is_closed_after_the_idle_timeout(
    runtime: Runtime,
) -> None:
    runner, url = await start_app(create_app(ServerConfig(session_idle_timeout_s=1.0), runtime))
    server = runner.app[SERVER]
    try:
        async with aiohttp.ClientSession() as http:
            # Both connected; one sends silence (packets: not idle), the other stops sending.
            silent = LoopbackPeer(url, np.zeros(48_000, np.float32), loop=True, keep_frames=False)
            gone = LoopbackPeer(url, np.zeros(48_000, np.float32), loop=True, keep_frames=False)
            for peer in (silent, gone):
                await peer.connect(http)
            deadline = time.monotonic() + 10
            while not all(len(p.received.video_at_s) > 10 for p in (silent, gone)):
                assert time.monotonic() < deadline, "no video"
                await asyncio.sleep(0.05)
            gone.track.stop()  # its sender ends; ICE and DTLS stay up, no audio flows
            stopped_at = time.monotonic()
            while gone.session_id in server.sessions:
                assert time.monotonic() < stopped_at + 5, "the idle call was not closed"
                await asyncio.sleep(0.02)
            closed_after_s = time.monotonic() - stopped_at
            # The timeout, plus up to one check period (timeout / 4) and a packet's worth.
            assert 0.9 <= closed_after_s <= 1.0 + 0.25 + 0.3, closed_after_s
            frames = len(silent.received.video_at_s)
            await asyncio.sleep(1.6)  # beyond another timeout: the silent call stays
            assert silent.session_id in server.sessions
            assert len(silent.received.video_at_s) - frames >= 30
            async with http.get(f"{url}/metrics") as r:
                assert "avatar_sessions_idle_closed_total 1.0" in await r.text()
            async with http.delete(f"{url}/sessions/{gone.session_id}") as r:
                assert r.status == 404
            gone.session_id = None
            for peer in (silent, gone):
                await peer.aclose(http)
    finally:
        await runner.cleanup()
