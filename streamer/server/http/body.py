"""Request bodies, read one way everywhere: a JSON object (an offer's among them), or an
uploaded file (raw or a form).

Both refuse with the app's JSON errors: 415 for the wrong content type, 400 ``invalid_json`` or
``bad_form`` for a body that cannot be read, 413 ``body_too_large`` past the caller's limit
(checked against ``Content-Length`` first, then while reading, so an upload never sits in
memory beyond its limit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from streamer.server.http.errors import HttpError

_CHUNK_BYTES = 64 * 1024


async def read_json_object(request: web.Request, what: str = "the body") -> dict[str, Any]:
    """The body as a JSON object; ``what`` names it in the 415 message ("the offer")."""
    if request.content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", f"Send {what} as application/json.")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, "invalid_json", f"The body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nesting deeper than the parser's stack
        raise HttpError(400, "invalid_json", "The body is nested too deeply.") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_json", "The body must be a JSON object.")
    return body


def offer_sdp(body: dict[str, Any]) -> str:
    """The SDP of a ``{"sdp": "...", "type": "offer"}`` body (calls, publishing pages)."""
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip() or kind != "offer":
        raise HttpError(400, "invalid_offer", 'Expected {"sdp": "...", "type": "offer"}.')
    return sdp


@dataclass(frozen=True)
class Upload:
    """What a request carried: every part of a multipart form by name (in order), or the raw
    body as one part named ``""``."""

    parts: tuple[tuple[str, bytes], ...]
    multipart: bool

    def first(self) -> bytes | None:
        """The first part (the raw body, or a form's first field)."""
        return self.parts[0][1] if self.parts else None

    def get(self, name: str) -> bytes | None:
        """The first part named ``name``."""
        return next((data for key, data in self.parts if key == name), None)


def _too_large(limit_bytes: int) -> HttpError:
    return HttpError(413, "body_too_large", f"Uploads are limited to {limit_bytes} bytes.")


async def read_upload(
    request: web.Request, limit_bytes: int, *, multipart_required: str | None = None
) -> Upload:
    """The uploaded file(s), at most ``limit_bytes`` in all.

    With ``multipart_required`` (the sentence of the 415), anything but a multipart form is
    refused; otherwise a raw body is one part.
    """
    is_form = request.content_type.startswith("multipart/")
    if multipart_required is not None and not is_form:
        raise HttpError(415, "unsupported_media_type", multipart_required)
    if request.content_length is not None and request.content_length > limit_bytes:
        raise _too_large(limit_bytes)
    parts: list[tuple[str, bytes]] = []
    total = 0
    try:
        if not is_form:
            data = bytearray()
            while chunk := await request.content.read(_CHUNK_BYTES):
                data += chunk
                if len(data) > limit_bytes:
                    raise _too_large(limit_bytes)
            return Upload(((("", bytes(data)),) if data else ()), multipart=False)
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            data = bytearray()
            while chunk := await part.read_chunk(_CHUNK_BYTES):
                total += len(chunk)
                if total > limit_bytes:
                    raise _too_large(limit_bytes)
                data += chunk
            parts.append((part.name or "", bytes(data)))
    except (ValueError, AssertionError, HttpProcessingError) as exc:  # a malformed form
        raise HttpError(400, "bad_form", "The multipart form cannot be read.") from exc
    return Upload(tuple(parts), multipart=True)
