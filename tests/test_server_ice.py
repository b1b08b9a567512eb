"""ICE servers for the pages: coturn's shared-secret credentials (checked against openssl, an
independent HMAC), the browser's iceServers shape, and GET /ice-servers over real HTTP."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from streamer.cli import build_parser
from streamer.server.access import AccessConfig, access_from_args
from streamer.server.app import ServerConfig, create_app
from streamer.server.cli import server_config
from streamer.server.ice import (
    TurnConfig,
    TurnConfigError,
    browser_ice_servers,
    turn_credentials,
)
from streamer.server.runtime import build_runtime

REPO = Path(__file__).resolve().parents[1]
SECRET = "coturn-static-auth-secret"
TOKEN = "ice-token-0123456789abcdef"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_turn_credentials_are_coturns_hmac_sha1() -> None:
    username, credential = turn_credentials(SECRET, "avatar", 1_700_000_000.7, 3600)
    assert username == "1700003600:avatar"  # expiry = now + ttl, whole seconds
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", SECRET, "-binary"],
        input=username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert credential == base64.b64encode(digest).decode()


def test_browser_ice_servers() -> None:
    assert browser_ice_servers((), None, 0.0) == []
    stun = ("stun:stun.example.org:3478",)
    assert browser_ice_servers(stun, None, 0.0) == [{"urls": ["stun:stun.example.org:3478"]}]
    turn = TurnConfig(urls=("turn:t.example.org:3478",), secret=SECRET, ttl_s=60)
    servers = browser_ice_servers(stun, turn, 100.0)
    assert servers[1]["urls"] == ["turn:t.example.org:3478"]
    assert servers[1]["username"] == "160:avatar"
    assert SECRET not in repr(turn)


def test_turn_urls_need_the_secret() -> None:
    args = build_parser().parse_args(["serve", "--turn-url", "turn:t.example.org:3478"])
    with pytest.raises(TurnConfigError, match="AVATAR_STREAMER_TURN_SECRET"):
        server_config(args, access_from_args(args, {}), {})
    config = server_config(args, access_from_args(args, {}), {"AVATAR_STREAMER_TURN_SECRET": "s"})
    assert config.turn == TurnConfig(("turn:t.example.org:3478",), "s", 3600)


async def test_get_ice_servers_hands_out_fresh_credentials_to_viewers_only() -> None:
    turn = TurnConfig(urls=("turn:t.example.org:3478",), secret=SECRET, ttl_s=600)
    config = ServerConfig(
        ice_servers=("stun:stun.example.org:3478",), turn=turn, access=AccessConfig(TOKEN)
    )
    runner = web.AppRunner(create_app(config, build_runtime(REPO / "avatars")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/ice-servers"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 401
            now = time.time()
            async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
                assert r.headers["Cache-Control"] == "no-store"
                servers = (await r.json())["iceServers"]
        assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
        expiry_s = int(servers[1]["username"].split(":")[0])
        assert now + 600 - 2 <= expiry_s <= now + 600 + 2
        assert (servers[1]["username"], servers[1]["credential"]) == turn_credentials(
            SECRET, "avatar", expiry_s - 600, 600
        )
        assert SECRET not in str(servers)
    finally:
        await runner.cleanup()
