"""Graceful shutdown under load: SIGTERM (what systemd, Docker and Kubernetes send) with four
live calls and a channel viewer stops the served process within 2 s, exit status 0, with
nothing logged at ERROR and no traceback (the Ctrl-C case is in test_e2e_lifecycle.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from streamer.bench.peer import LoopbackPeer
from streamer.bench.signals import speechlike_48k
from streamer.bench.viewer import WhepViewer

pytestmark = [pytest.mark.realtime, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_with_four_live_calls_exits_cleanly_within_2_s() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer",
        "serve",
        "--port",
        str(port),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    output = b""
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.get(f"{url}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            peers = [
                LoopbackPeer(url, speechlike_48k(4.0), loop=True, keep_frames=False)
                for _ in range(4)
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
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            output = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
            code = await proc.wait()
            took_s = time.monotonic() - sent_at
            for peer in peers:
                await peer.aclose()
            await viewer.aclose()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode(errors="replace")
    assert code == 0, text[-2000:]
    assert took_s < 2.0, took_s
    assert "Traceback" not in text
    assert " ERROR " not in text
