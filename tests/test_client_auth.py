"""The repo's clients against a token-protected server (real in-process server, real peers):
with AVATAR_STREAMER_TOKEN set they send it on every request; without it (or with a wrong
one) they stop with one sentence that names the variable."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from streamer.client import ChannelClient, ChannelClientError
from streamer.client_auth import TokenRefusedError, server_session, token_from_env
from streamer.errors import StreamerError
from streamer.probe.analysis import AnalysisOptions
from streamer.probe.peer import LoopbackPeer
from streamer.server.app import AUTH_LIMITER, SERVER, Runtime, ServerConfig, create_app
from streamer.server.http.access import AccessConfig
from streamer.server.http.auth_limit import FailureLimit
from streamer.soak.runner import SoakConfig, run_soak
from streamer.tokens import TOKEN_ENV
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture
async def protected(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    access = AccessConfig(token=TOKEN, failure_limit=FailureLimit(max_failures=3))
    runner, url = await start_app(create_app(ServerConfig(access=access), runtime))
    yield url, runner.app
    await runner.cleanup()


def test_the_token_comes_from_the_environment_only() -> None:
    assert token_from_env({TOKEN_ENV: f"  {TOKEN} "}) == TOKEN
    assert token_from_env({TOKEN_ENV: ""}) is None
    assert token_from_env({}) is None


async def test_a_session_sends_the_token_and_names_the_variable_when_refused(
    protected: tuple[str, web.Application],
) -> None:
    url, app = protected
    async with server_session({TOKEN_ENV: TOKEN}) as http, http.get(f"{url}/metrics") as r:
        assert r.status == 200
        assert "avatar_sessions" in await r.text()
    async with server_session({}) as http:
        with pytest.raises(TokenRefusedError, match=f"needs the server's token.*set {TOKEN_ENV}"):
            await http.get(f"{url}/metrics")
    async with server_session({TOKEN_ENV: "wrong-token-0123456789"}) as http:
        for _ in range(2):  # the second and third failures from this address: locked out
            with pytest.raises(TokenRefusedError, match=f"refused the token in {TOKEN_ENV}"):
                await http.get(f"{url}/channels")
        # Locked out: the refusal says so (429, the token no longer checked).
        with pytest.raises(TokenRefusedError, match=f"for 60 s after too many.*{TOKEN_ENV}"):
            await http.get(f"{url}/channels")
    assert len(app[AUTH_LIMITER]) == 1


async def test_a_call_peer_and_the_push_client_use_the_variable(
    protected: tuple[str, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = protected
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with server_session() as http:
        peer = LoopbackPeer(url, np.zeros(48_000, np.float32), loop=True, keep_frames=False)
        with pytest.raises(TokenRefusedError, match=TOKEN_ENV):
            await peer.connect(http)
        await peer.aclose()
    with pytest.raises(ChannelClientError, match=f"401 .*set {TOKEN_ENV}"):
        await ChannelClient.connect(url, "lobby", 16_000)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with server_session() as http:
        peer = LoopbackPeer(url, np.zeros(48_000, np.float32), loop=True, keep_frames=False)
        await peer.connect(http)
        assert list(app[SERVER].sessions) == [peer.session_id]
        await peer.aclose(http)  # DELETE /sessions/{id} with the token
        assert not app[SERVER].sessions
        async with http.post(f"{url}/channels", json={"name": "studio"}) as r:
            assert r.status == 201
    async with await ChannelClient.connect(url, "studio", 16_000) as driver:
        await driver.push(np.zeros(1600, "<i2"))
        await driver.end_of_segment()
        assert (await driver.wait_for("playback_finished", 5))["position_s"] > 0
    assert len(app[AUTH_LIMITER]) == 1  # the two refusals above, not locked out (3 would)


def soak_config(url: str, out: Path) -> SoakConfig:
    return SoakConfig(
        url=url,
        peers=1,
        minutes=4 / 60,
        out_dir=out,
        avatars_dir=REPO / "avatars",
        scrape_every_s=1.0,
        stagger_s=0.0,
        analysis=AnalysisOptions(warmup_s=1.0, fps_window_s=1.0, av_window_s=2.0),
    )


@pytest.mark.realtime
async def test_the_soak_measures_a_protected_server_with_the_variable_set(
    protected: tuple[str, web.Application], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, app = protected
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    report = await run_soak(soak_config(url, tmp_path))
    (peer,) = report["peers"]
    # Generous bounds: 4 s of one real call on a shared 2-core machine.
    assert peer["time_to_first_frame_s"] is not None
    assert peer["frames"] >= 25
    server = report["series"]["server"]
    assert len(server["t_s"]) >= 3  # /metrics scraped with the token every second
    assert max(server["sessions"]) == 1  # real figures, not a parsed error body
    assert max(server["rss_mb"]) > 50
    assert not app[SERVER].sessions  # ended with DELETE (with the token)
    assert len(app[AUTH_LIMITER]) == 0  # not one request without the token


async def test_the_soak_without_the_variable_stops_with_one_clear_line(
    protected: tuple[str, web.Application], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, app = protected
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(StreamerError, match=f"needs the server's token.*set {TOKEN_ENV}"):
        await run_soak(soak_config(url, tmp_path))
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-0123456789")
    with pytest.raises(StreamerError, match=f"refused the token in {TOKEN_ENV}"):
        await run_soak(soak_config(url, tmp_path))
    assert not app[SERVER].sessions  # stopped before any call
    # The command: exit status 2 and that one sentence, no traceback.
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "streamer", "soak", "--url", url, "--out", str(tmp_path)),
        *("--peers", "1", "--minutes", "0.05", "--avatars-dir", str(REPO / "avatars")),
        cwd=REPO,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(command.communicate(), 120)
    lines = err.decode().strip().splitlines()
    assert command.returncode == 2, lines
    assert lines[-1] == (
        f"avatar-streamer: {url}/health needs the server's token: set {TOKEN_ENV} to it."
    )
    assert not any("Traceback" in line for line in lines)
