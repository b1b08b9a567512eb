"""Graceful shutdown under load: SIGTERM (what systemd, Docker and Kubernetes send) with four
live calls and a channel viewer stops the served process within 2 s, exit status 0, with
nothing logged at ERROR and no traceback (the Ctrl-C case is in test_e2e_lifecycle.py)."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.probe.viewer import WhepViewer
from tests.servers import serve_subprocess

pytestmark = [pytest.mark.realtime, pytest.mark.slow]


async def test_sigterm_with_four_live_calls_exits_cleanly_within_2_s() -> None:
    async with serve_subprocess() as served, aiohttp.ClientSession() as http:
        url = served.url
        peers = [
            LoopbackPeer(url, speechlike_48k(4.0), loop=True, keep_frames=False) for _ in range(4)
        ]
        for peer in peers:
            await peer.connect(http)
        viewer = WhepViewer(url, "stage", keep_frames=False)
        await viewer.connect(http)
        deadline = time.monotonic() + 15
        while not all(len(p.received.video_at_s) > 10 for p in [*peers, viewer]):
            assert time.monotonic() < deadline, "not all peers got video"
            await asyncio.sleep(0.1)
        async with http.get(f"{url}/health") as r:
            assert (await r.json())["sessions"] == 4
        stopped = await served.stop(signal.SIGTERM)
        for peer in peers:
            await peer.aclose()
        await viewer.aclose()
    stopped.assert_clean(within_s=2.0)
