"""Idle channels (no viewer, no driver, no queued audio) are deleted after a timeout: the pure
tracker on synthetic times, and the registry's reaper with a real server (realtime)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from streamer.probe.viewer import WhepViewer
from streamer.server.app import ServerConfig, create_app
from streamer.server.channels.registry import IdleTracker
from streamer.server.channels.routes import CHANNELS
from streamer.server.config import ChannelConfig
from streamer.server.media.runtime import build_runtime
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]


def test_tracker_expires_only_what_stayed_idle_for_the_whole_timeout() -> None:
    t = IdleTracker(10.0)
    assert t.expired({"a": False, "b": True}, 100.0) == []
    assert t.expired({"a": False, "b": True}, 109.9) == []
    assert t.expired({"a": False, "b": False}, 110.0) == ["a"]  # b idle only since 110
    assert t.expired({"a": True, "b": False}, 119.0) == []  # a busy again: clock restarts
    assert t.expired({"a": False, "b": False}, 120.0) == ["b"]
    assert t.expired({"b": False}, 200.0) == ["b"]  # a vanished: forgotten
    assert t.expired({"a": False, "b": False}, 200.0) == ["b"]  # a starts anew
    assert t.expired({"a": False}, 210.0) == ["a"]


@pytest.mark.realtime
async def test_an_idle_channel_is_deleted_and_a_watched_one_is_not() -> None:
    config = ServerConfig(channels=ChannelConfig(idle_timeout_s=1.0))
    runner, url = await start_app(create_app(config, build_runtime(REPO / "avatars")))
    registry = runner.app[CHANNELS]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/channels", json={"name": "empty"}) as r:
                assert r.status == 201
            viewer = WhepViewer(url, "watched", keep_frames=False)
            await viewer.connect(http)
            deadline = time.monotonic() + 5
            while "empty" in registry.channels:
                assert time.monotonic() < deadline, "the idle channel was not deleted"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # past the timeout: the watched one stays
            assert list(registry.channels) == ["watched"]
            n = len(viewer.received.video_at_s)
            await asyncio.sleep(0.5)
            assert len(viewer.received.video_at_s) > n
            await viewer.aclose(http)
            deadline = time.monotonic() + 5
            while registry.channels:
                assert time.monotonic() < deadline, "the left channel was not deleted"
                await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
