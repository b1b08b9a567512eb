"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

Written by hand, next to nothing else: a test checks that every route the app registers is
described here and that everything described here is a route, and the API fuzz test generates
its requests from it. When a route is added, describe it in :func:`describe_api`.

Over 400 lines because it is one table, a route per entry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamer import __version__
from streamer.names import NAME_PATTERN
from streamer.server.http.access import Access, public

_ERROR_CODES = {
    400: "Bad input: malformed body, invalid name, unusable SDP or audio.",
    401: "The route needs the server's token (Authorization: Bearer ...).",
    404: "No such resource (session, channel, viewer, avatar, route).",
    405: "The method is not allowed on this route.",
    409: "Conflict: the channel exists or has a driver; the render is not finished.",
    413: "The body (or queued audio) exceeds its limit.",
    415: "Wrong Content-Type.",
    429: "Too many failed token attempts from this address; retry after Retry-After seconds.",
    500: "A render failed (its job says why); never an unhandled error.",
    503: "At a limit (sessions, channels, viewers, renders); retry after Retry-After seconds.",
}


def _errors(*statuses: int) -> dict[str, Any]:
    if 401 in statuses:  # a route that checks the token refuses a locked-out guesser first
        statuses = (*statuses, 429)
    return {
        str(s): {
            "description": _ERROR_CODES[s],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _name(param: str = "name", what: str = "Channel name") -> dict[str, Any]:
    return {
        "name": param,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "pattern": NAME_PATTERN},
    }


def _id(param: str, what: str) -> dict[str, Any]:
    return {"name": param, "in": "path", "required": True, "description": what,
            "schema": {"type": "string"}}  # fmt: skip


_OBJECT = {"type": "object"}
_OFFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["sdp", "type"],
                "properties": {
                    "sdp": {"type": "string", "description": "SDP offer: audio sendrecv"},
                    "type": {"const": "offer"},
                    "avatar": {"type": "string", "pattern": NAME_PATTERN},
                },
            }
        }
    },
}
_HTML = {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}


