"""JSON errors for what aiohttp refuses before routing, and the runner that serves with them.

aiohttp's HTTP protocol answers some requests itself, before any middleware runs: a request
line or header it cannot parse, a header over its size limit, a bad chunked body, an invalid
``Content-Length``. It answers them in ``RequestHandler.handle_error`` with plain text.
:class:`JsonErrorRequestHandler` answers them in the app's one error shape instead
(``{"error": code, "message": ...}``, no parser message, no traceback), and
:func:`run_app` serves an app with it (``serve`` and ``live``); tests use
:class:`JsonErrorAppRunner` with a site of their own.

Statuses: 431 ``headers_too_large`` when a line is over aiohttp's limit (8190 bytes for the
request line and for each header; the parser does not say which line, so an over-long URL gets
431 too), 400 ``bad_request`` for every other parse error (garbage, bad version or method,
invalid header, too many headers, bad chunked encoding, invalid ``Content-Length``), and
500 ``internal_error`` / 504 ``timeout`` should anything escape the app's own error middleware.

This module is the one place that relies on aiohttp internals (checked against aiohttp
3.14; ``tests/test_server_protocol.py`` fails if an upgrade changes any of them):

- ``RequestHandler.handle_error(request, status, exc, message)`` builds the response of every
  parse error (via ``_make_error_handler``) and of errors that escape the handler;
- ``web.Server.__call__`` is the protocol factory a site listens with, and builds
  ``RequestHandler(self, loop=self._loop, **self._kwargs)``;
- ``AppRunner._make_server`` returns the ``web.Server`` of the app; aiohttp builds it by class
  name, so the runner changes its class to :class:`_JsonErrorServer` (no other state changes).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from streamer.server.http.errors import error_response

log = logging.getLogger(__name__)

_MESSAGES = {
    "bad_request": "The request is not valid HTTP/1.1.",
    "headers_too_large": "The request line or a header is longer than the server accepts.",
    "internal_error": "Internal server error.",
    "timeout": "The request timed out.",
}
_CODE_BY_STATUS = {
    400: "bad_request",
    431: "headers_too_large",
    500: "internal_error",
    504: "timeout",
}


def error_code(status: int, exc: BaseException | None) -> tuple[int, str]:
    """(status, code) of an error aiohttp answers itself; parse errors come as status 400."""
    if isinstance(exc, LineTooLong):
        return 431, "headers_too_large"
    return status, _CODE_BY_STATUS.get(status, "http_error")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors as the app's JSON error shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON response for ``status``; the connection closes after it (as aiohttp's does).

        Raises ConnectionError when part of a response was already sent (as aiohttp's does).
        """
        status, code = error_code(status, exc)
        if status >= 500:
            log.error("%s from %s", code, request.remote, exc_info=exc)
        else:  # a refusal: one line, as the app's errors middleware logs them
            log.info("bad request from %s: %d %s (%r)", request.remote, status, code, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("A response was partly sent; no error response can follow.")
        response = error_response(status, code, _MESSAGES.get(code, "The request failed."))
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """aiohttp's low-level server, making :class:`JsonErrorRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """``web.AppRunner`` whose sites answer pre-routing errors as JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # aiohttp builds web.Server by name (see above)
        return server


def run_app(app: web.Application, *, host: str, port: int, shutdown_timeout_s: float) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM, then clean it up (blocking).

    ``web.run_app`` for one TCP site, with :class:`JsonErrorAppRunner`. A signal only ends the
    wait: the runner's cleanup (closing every peer) runs while the other tasks still live, and
    ``asyncio.run`` cancels what is left after it.
    """

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = JsonErrorAppRunner(
            app, shutdown_timeout=shutdown_timeout_s, keepalive_timeout=75.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())
