"""ICE servers for the pages: coturn's shared-secret credentials (checked against openssl, an
independent HMAC), the browser's iceServers shape, and GET /ice-servers over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from streamer.cli import build_parser, main
from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.probe.viewer import WhepViewer
from streamer.server.app import ServerConfig, create_app
from streamer.server.commands.serve import server_config
from streamer.server.http.access import AccessConfig, access_from_args
from streamer.server.media.ice import (
    TURN_SECRET_ENV,
    TurnConfig,
    TurnConfigError,
    browser_ice_servers,
    server_configuration,
    turn_credentials,
)
from streamer.server.media.runtime import build_runtime
from tests.servers import serve_subprocess, start_app

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
    runner, url = await start_app(create_app(config, build_runtime(REPO / "avatars")))
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


def test_server_configuration_puts_turn_first_with_fresh_credentials() -> None:
    assert [
        s.urls for s in server_configuration(("stun:s.example.org",), None, 0.0).iceServers
    ] == ["stun:s.example.org"]
    turn = TurnConfig(urls=("turn:t.example.org:3478",), secret=SECRET, ttl_s=60)
    # A credential-less turn: URL among the --ice-server ones must not win (aiortc takes the
    # first TURN server it finds).
    config = server_configuration(("stun:s.example.org", "turn:other.example.org"), turn, 100.0)
    first, *rest = config.iceServers
    assert first.urls == ["turn:t.example.org:3478"]
    assert (first.username, first.credential) == turn_credentials(SECRET, "server", 100.0, 60)
    assert first.username == "160:server"
    assert [s.urls for s in rest] == ["stun:s.example.org", "turn:other.example.org"]
    later = server_configuration((), turn, 130.0).iceServers[0]
    assert later.username == "190:server"  # each peer its own pair


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def turn_server() -> Iterator[str]:
    """A real coturn on 127.0.0.1 with coturn's shared-secret scheme; yields its TURN URL."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn's turnserver is not installed (apt-get install coturn)")
    port = _free_udp_port()
    relay_port = _free_udp_port()
    proc = subprocess.Popen(
        [
            binary,
            "-n",  # no configuration file
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={relay_port}",
            f"--max-port={relay_port + 20}",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=avatar.test",
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers_stun(port):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "turnserver did not start"
            time.sleep(0.1)
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()  # type: ignore[union-attr]


def _answers_stun(port: int) -> bool:
    """Whether a STUN binding request to 127.0.0.1:port gets a binding success response."""
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, b"avatar-test!")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request, ("127.0.0.1", port))
        try:
            data = s.recv(2048)
        except OSError:
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == b"avatar-test!"


def _relay_candidates(sdp: str) -> list[str]:
    return [
        line for line in sdp.splitlines() if line.startswith("a=candidate") and " typ relay" in line
    ]


async def _wait_connected(pc: RTCPeerConnection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while pc.connectionState != "connected":
        assert time.monotonic() < deadline, pc.connectionState
        await asyncio.sleep(0.05)


@pytest.mark.realtime
@pytest.mark.parametrize("secret", [SECRET, "not-the-secret"], ids=["right", "wrong"])
async def test_the_servers_own_peers_authenticate_to_turn(turn_server: str, secret: str) -> None:
    """A relay candidate in the server's answers (to a call and to a channel viewer) proves it
    allocated on the TURN server with the credentials it generated; with a wrong secret there
    is none, and the call still connects over host candidates."""
    config = ServerConfig(turn=TurnConfig(urls=(turn_server,), secret=secret, ttl_s=60))
    runner, url = await start_app(create_app(config, build_runtime(REPO / "avatars")))
    try:
        async with aiohttp.ClientSession() as http:
            peer = LoopbackPeer(url, speechlike_48k(2.0), loop=True, keep_frames=False)
            viewer = WhepViewer(url, "stage", keep_frames=False)
            try:
                await peer.connect(http)
                await viewer.connect(http)
                call_relays = _relay_candidates(peer.pc.remoteDescription.sdp)
                viewer_relays = _relay_candidates(viewer.pc.remoteDescription.sdp)
                if secret == SECRET:
                    assert call_relays
                    assert viewer_relays
                    assert all(" 127.0.0.1 " in c for c in call_relays + viewer_relays)
                else:
                    assert call_relays == []
                    assert viewer_relays == []
                await _wait_connected(peer.pc, 10.0)
                await _wait_connected(viewer.pc, 10.0)
            finally:
                await peer.aclose(http)
                await viewer.aclose(http)
    finally:
        await runner.cleanup()


def test_live_turn_urls_need_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TURN_SECRET_ENV, raising=False)
    assert main(["live", "--mic", "--turn-url", "turn:t.example.org:3478"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert TURN_SECRET_ENV in err[0]


@pytest.mark.realtime
@pytest.mark.slow
async def test_live_gives_its_viewers_and_its_own_peers_turn(turn_server: str) -> None:
    async with (
        serve_subprocess(
            "--turn-url",
            turn_server,
            command=("tests.live_with_fake_mic",),
            env={TURN_SECRET_ENV: SECRET},
        ) as served,
        aiohttp.ClientSession() as http,
    ):
        url = served.url
        async with http.get(f"{url}/ice-servers") as r:
            servers = (await r.json())["iceServers"]
        assert servers[0]["urls"] == [turn_server]
        viewer = WhepViewer(url, "live", keep_frames=False)
        try:
            await viewer.connect(http)
            assert _relay_candidates(viewer.pc.remoteDescription.sdp)
            await _wait_connected(viewer.pc, 10.0)
        finally:
            await viewer.aclose(http)
        stopped = await served.stop(signal.SIGINT)
    assert stopped.code == 0, stopped.output[-2000:]
