"""Requests aiohttp refuses before routing get the one JSON error shape, over a raw TCP socket
to the real app: garbage, bad versions and methods, oversized headers, bad chunked bodies, NUL
in a header, invalid Content-Length. Each gets its status, ``application/json`` and no parser
internals; the server keeps answering normal requests. ``serve`` and ``live`` serve with it
(real subprocesses). One test pins the aiohttp internals the hook relies on."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import signal
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.http.protocol import JsonErrorAppRunner, JsonErrorRequestHandler
from tests.servers import serve_subprocess, start_app

HOST = b"Host: 127.0.0.1\r\n"

# (name, bytes sent, expected status, expected code)
BAD_REQUESTS = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("bad HTTP version", b"GET /health HTTP/9.9\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("invalid method", b"G@T /health HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    (
        "TLS on the HTTP port",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
        400,
        "bad_request",
    ),
    (
        "100 KB header",
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    (
        "10 KB URL",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        431,
        "headers_too_large",
    ),
    (
        "200 headers",
        b"GET /health HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        400,
        "bad_request",
    ),
    (
        "bad chunked body",
        b"POST /offer HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "NUL in a header",
        b"GET /health HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "invalid Content-Length",
        b"POST /offer HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n{}",
        400,
        "bad_request",
    ),
    (
        "two Content-Lengths",
        b"POST /offer HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "bad_request",
    ),
]


@pytest.fixture
async def port(runtime: Runtime) -> AsyncIterator[int]:
    runner, _url = await start_app(create_app(ServerConfig(), runtime))
    yield int(runner.addresses[0][1])
    await runner.cleanup()


async def exchange(port: int, *parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``parts`` (a pause between them) on a fresh connection; read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(0.2)  # the parser has seen the headers by now
            writer.write(part)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)  # the server closes after an error
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(
    status: int, headers: dict[str, str], body: bytes, want: int, code: str
) -> None:
    assert status == want, body
    assert headers["content-type"] == "application/json; charset=utf-8"
    error = json.loads(body)
    assert set(error) == {"error", "message"}
    assert error["error"] == code
    assert isinstance(error["message"], str)
    assert error["message"].endswith(".")
    for leak in ("Traceback", "aiohttp", "Got more than", "HttpProcessingError", "a" * 50):
        assert leak not in error["message"]


async def assert_still_serving(port: int) -> None:
    status, _headers, body = await exchange(
        port, b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    assert status == 200
    assert json.loads(body)["status"] == "ok"


@pytest.mark.parametrize(
    ("request_bytes", "want", "code"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
async def test_pre_routing_errors_are_json(
    port: int, request_bytes: bytes, want: int, code: str
) -> None:
    assert_json_error(*await exchange(port, request_bytes), want, code)
    await assert_still_serving(port)


async def test_the_aiohttp_internals_the_hook_relies_on() -> None:
    """Fails when an aiohttp upgrade changes what streamer/server/http/protocol.py overrides."""
    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert callable(getattr(RequestHandler, "_make_error_handler", None))
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    server = web.Server(lambda _r: web.Response())  # type: ignore[arg-type,return-value]
    assert isinstance(server._loop, asyncio.AbstractEventLoop)
    assert isinstance(server._kwargs, dict)


async def test_the_runner_makes_json_error_connections(runtime: Runtime) -> None:
    runner = JsonErrorAppRunner(create_app(ServerConfig(), runtime))
    await runner.setup()
    try:
        assert runner.server is not None
        assert type(runner.server()) is JsonErrorRequestHandler
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/offer", "application/json"),
        ("/channels/stage/whep", "application/sdp"),
        ("/channels/stage/speak", "audio/wav"),
        ("/render", "multipart/form-data; boundary=b"),
    ],
)
async def test_a_client_hanging_up_mid_body_is_one_info_line_not_an_error(
    port: int, path: str, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamer")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b"{" * 100)
    await writer.drain()
    await asyncio.sleep(0.3)  # the route is reading the body
    writer.close()
    await asyncio.sleep(0.3)
    await assert_still_serving(port)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "the client went away mid-request" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "live"])
async def test_the_commands_serve_json_errors(command: str) -> None:
    module = ("streamer", "serve") if command == "serve" else ("tests.live_with_fake_mic",)
    async with serve_subprocess(command=module) as served:
        port = int(served.url.rsplit(":", 1)[1])
        assert_json_error(*await exchange(port, b"GARBAGE\r\n\r\n"), 400, "bad_request")
        big = b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert_json_error(*await exchange(port, big), 431, "headers_too_large")
        await assert_still_serving(port)
        stopped = await served.stop(signal.SIGINT)
    assert stopped.code == 0, stopped.output[-2000:]
    assert "Traceback" not in stopped.output


async def test_an_error_escaping_every_middleware_is_a_json_500() -> None:
    # The app's errors middleware answers handler errors itself; this is the net under it
    # (an error in a middleware outside it), with aiohttp's own app and no middleware at all.
    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("internal detail")

    app = web.Application()
    app.router.add_get("/", broken)
    runner, _url = await start_app(app)
    try:
        port = int(runner.addresses[0][1])
        request = b"GET / HTTP/1.1\r\n" + HOST + b"Accept: text/html\r\n\r\n"
        status, headers, body = await exchange(port, request)
        assert_json_error(status, headers, body, 500, "internal_error")
        assert b"internal detail" not in body
    finally:
        await runner.cleanup()
