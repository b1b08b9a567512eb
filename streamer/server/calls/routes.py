"""HTTP routes of calls: ``POST /offer``, ``GET`` and ``DELETE /sessions/{id}``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCSessionDescription

from streamer.avatar import validate_name
from streamer.server.calls.registry import CallRegistry
from streamer.server.http.body import offer_sdp, read_json_object
from streamer.server.http.errors import HttpError

CALLS = web.AppKey("calls", CallRegistry)


async def post_offer(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    body = await read_json_object(request, "the offer")
    sdp = offer_sdp(body)
    avatar = body.get("avatar") or calls.default_avatar
    if not isinstance(avatar, str):
        raise HttpError(400, "invalid_avatar_name", "The avatar must be a name.")
    validate_name(avatar)
    session, answer = await calls.create(RTCSessionDescription(sdp=sdp, type="offer"), avatar)
    return web.json_response(
        {"sdp": answer.sdp, "type": answer.type, "session_id": session.session_id}
    )


async def get_session(request: web.Request) -> web.Response:
    """A call's state: its connection and its playout buffer (the call page's overlay)."""
    session = request.app[CALLS].sessions.get(request.match_info["session_id"])
    if session is None:
        raise HttpError(404, "session_not_found", "No such session.")
    return web.json_response(
        {
            "session_id": session.session_id,
            "avatar": session.avatar,
            "connection": session.pc.connectionState,
            "playout": session.pipeline.snapshot().as_json(),
        }
    )


async def delete_session(request: web.Request) -> web.Response:
    session = request.app[CALLS].sessions.get(request.match_info["session_id"])
    if session is None:
        raise HttpError(404, "session_not_found", "No such session.")
    await session.aclose()
    return web.json_response({"session_id": session.session_id, "closed": True})


def add_routes(app: web.Application, calls: CallRegistry) -> None:
    """Keep ``calls`` under :data:`CALLS`, start and close it with the app, add the routes."""
    app[CALLS] = calls

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        calls.start()
        yield
        await calls.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/offer", post_offer)
    app.router.add_get("/sessions/{session_id}", get_session)
    app.router.add_delete("/sessions/{session_id}", delete_session)
