"""The one shape of every HTTP error: JSON ``{"error": code, "message": sentence}``.

Handlers raise :class:`HttpError` (or any ``StreamerError``); the app's errors middleware turns
it into :func:`error_response`. Kept apart from the app so that middlewares and route modules
can raise it without importing the app.
"""

from __future__ import annotations

from aiohttp import web

from streamer.errors import StreamerError


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
