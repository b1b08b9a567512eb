"""The pages against a server with a token, in real headless Chromium: without the token they
are refused (and say so), with ``#token=`` in their URL they work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from streamer.server.channels.routes import CHANNELS
from streamer.server.http.access import AccessConfig
from streamer.server.media.ice import TurnConfig
from tests.browser import CHROMIUM, Browser
from tests.servers import start_app
from tests.speech import spoken_clip
from tests.test_browser_call import write_wav

pytestmark = [
    pytest.mark.realtime,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (scripts/check installs it)"
    ),
]

TOKEN = "page-token-0123456789abcdef"


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    config = ServerConfig(access=AccessConfig(token=TOKEN))
    runner, url = await start_app(create_app(config, runtime))
    yield url, runner.app
    await runner.cleanup()


async def test_the_view_page_needs_and_uses_the_token(server) -> None:
    url, app = server
    async with Browser() as page:
        await page.goto(f"{url}/view/studio")
        await page.wait_for("window.viewState.error.startsWith('401')", 10)
        assert "studio" not in app[CHANNELS].channels  # refused before anything was created
        await page.goto(f"{url}/view/studio?fit=cover#token={TOKEN}")
        await page.wait_for("window.viewState.status === 'live'", 15)
        await page.wait_for("document.getElementById('video').videoWidth > 0", 10)
        assert len(app[CHANNELS].get("studio").viewers) == 1


async def test_the_call_page_needs_and_uses_the_token(server, tmp_path: Path) -> None:
    url, app = server
    wav = tmp_path / "voice.wav"
    write_wav(wav, spoken_clip(48_000), 48_000)
    async with Browser(fake_audio_wav=wav) as page:
        await page.goto(url + "/")
        await page.evaluate("document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent === 'failed'", 15)
        error = await page.evaluate("document.getElementById('error').textContent")
        assert "token" in error
        assert not app[SERVER].sessions
        await page.goto(f"{url}/?call=1#token={TOKEN}")
        await page.evaluate("document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent === 'live'", 15)
        await page.wait_for("document.getElementById('video').videoWidth > 0", 10)
        assert len(app[SERVER].sessions) == 1
        await page.evaluate("document.getElementById('stop').click()")
        await page.wait_for("document.getElementById('status').textContent === 'idle'", 5)
        # Stopping ends the session (its DELETE carries the token).
        for _ in range(50):
            if not app[SERVER].sessions:
                break
            await asyncio.sleep(0.1)
        assert not app[SERVER].sessions


async def test_the_pages_use_the_servers_ice_servers(runtime: Runtime) -> None:
    # An unreachable TURN server (.invalid never resolves): the page still connects over host
    # candidates, with the TURN server and its short-lived credentials in its configuration.
    turn = TurnConfig(urls=("turn:turn.invalid:3478",), secret="s" * 20, ttl_s=600)
    config = ServerConfig(access=AccessConfig(token=TOKEN), turn=turn)
    runner, url = await start_app(create_app(config, runtime))
    try:
        async with Browser() as page:
            await page.goto(f"{url}/view/studio#token={TOKEN}")
            await page.wait_for("window.viewState.status === 'live'", 20)
            servers = await page.evaluate("window.viewPc.getConfiguration().iceServers")
    finally:
        await runner.cleanup()
    assert servers[0]["urls"] == ["turn:turn.invalid:3478"]
    assert servers[0]["username"].endswith(":avatar")
    assert servers[0]["credential"]
