"""Access control over real HTTP: the bearer token, public and viewer routes, CORS, no path
traversal, and the refusal to serve an exposed address without a token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from streamer.client import ChannelClient, ChannelClientError
from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.probe.viewer import WhepViewer
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from streamer.server.http.access import (
    Access,
    AccessConfig,
    ExposureError,
    access_of,
    check_exposure,
    is_loopback_host,
    token_matches,
)
from streamer.server.http.auth_limit import FailureLimit
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-0123456789abcdef"


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("127.1.2.3")
    assert is_loopback_host("::1")
    assert is_loopback_host("localhost")
    for exposed in ("0.0.0.0", "::", "", "192.168.1.10", "example.com"):
        assert not is_loopback_host(exposed), exposed


def test_an_exposed_bind_needs_a_long_enough_token() -> None:
    check_exposure("127.0.0.1", AccessConfig())
    check_exposure("0.0.0.0", AccessConfig(token=TOKEN))
    with pytest.raises(ExposureError, match="without an access token"):
        check_exposure("0.0.0.0", AccessConfig())
    with pytest.raises(ExposureError, match="at least 16"):
        check_exposure("127.0.0.1", AccessConfig(token="short"))


def test_the_token_stays_out_of_reprs() -> None:
    config = ServerConfig(access=AccessConfig(token=TOKEN))
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config.access)


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("é" * 8, TOKEN)  # non-ASCII is compared as bytes, no error


@pytest.mark.parametrize("command", [["serve"], ["live", "--mic"]])
def test_refuses_an_exposed_address_without_a_token_before_loading_anything(
    command: list[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AVATAR_STREAMER_TOKEN"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamer", *command, "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "without an access token" in done.stderr
    assert "AVATAR_STREAMER_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30  # refused before the model, avatars or microphone


async def serve(runtime: Runtime, config: ServerConfig) -> tuple[web.AppRunner, str]:
    runner, url = await start_app(create_app(config, runtime))
    return runner, url


# The route-by-route tests below make dozens of failed attempts from one address; the lock-out
# has its own tests (tests/test_server_auth_limit.py).
LENIENT = FailureLimit(max_failures=10_000)


@pytest.fixture
async def guarded(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    config = ServerConfig(access=AccessConfig(token=TOKEN, failure_limit=LENIENT))
    runner, url = await serve(runtime, config)
    yield url, runner.app
    await runner.cleanup()


# Every route of the app and its level. A route added without a declared level is CONTROL
# (fail closed); this table makes any change of level a visible test change.
EXPECTED_LEVELS = {
    ("GET", "/"): Access.PUBLIC,
    ("GET", "/health"): Access.PUBLIC,
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("GET", "/view/{name}"): Access.PUBLIC,
    ("GET", "/static/{filename}"): Access.PUBLIC,
    ("GET", "/metrics"): Access.VIEWER,
    ("GET", "/ice-servers"): Access.VIEWER,
    ("GET", "/channels"): Access.VIEWER,
    ("GET", "/channels/{name}"): Access.VIEWER,
    ("POST", "/channels/{name}/whep"): Access.VIEWER,
    ("DELETE", "/channels/{name}/whep/{viewer_id}"): Access.VIEWER,
    ("POST", "/offer"): Access.CONTROL,
    ("DELETE", "/sessions/{session_id}"): Access.CONTROL,
    ("POST", "/channels"): Access.CONTROL,
    ("DELETE", "/channels/{name}"): Access.CONTROL,
    ("POST", "/channels/{name}/publish"): Access.CONTROL,
    ("GET", "/channels/{name}/audio"): Access.CONTROL,
    ("POST", "/channels/{name}/speak"): Access.CONTROL,
    ("POST", "/channels/{name}/interrupt"): Access.CONTROL,
    ("POST", "/render"): Access.CONTROL,
    ("GET", "/render/{job_id}"): Access.CONTROL,
    ("GET", "/render/{job_id}/result"): Access.CONTROL,
}


def route_levels(app: web.Application) -> dict[tuple[str, str], Access]:
    levels = {}
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if route.method == "HEAD":  # mirrors GET
            continue
        levels[(route.method, path)] = access_of(route.handler)
    return levels


async def test_every_route_has_the_expected_level(guarded) -> None:
    _url, app = guarded
    levels = route_levels(app)
    for key, level in EXPECTED_LEVELS.items():
        assert levels.get(key) == level, key
    # Routes this table does not know (added later) must be control routes: fail closed.
    for key in levels.keys() - EXPECTED_LEVELS.keys():
        assert levels[key] is Access.CONTROL, key


async def expect_json_error(r: aiohttp.ClientResponse, status: int, code: str) -> dict:
    body = await r.json()
    assert (r.status, body["error"]) == (status, code), body
    assert body["message"]
    return body


CONTROL_CALLS = [
    ("POST", "/offer", {"json": {"sdp": "v=0", "type": "offer"}}),
    ("DELETE", "/sessions/abc", {}),
    ("POST", "/channels", {"json": {"name": "x"}}),
    ("DELETE", "/channels/x", {}),
    ("POST", "/channels/x/publish", {"json": {"sdp": "v=0", "type": "offer"}}),
    ("GET", "/channels/x/audio?sample_rate=16000", {}),
    ("POST", "/channels/x/speak", {"data": b"RIFF"}),
    ("POST", "/channels/x/interrupt", {}),
    ("POST", "/render", {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}),
    ("GET", "/render/abc", {}),
    ("GET", "/render/abc/result", {}),
]
VIEWER_CALLS = [
    ("GET", "/metrics", {}),
    ("GET", "/ice-servers", {}),
    ("GET", "/channels", {}),
    ("GET", "/channels/x", {}),
    ("POST", "/channels/x/whep", {"data": "v=0", "headers": {"Content-Type": "application/sdp"}}),
    ("DELETE", "/channels/x/whep/abc", {}),
]


async def test_control_and_viewer_routes_need_the_token(guarded) -> None:
    url, app = guarded
    async with aiohttp.ClientSession() as http:
        for method, path, kwargs in CONTROL_CALLS + VIEWER_CALLS:
            for auth in (None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer "):
                headers = dict(kwargs.get("headers", {}))
                if auth:
                    headers["Authorization"] = auth
                args = {**kwargs, "headers": headers}
                async with http.request(method, f"{url}{path}", **args) as r:
                    await expect_json_error(r, 401, "unauthorized")
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
        # Nothing was created by any of them.
        assert not app[SERVER].sessions
        # Public routes need nothing.
        for path in ("/", "/health", "/view/x", "/static/call.js", "/static/view.js"):
            async with http.get(f"{url}{path}") as r:
                assert r.status == 200, path
        # Unknown routes are answered as such, token or not (nothing to protect there).
        async with http.get(f"{url}/nope") as r:
            await expect_json_error(r, 404, "not_found")


async def test_the_token_opens_control_routes_and_the_push_socket(guarded) -> None:
    url, _app = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(f"{url}/channels", json={"name": "studio"}) as r:
            assert r.status == 201, await r.text()
        async with http.get(f"{url}/channels") as r:
            assert [c["name"] for c in (await r.json())["channels"]] == ["studio"]
        async with http.post(f"{url}/channels/studio/interrupt") as r:
            assert r.status == 200
        async with http.get(f"{url}/metrics") as r:
            assert r.status == 200
    with pytest.raises(ChannelClientError, match="401"):
        await ChannelClient.connect(url, "studio", 16_000)
    with pytest.raises(ChannelClientError, match="401"):
        await ChannelClient.connect(url, "studio", 16_000, token="wrong-token-0123456789")
    async with await ChannelClient.connect(url, "studio", 16_000, token=TOKEN) as driver:
        await driver.push(np.zeros(1600, "<i2"))
        await driver.end_of_segment()
        finished = await driver.wait_for("playback_finished", 5)
        assert finished["position_s"] == pytest.approx(0.1, abs=0.01)
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.delete(f"{url}/channels/studio") as r,
    ):
        assert r.status == 200


@pytest.mark.realtime
async def test_a_call_and_a_whep_viewer_with_the_token_get_video(guarded) -> None:
    url, _app = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        peer = LoopbackPeer(url, speechlike_48k(2.0), loop=True, keep_frames=False)
        await peer.connect(http)
        viewer = WhepViewer(url, "lobby", keep_frames=False)
        await viewer.connect(http)
        deadline = time.monotonic() + 10
        while len(peer.received.video_at_s) < 25 or len(viewer.received.video_at_s) < 25:
            assert time.monotonic() < deadline, "no video with the token"
            await asyncio.sleep(0.1)
        await viewer.aclose(http)
        await peer.aclose(http)


async def test_public_viewers_need_no_token_but_control_still_does(runtime: Runtime) -> None:
    config = ServerConfig(access=AccessConfig(token=TOKEN, public_viewers=True))
    runner, url = await serve(runtime, config)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/channels") as r:
                assert r.status == 200
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
            async with http.post(
                f"{url}/channels/x/whep", data=" ", headers={"Content-Type": "application/sdp"}
            ) as r:
                await expect_json_error(r, 400, "invalid_offer")  # past the token check
            async with http.post(f"{url}/channels", json={"name": "x"}) as r:
                await expect_json_error(r, 401, "unauthorized")
    finally:
        await runner.cleanup()


async def test_cors_is_off_by_default(guarded) -> None:
    url, _app = guarded
    origin = {"Origin": "https://evil.example"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/health", headers=origin) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers
        preflight = {**origin, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{url}/offer", headers=preflight) as r:
            await expect_json_error(r, 403, "cors_refused")
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_for_configured_origins_only(runtime: Runtime) -> None:
    allowed = "https://studio.example"
    config = ServerConfig(access=AccessConfig(token=TOKEN, cors_origins=(allowed,)))
    runner, url = await serve(runtime, config)
    try:
        async with aiohttp.ClientSession() as http:
            preflight = {
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            async with http.options(f"{url}/channels", headers=preflight) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == allowed
                assert "POST" in r.headers["Access-Control-Allow-Methods"]
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with http.get(f"{url}/health", headers={"Origin": allowed}) as r:
                assert r.headers["Access-Control-Allow-Origin"] == allowed
            # Errors carry it too, or the page could not read why it was refused.
            async with http.post(f"{url}/channels", json={}, headers={"Origin": allowed}) as r:
                await expect_json_error(r, 401, "unauthorized")
                assert r.headers["Access-Control-Allow-Origin"] == allowed
            other = {"Origin": "https://other.example"}
            async with http.get(f"{url}/health", headers=other) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
            async with http.options(
                f"{url}/channels", headers={**other, "Access-Control-Request-Method": "POST"}
            ) as r:
                await expect_json_error(r, 403, "cors_refused")
    finally:
        await runner.cleanup()


async def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (HTTP clients normalise dot segments away)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/static/../pyproject.toml",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/pyproject.toml",
    "/static/..%2fpyproject.toml",
    "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/..\\pyproject.toml",
    "/static//etc/passwd",
    "/static/",
    "/static/.",
    "/static/...",
    "/static/a/../../pyproject.toml",
    "/view/..%2f..%2fpyproject.toml",
    "/view/%2e%2e",
    "/channels/..%2fx",
]


async def test_no_path_traversal(guarded) -> None:
    url, _app = guarded
    secret = (REPO / "pyproject.toml").read_bytes()[:40]
    for path in TRAVERSALS:
        status, body = await raw_get(url, path)
        assert status in (400, 401, 403, 404), (path, status)
        assert secret not in body, path
        assert b"root:" not in body, path
        assert b'"error"' in body, (path, body[:200])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for avatar in ("../default", "..", "a/b", "default\x00", "x" * 65):
            body = {"sdp": "v=0\r\nm=audio 9 UDP 0\r\n", "type": "offer", "avatar": avatar}
            async with http.post(f"{url}/offer", json=body) as r:
                await expect_json_error(r, 400, "invalid_avatar_name")
            async with http.post(f"{url}/channels", json={"name": "ok", "avatar": avatar}) as r:
                await expect_json_error(r, 400, "invalid_avatar_name")
        for name in ("..", "../x", "a.b", ""):
            async with http.post(f"{url}/channels", json={"name": name}) as r:
                await expect_json_error(r, 400, "invalid_channel_name")


HEALTH_DETAILS = {"model", "sessions", "max_sessions", "uptime_s"}


async def test_health_shows_details_only_with_the_token(guarded, runtime: Runtime) -> None:
    url, _app = guarded
    async with aiohttp.ClientSession() as http:
        # A load balancer's probe: liveness, nothing about the model or the load.
        async with http.get(f"{url}/health") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        for wrong in ("Bearer wrong-token-0123456789", f"Basic {TOKEN}"):
            async with http.get(f"{url}/health", headers={"Authorization": wrong}) as r:
                assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with http.get(f"{url}/health", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            body = await r.json()
            assert r.status == 200
            assert body["status"] == "ok"
            assert body.keys() >= HEALTH_DETAILS
            assert body["model"]["name"]
    # No token configured (loopback): everyone gets the details, as before.
    runner, open_url = await serve(runtime, ServerConfig())
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{open_url}/health") as r:
            assert (await r.json()).keys() >= HEALTH_DETAILS
    finally:
        await runner.cleanup()
