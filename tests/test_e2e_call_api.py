"""The call API's bad-input corpus: hostile SDP, huge and deep bodies, wrong content types,
unknown routes and methods, invalid names, hostile audio and image files, WebSocket abuse.
Each case gets its status and the one JSON error shape, while a live call keeps receiving
25 fps throughout (asserted). The channel API's own corpus is in test_e2e_channels_api.py."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import time
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from streamer.server.config import ChannelConfig
from tests.servers import start_app

pytestmark = pytest.mark.realtime

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    config = ServerConfig(
        max_sessions=2,
        max_body_bytes=MAX_BODY_BYTES,
        channels=ChannelConfig(max_upload_bytes=200_000),
    )
    runner, url = await start_app(create_app(config, runtime))
    yield url, runner.app
    await runner.cleanup()


async def a_real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


def wav_bytes(rate_hz: int, channels: int, n: int, lie_rate_hz: int | None = None) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.zeros(n * channels, "<i2").tobytes())
    data = bytearray(buf.getvalue())
    if lie_rate_hz is not None:  # a header that claims an absurd sample rate
        data[24:28] = struct.pack("<I", lie_rate_hz)
    return bytes(data)


PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200014873c2a40000000049454e44ae426082"
)


def cases(real_sdp: str) -> list[tuple[str, str, str, dict[str, Any], int, str]]:
    """(name, method, path, request kwargs, status, error code)."""
    j = {"Content-Type": "application/json"}
    no_audio = real_sdp.split("m=audio")[0] + "m=video" + real_sdp.split("m=video", 1)[1]
    bad_pt = re.sub(r"m=audio (\d+) (\S+) [^\r]*", r"m=audio \1 \2 999", real_sdp)
    no_fingerprint = "\r\n".join(
        line for line in real_sdp.split("\r\n") if not line.startswith("a=fingerprint")
    )
    return [
        ("offer: not JSON", "POST", "/offer", {"data": "{nope", "headers": j}, 400,
         "invalid_json"),
        ("offer: invalid UTF-8", "POST", "/offer", {"data": b"\xff\xfe{", "headers": j}, 400,
         "invalid_json"),
        ("offer: JSON nested 50k deep", "POST", "/offer", {"data": "[" * 50_000, "headers": j},
         400, "invalid_json"),
        ("offer: a JSON array", "POST", "/offer", {"json": [1, 2]}, 400, "invalid_json"),
        ("offer: text/plain", "POST", "/offer", {"data": "x", "headers": {"Content-Type":
         "text/plain"}}, 415, "unsupported_media_type"),
        ("offer: form-encoded", "POST", "/offer", {"data": {"sdp": "x"}}, 415,
         "unsupported_media_type"),
        ("offer: no sdp", "POST", "/offer", {"json": {"type": "offer"}}, 400, "invalid_offer"),
        ("offer: sdp not a string", "POST", "/offer", {"json": {"sdp": 5, "type": "offer"}}, 400,
         "invalid_offer"),
        ("offer: type answer", "POST", "/offer", {"json": {"sdp": real_sdp, "type": "answer"}},
         400, "invalid_offer"),
        ("offer: no audio", "POST", "/offer", {"json": {"sdp": no_audio, "type": "offer"}}, 400,
         "no_audio"),
        ("offer: garbage with m=audio", "POST", "/offer",
         {"json": {"sdp": "v=0\r\nm=audio x\r\n", "type": "offer"}}, 400, "bad_sdp"),
        ("offer: payload type 999", "POST", "/offer", {"json": {"sdp": bad_pt, "type": "offer"}},
         400, "bad_sdp"),
        ("offer: no DTLS fingerprint", "POST", "/offer",
         {"json": {"sdp": no_fingerprint, "type": "offer"}}, 400, "bad_sdp"),
        ("offer: NUL bytes", "POST", "/offer",
         {"json": {"sdp": "v=0\x00\r\nm=audio 9\x00 UDP 0\r\n", "type": "offer"}}, 400,
         "bad_sdp"),
        ("offer: body over the limit", "POST", "/offer",
         {"json": {"sdp": "v=0" + "x" * (MAX_BODY_BYTES + 1), "type": "offer"}}, 413,
         "body_too_large"),
        ("offer: unknown avatar", "POST", "/offer",
         {"json": {"sdp": real_sdp, "type": "offer", "avatar": "nobody"}}, 404,
         "avatar_not_found"),
        ("offer: avatar ../default", "POST", "/offer",
         {"json": {"sdp": real_sdp, "type": "offer", "avatar": "../default"}}, 400,
         "invalid_avatar_name"),
        ("offer: avatar a number", "POST", "/offer",
         {"json": {"sdp": real_sdp, "type": "offer", "avatar": 7}}, 400, "invalid_avatar_name"),
        ("sessions: unknown id", "DELETE", "/sessions/nobody", {}, 404, "session_not_found"),
        ("sessions: GET unknown id", "GET", "/sessions/nobody", {}, 404, "session_not_found"),
        ("sessions: POST", "POST", "/sessions/nobody", {}, 405, "method_not_allowed"),
        ("offer: PUT", "PUT", "/offer", {"json": {}}, 405, "method_not_allowed"),
        ("health: POST", "POST", "/health", {}, 405, "method_not_allowed"),
        ("unknown route", "GET", "/admin", {}, 404, "not_found"),
        ("unknown method", "PATCH", "/channels", {}, 405, "method_not_allowed"),
        ("static: missing file", "GET", "/static/nope.js", {}, 404, "not_found"),
        ("static: dot file", "GET", "/static/.env", {}, 404, "not_found"),
        ("speak: a PNG image", "POST", "/channels/c/speak", {"data": PNG_1PX}, 400,
         "unreadable_audio"),
        ("speak: WAV claiming 4 GHz", "POST", "/channels/c/speak",
         {"data": wav_bytes(16_000, 1, 1600, lie_rate_hz=4_000_000_000)}, 400,
         "unreadable_audio"),
        ("speak: WAV header only", "POST", "/channels/c/speak",
         {"data": wav_bytes(16_000, 1, 0)}, 400, "unreadable_audio"),
        ("speak: form without boundary", "POST", "/channels/c/speak",
         {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400, "bad_form"),
        ("render: form without boundary", "POST", "/render",
         {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400, "bad_form"),
        ("render: not a form", "POST", "/render", {"data": b"RIFF"}, 415,
         "unsupported_media_type"),
        ("render: unknown job", "GET", "/render/nope", {}, 404, "render_not_found"),
        ("push: plain GET, no upgrade", "GET", "/channels/c/audio?sample_rate=16000", {}, 400,
         "not_a_websocket"),
        ("push: sample rate 1e20", "GET", "/channels/c/audio?sample_rate=1" + "0" * 20, {}, 400,
         "bad_sample_rate"),
    ]  # fmt: skip


async def test_call_api_bad_input_corpus_while_a_call_runs_at_25_fps(server) -> None:
    url, app = server
    async with aiohttp.ClientSession() as http:
        peer = LoopbackPeer(url, speechlike_48k(4.0), loop=True, keep_frames=False)
        await peer.connect(http)
        deadline = time.monotonic() + 10
        while len(peer.received.video_at_s) < 25:
            assert time.monotonic() < deadline, "the call got no video"
            await asyncio.sleep(0.1)
        real_sdp = await a_real_offer()
        started = time.monotonic()
        n0 = len(peer.received.video_at_s)
        seen: list[str] = []
        for name, method, path, kwargs, status, code in cases(real_sdp):
            async with http.request(method, f"{url}{path}", **kwargs) as r:
                body = await r.json()
                assert (r.status, body.get("error")) == (status, code), (name, body)
                assert isinstance(body["message"], str), name
                assert body["message"], name
                assert "Traceback" not in body["message"], name
                if status == 405:
                    assert r.headers["Allow"], name
                if status == 503:
                    assert int(r.headers["Retry-After"]) > 0, name
            seen.append(name)
        # A WebSocket handshake that is refused is the same JSON error.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{url}/channels/c/audio?sample_rate=5")
        assert refused.value.status == 400
        # A body streamed without Content-Length past the limit is cut off at the limit.
        chunks = _chunks(b"{" + b" " * 4096, MAX_BODY_BYTES // 4096 + 4)
        async with http.post(f"{url}/offer", data=chunks(), headers={
            "Content-Type": "application/json"}) as r:  # fmt: skip
            assert (r.status, (await r.json())["error"]) == (413, "body_too_large")
        async with http.get(f"{url}/health") as r:
            assert (await r.json())["sessions"] == 1
        # At the session limit: 503 with Retry-After, and the live calls never notice.
        second = LoopbackPeer(url, speechlike_48k(2.0), loop=True, keep_frames=False)
        await second.connect(http)
        async with http.post(f"{url}/offer", json={"sdp": real_sdp, "type": "offer"}) as r:
            assert (r.status, (await r.json())["error"]) == (503, "too_many_sessions")
            assert int(r.headers["Retry-After"]) > 0
        seen.append("offer: beyond max sessions")
        await second.aclose(http)
        # Measure over at least 3 s that include the whole corpus.
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        elapsed_s = time.monotonic() - started
        arrivals = np.asarray(peer.received.video_at_s[n0:])
        fps = len(arrivals) / elapsed_s
        await peer.aclose(http)
    assert len(seen) >= 30
    assert len(set(seen)) == len(seen)
    assert app[SERVER].sessions == {}
    # Through all of it the call kept receiving 25 fps.
    assert elapsed_s >= 3.0
    assert abs(fps - 25.0) <= 1.5, (fps, elapsed_s)
    assert np.diff(arrivals).max() < 0.25  # no stall while it was being fed garbage


def _chunks(chunk: bytes, count: int) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    return gen
