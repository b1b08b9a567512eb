"""The one shape of every HTTP error, and the one place errors become responses.

Every error leaves as JSON ``{"error": code, "message": sentence}``. Whatever a handler raises
on purpose is a :class:`~streamer.errors.StreamerError`, which carries its own ``code`` and
``status`` (the avatar, channel, playout and render errors say theirs where they are defined);
:class:`HttpError` is the one for a status and code chosen where it is raised.
:func:`errors_middleware` turns them into :func:`error_response`, and aiohttp's own refusals
(no route, wrong method, body too large) into the same shape; a 503 says when to come back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from streamer.errors import StreamerError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(StreamerError):
    """An error with an HTTP status (and headers, e.g. Retry-After or WWW-Authenticate)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


# Codes of the router's and aiohttp's own refusals, by status.
_CODE_BY_STATUS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _subject(request: web.Request) -> str:
    """What a request is about, for its log line: a session, a channel, or nothing."""
    info = request.match_info
    for key, label in (("session_id", "session"), ("name", "channel"), ("job_id", "job")):
        if key in info:
            return f" ({label} {info[key]})"
    return ""


def _aiohttp_refusal(
    request: web.Request, exc: web.HTTPException
) -> tuple[int, str, str, dict[str, str]]:
    status, code = exc.status, _CODE_BY_STATUS.get(exc.status, "http_error")
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    if status == 404:
        message = f"No such resource: {request.path}"
    elif status == 405:
        message = f"{request.method} is not allowed here."
    elif status == 413:
        message = "The request body is too large."
    else:
        message = f"{exc.reason}."
    return status, code, message, headers


def errors_middleware(retry_after_s: int) -> Middleware:
    """Every error leaves as ``{"error": code, "message": ...}``; nothing else reaches clients.

    A 503 without its own Retry-After gets ``retry_after_s``. Refusals (4xx, 503) are logged
    at INFO, one line with the session or channel; anything unexpected is logged with its
    traceback and answered 500 without it.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StreamerError as exc:
            status, code, message = exc.status, exc.code, str(exc)
            headers = dict(getattr(exc, "headers", None) or {})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status, code, message, headers = _aiohttp_refusal(request, exc)
        except ConnectionResetError:
            # The client hung up before its request was read (a body cut short): nobody to
            # answer, nothing went wrong here. One line, like a refusal.
            log.info(
                "%s %s%s: the client went away mid-request",
                request.method,
                request.path,
                _subject(request),
            )
            return error_response(400, "connection_lost", "The request ended before its body.")
        except Exception:
            log.exception(
                "unhandled error on %s %s%s", request.method, request.path, _subject(request)
            )
            return error_response(500, "internal_error", "Internal server error.")
        if status == 503:
            headers.setdefault("Retry-After", str(retry_after_s))
        log.info("%s %s%s: %d %s", request.method, request.path, _subject(request), status, code)
        return error_response(status, code, message, headers)

    return middleware