def _op(summary: str, access: Access, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    op["x-access"] = access.value
    if access is not Access.PUBLIC:
        op["security"] = [{"bearer": []}, {}]  # the token, when the server has one
    return op


def describe_api() -> dict[str, Any]:
    """The API description (a fresh dict; callers may change it)."""
    c, v, p = Access.CONTROL, Access.VIEWER, Access.PUBLIC
    paths: dict[str, Any] = {
        "/": {"get": _op("The call page", p, {"200": _HTML})},
        "/static/{filename}": {
            "get": _op(
                "A page asset (JS, CSS) by plain file name",
                p,
                {"200": {"description": "The file"}, **_errors(404)},
                parameters=[_id("filename", "File name in the web folder")],
            )
        },
        "/health": {
            "get": _op(
                "Liveness; with the token (or on a server without one) also model and sessions",
                p,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"const": "ok"},
                                "sessions": {"type": "integer"},
                                "max_sessions": {"type": "integer"},
                                "uptime_s": {"type": "number"},
                                "model": _OBJECT,
                            },
                        },
                        "Serving (only the status without the server's token)",
                    ),
                    # A wrong token sent here counts as a failed attempt like anywhere else.
                    **_errors(429),
                },
            )
        },
        "/openapi.json": {
            "get": _op("This description", p, {"200": _json(_OBJECT, "OpenAPI 3.1")})
        },
        "/ice-servers": {
            "get": _op(
                "STUN/TURN servers for the pages' RTCPeerConnection (TURN: short-lived login)",
                v,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["iceServers"],
                            "properties": {"iceServers": {"type": "array", "items": _OBJECT}},
                        },
                        "The browser's iceServers",
                    ),
                    **_errors(401),
                },
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                v,
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            )
        },
        "/offer": {
            "post": _op(
                "Start a call: SDP offer in, answer and session id out",
                c,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["sdp", "type", "session_id"],
                            "properties": {
                                "sdp": {"type": "string"},
                                "type": {"const": "answer"},
                                "session_id": {"type": "string"},
                            },
                        },
                        "The answer",
                    ),
                    **_errors(400, 401, 404, 409, 413, 415, 503),
                },
                requestBody=_OFFER_BODY,
            )
        },
        "/sessions/{session_id}": {
            "get": _op(
                "A call's connection and playout buffer (target delay, its inputs, concealment, "
                "level changes, drops)",
                c,
                {"200": _json(_OBJECT, "The call"), **_errors(401, 404)},
                parameters=[_id("session_id", "From the offer's answer")],
            ),
            "delete": _op(
                "End a call",
                c,
                {"200": _json(_OBJECT, "Ended"), **_errors(401, 404)},
                parameters=[_id("session_id", "From the offer's answer")],
            ),
        },
        "/channels": {
            "get": _op(
                "List channels",
                v,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["channels"],
                            "properties": {"channels": {"type": "array", "items": _OBJECT}},
                        },
                        "The channels",
                    ),
                    **_errors(401),
                },
            ),
            "post": _op(
                "Create a channel",
                c,
                {"201": _json(_OBJECT, "Created"), **_errors(400, 401, 404, 409, 413, 415, 503)},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "pattern": NAME_PATTERN},
                                    "avatar": {"type": "string", "pattern": NAME_PATTERN},
                                },
                            }
                        }
                    },
                },
            ),
        },
        "/channels/{name}": {
            "get": _op(
                "Describe a channel",
                v,
                {"200": _json(_OBJECT, "The channel"), **_errors(400, 401, 404)},
                parameters=[_name()],
            ),
            "delete": _op(
                "Delete a channel (its viewers and driver are hung up)",
                c,
                {"200": _json(_OBJECT, "Deleted"), **_errors(400, 401, 404)},
                parameters=[_name()],
            ),
        },
        "/channels/{name}/whep": {
            "post": _op(
                "WHEP playback: SDP offer in, 201 + Location + complete answer out",
                v,
                {
                    "201": {
                        "description": "The answer",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404, 413, 415, 503),
                },
                parameters=[_name()],
                requestBody={
                    "required": True,
                    "content": {"application/sdp": {"schema": {"type": "string"}}},
                },
            )
        },
        "/channels/{name}/whep/{viewer_id}": {
            "delete": _op(
                "Leave (WHEP resource)",
                v,
                {"200": _json(_OBJECT, "Left"), **_errors(400, 401, 404)},
                parameters=[_name(), _id("viewer_id", "From the WHEP Location")],
            )
        },
        "/channels/{name}/publish": {
            "post": _op(
                "Drive the channel from a call's microphone (and watch it)",
                c,
                {
                    "200": _json(_OBJECT, "The answer and the leave URL"),
                    **_errors(400, 401, 404, 409, 413, 415, 503),
                },
                parameters=[_name()],
                requestBody=_OFFER_BODY,
            )
        },
        "/channels/{name}/audio": {
            "get": _op(
                "The agent push WebSocket (PCM s16le in, playback events out)",
                c,
                {
                    "101": {"description": "WebSocket"},
                    **_errors(400, 401, 404, 409, 503),
                },
                parameters=[
                    _name(),
                    {
                        "name": "sample_rate",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "enum": [8000, 16000, 22050, 24000, 32000, 44100, 48000],
                        },
                    },
                ],
            )
        },
        "/channels/{name}/speak": {
            "post": _op(
                "Queue an audio file (wav, mp3, ogg, m4a) to be spoken",
                c,
                {"202": _json(_OBJECT, "Queued"), **_errors(400, 401, 404, 409, 413, 503)},
                parameters=[_name()],
                requestBody={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
            )
        },
        "/channels/{name}/interrupt": {
            "post": _op(
                "Stop what the channel is saying",
                c,
                {"200": _json(_OBJECT, "Interrupted"), **_errors(400, 401, 404)},
                parameters=[_name()],
            )
        },
        "/render": {
            "post": _op(
                "Render an audio file to an MP4 of the avatar (short: the file; long: a job)",
                c,
                {
                    "200": {
                        "description": "The MP4",
                        "content": {"video/mp4": {"schema": {"type": "string"}}},
                    },
                    "202": _json(_OBJECT, "Queued: poll status_url"),
                    **_errors(400, 401, 404, 413, 415, 500, 503),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["audio"],
                                "properties": {
                                    "audio": {"type": "string", "format": "binary"},
                                    "avatar": {"type": "string", "pattern": NAME_PATTERN},
                                },
                            }
                        }
                    },
                },
            )
        },
        "/render/{job_id}": {
            "get": _op(
                "A render job's status",
                c,
                {"200": _json(_OBJECT, "The job"), **_errors(401, 404)},
                parameters=[_id("job_id", "From POST /render")],
            )
        },
        "/render/{job_id}/result": {
            "get": _op(
                "A finished render's MP4",
                c,
                {
                    "200": {
                        "description": "The MP4",
                        "content": {"video/mp4": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 404, 409, 500),
                },
                parameters=[_id("job_id", "From POST /render")],
            )
        },
        "/view/{name}": {
            "get": _op(
                "The viewer page (OBS Browser Source)",
                p,
                {"200": _HTML, **_errors(400)},
                parameters=[_name()],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "avatar-streamer",
            "version": __version__,
            "description": "Every error is JSON {error: code, message: sentence}. Routes marked "
            "x-access control (and viewer, unless viewers are public) need "
            "Authorization: Bearer <token> when the server has a token; after too many failed "
            "attempts an address gets 429 too_many_failures for a while.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@public
async def get_openapi(_request: web.Request) -> web.Response:
    return web.json_response(describe_api())
