"""Property-based fuzzing of the HTTP API from its OpenAPI description (schemathesis).

A real server (built-in model in ONNX Runtime, real aiortc) runs on its own event loop in a
thread; schemathesis generates valid and invalid requests for every described operation and
sends them over HTTP with the token. Each answer must be documented for its operation, be the
one JSON error shape when it is an error, and never be a server error, except a 503 at a
configured limit (with Retry-After). Afterwards the server still serves (health and a WHEP
viewer at 25 fps) and nothing was logged at ERROR.

Examples per operation: ``AVATAR_STREAMER_FUZZ_EXAMPLES`` (default 30).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from streamer.probe.viewer import WhepViewer
from streamer.server.app import ServerConfig, create_app
from streamer.server.config import ChannelConfig
from streamer.server.http.access import AccessConfig
from streamer.server.http.openapi import describe_api
from streamer.server.media.runtime import build_runtime

REPO = Path(__file__).resolve().parents[1]
TOKEN = "fuzz-token-0123456789abcdef"
EXAMPLES = int(os.environ.get("AVATAR_STREAMER_FUZZ_EXAMPLES", "30"))
LIMIT_CODES = {"too_many_sessions", "too_many_channels", "too_many_viewers", "render_busy"}

# SDP bodies: arbitrary text, and offers built from real SDP lines in hostile orders and
# sizes (missing sections, absurd ports and payload types, huge attribute lines).
_SDP_LINES = st.sampled_from(
    [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "m=video 99999999 UDP/TLS/RTP/SAVPF -1",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:96 VP8/0",
        "a=recvonly",
        "a=sendrecv",
        "a=mid:0",
        "a=group:BUNDLE 0 1 2 3",
        "a=ice-ufrag:x",
        "a=ice-pwd:" + "y" * 40,
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=fingerprint:sha-999 zz",
        "a=setup:actpass",
        "a=candidate:1 1 UDP 1 999.1.1.1 9 typ host",
        "a=ssrc:4294967296 cname:x",
        "a=" + "z" * 5000,
    ]
)
SDP = st.one_of(
    st.text(max_size=400),
    st.lists(_SDP_LINES, max_size=40).map(lambda lines: "\r\n".join(lines) + "\r\n"),
).map(lambda text: text.encode("utf-8", "surrogatepass"))
schemathesis.openapi.media_type("application/sdp", SDP)

schema = schemathesis.openapi.from_dict(describe_api())


class ErrorLog(logging.Handler):
    """Every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ThreadedServer:
    """The app on its own event loop in a thread, so synchronous clients can call it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        runtime = build_runtime(REPO / "avatars")
        self._runner = web.AppRunner(create_app(self.config, runtime))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(120), "the server did not start"

    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def errors_logged() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def live(errors_logged: ErrorLog) -> Iterator[ThreadedServer]:
    # Small limits so that generated names cannot create channels without bound.
    config = ServerConfig(
        max_sessions=2,
        connect_timeout_s=3.0,
        channels=ChannelConfig(max_channels=3, max_upload_bytes=1_000_000),
        access=AccessConfig(token=TOKEN),
    )
    server = ThreadedServer(config)
    server.start()
    yield server
    server.stop()


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except a 503 at a configured limit that says when to retry."""
    status = response.status_code
    if status < 500:
        return None
    try:
        code = response.json().get("error")
    except ValueError:
        code = None
    limited = status == 503 and code in LIMIT_CODES
    assert limited, f"{case.method} {case.formatted_path} -> {status} {response.text[:300]}"
    headers = {k.lower() for k in response.headers}
    assert "retry-after" in headers, f"{case.method} {case.formatted_path}: 503 without it"
    return None


def one_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str), response.text[:300]
        assert isinstance(body.get("message"), str), response.text[:300]
        assert "Traceback" not in response.text
    return None


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases each run: a failure here is reproducible
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: Any, live: ThreadedServer) -> None:
    assert live.alive()
    response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(
        response,
        checks=[
            no_server_error,
            one_error_shape,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            unsupported_method,  # an undescribed method on a described path: 405
        ],
    )


@pytest.mark.slow
@pytest.mark.realtime
async def test_after_fuzzing_the_server_still_serves(
    live: ThreadedServer, errors_logged: ErrorLog
) -> None:
    assert live.alive()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(f"{live.url}/health") as r:
            assert r.status == 200
        # Free a channel slot (fuzzing may have used them all), then watch one at 25 fps.
        async with http.get(f"{live.url}/channels") as r:
            names = [c["name"] for c in (await r.json())["channels"]]
        for name in names:
            async with http.delete(f"{live.url}/channels/{name}") as r:
                assert r.status == 200
        viewer = WhepViewer(live.url, "after", keep_frames=False)
        await viewer.connect(http)
        deadline = time.monotonic() + 10
        while len(viewer.received.video_at_s) < 10:
            assert time.monotonic() < deadline, "no video after fuzzing"
            await asyncio.sleep(0.1)
        n0, t0 = len(viewer.received.video_at_s), time.monotonic()
        await asyncio.sleep(2.0)
        fps = (len(viewer.received.video_at_s) - n0) / (time.monotonic() - t0)
        await viewer.aclose(http)
    assert abs(fps - 25.0) <= 1.5, fps
    assert not errors_logged.records, [r.getMessage() for r in errors_logged.records][:5]
