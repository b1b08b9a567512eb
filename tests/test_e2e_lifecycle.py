"""Session and process lifecycle with real peers: vanishing clients, Ctrl-C under load."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from tests.servers import serve_subprocess, start_app

pytestmark = pytest.mark.realtime


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    app = create_app(ServerConfig(connect_timeout_s=3.0), runtime)
    runner, url = await start_app(app)
    yield url, app
    await runner.cleanup()


async def wait_until(predicate, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"not true after {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_peer_that_leaves_without_delete_is_cleaned_up(server) -> None:
    url, app = server
    sessions = app[SERVER].sessions
    async with aiohttp.ClientSession() as http:
        stays = LoopbackPeer(url, speechlike_48k(4.0), loop=True, keep_frames=False)
        leaves = LoopbackPeer(url, speechlike_48k(4.0), loop=True, keep_frames=False)
        await stays.connect(http)
        await leaves.connect(http)
        await wait_until(lambda: len(stays.received.video_at_s) > 25, 5)
        tasks_before = len(asyncio.all_tasks())
        await leaves.aclose()  # closes its peer connection, never calls DELETE
        # The server sees the DTLS close and tears the session down.
        await wait_until(lambda: len(sessions) == 1, 5)
        # The other session never noticed: frames kept coming at 25 fps.
        n0, t0 = len(stays.received.video_at_s), time.monotonic()
        await asyncio.sleep(2.0)
        fps = (len(stays.received.video_at_s) - n0) / (time.monotonic() - t0)
        assert 23 <= fps <= 27
        assert len(asyncio.all_tasks()) < tasks_before
        await stays.aclose(http)
    await wait_until(lambda: len(sessions) == 0, 5)


async def test_a_peer_that_never_connects_is_dropped_after_the_connect_timeout(server) -> None:
    url, app = server
    peer = LoopbackPeer(url, np.zeros(48_000, np.float32), keep_frames=False)
    peer.pc.addTransceiver(peer.track, direction="sendrecv")
    peer.pc.addTransceiver("video", direction="recvonly")
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    async with aiohttp.ClientSession() as http:
        body = {"sdp": peer.pc.localDescription.sdp, "type": "offer"}
        async with http.post(f"{url}/offer", json=body) as r:
            assert r.status == 200  # answered, but the client never applies the answer
    assert len(app[SERVER].sessions) == 1
    await wait_until(lambda: not app[SERVER].sessions, 3.0 + 3.0)
    await peer.pc.close()


@pytest.mark.slow
async def test_ctrl_c_with_live_sessions_exits_cleanly_within_2_s() -> None:
    async with serve_subprocess() as served, aiohttp.ClientSession() as http:
        peers = [
            LoopbackPeer(served.url, speechlike_48k(4.0), loop=True, keep_frames=False)
            for _ in range(2)
        ]
        for peer in peers:
            await peer.connect(http)
        await wait_until(lambda: all(len(p.received.video_at_s) > 10 for p in peers), 10)
        stopped = await served.stop(signal.SIGINT)
        for peer in peers:
            await peer.aclose()
    stopped.assert_clean(within_s=2.0)
