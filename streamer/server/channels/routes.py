"""HTTP and WebSocket routes of channels: create/list/delete, WHEP, publishing, drivers.

``add_routes(app, registry)`` keeps the app's :class:`ChannelRegistry` under :data:`CHANNELS`,
closes it on cleanup (before the scheduler stops) and adds the routes. Channel errors carry
their own status and code (:mod:`streamer.server.channels.channel`); the app's errors middleware
answers them like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCSessionDescription
from prometheus_client import CollectorRegistry, Gauge

from streamer.audio.files import decode_audio_bytes
from streamer.errors import AudioFormatError
from streamer.playout.pipeline import INPUT_RATE_HZ
from streamer.playout.queue import AudioQueueFullError
from streamer.server.channels.channel import (
    DriverClaim,
    ViewerNotFoundError,
    check_channel_name,
)
from streamer.server.channels.push import PUSH_SAMPLE_RATES_HZ, PushDriver
from streamer.server.channels.registry import ChannelRegistry
from streamer.server.http.access import viewer
from streamer.server.http.body import offer_sdp, read_json_object, read_upload
from streamer.server.http.errors import HttpError
from streamer.server.media.sdp import check_offer

CHANNELS = web.AppKey("channels", ChannelRegistry)


def _registry(request: web.Request) -> ChannelRegistry:
    return request.app[CHANNELS]


async def post_channel(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    name, avatar = body.get("name"), body.get("avatar")
    if not isinstance(name, str):
        raise HttpError(400, "invalid_channel_name", 'Expected {"name": "...", "avatar": ...}.')
    if avatar is not None and not isinstance(avatar, str):
        raise HttpError(400, "invalid_avatar_name", "The avatar must be a name.")
    channel = await _registry(request).create(name, avatar)
    return web.json_response(channel.describe(), status=201)


@viewer
async def list_channels(request: web.Request) -> web.Response:
    channels = _registry(request).channels.values()
    return web.json_response({"channels": [c.describe() for c in channels]})


@viewer
async def get_channel(request: web.Request) -> web.Response:
    return web.json_response(_registry(request).get(request.match_info["name"]).describe())


async def delete_channel(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _registry(request).delete(name)
    return web.json_response({"name": name, "deleted": True})


@viewer
async def post_whep(request: web.Request) -> web.Response:
    """WHEP (RFC 9725's shape for playback): SDP offer in, 201 + Location + complete answer."""
    if request.content_type != "application/sdp":
        raise HttpError(415, "unsupported_media_type", "Send the offer as application/sdp.")
    sdp = (await request.read()).decode("utf-8", errors="replace")
    if not sdp.strip():
        raise HttpError(400, "invalid_offer", "The body must be an SDP offer.")
    check_channel_name(request.match_info["name"])
    # Checked once, before a channel is created for it.
    shape = check_offer(sdp, audio_required=False, video_required=True)
    registry = _registry(request)
    channel = await registry.get_or_create(request.match_info["name"])
    viewer, answer = await registry.add_viewer(channel, RTCSessionDescription(sdp, "offer"), shape)
    location = f"/channels/{channel.name}/whep/{viewer.viewer_id}"
    return web.Response(
        status=201,
        text=answer.sdp,
        content_type="application/sdp",
        headers={"Location": location, "Access-Control-Expose-Headers": "Location"},
    )


@viewer
async def delete_viewer(request: web.Request) -> web.Response:
    channel = _registry(request).get(request.match_info["name"])
    viewer = channel.viewers.get(request.match_info["viewer_id"])
    if viewer is None:
        raise ViewerNotFoundError("No such viewer of this channel.")
    await viewer.aclose()
    return web.json_response({"viewer_id": viewer.viewer_id, "closed": True})


async def post_publish(request: web.Request) -> web.Response:
    """The call page publishing its microphone into a channel (and watching it)."""
    sdp = offer_sdp(await read_json_object(request, "the offer"))
    check_channel_name(request.match_info["name"])
    # Checked once, before a channel is created for it.
    shape = check_offer(sdp, audio_required=True, video_required=True)
    registry = _registry(request)
    channel = await registry.get_or_create(request.match_info["name"])
    viewer, answer = await registry.add_viewer(
        channel, RTCSessionDescription(sdp, "offer"), shape, publish=True
    )
    return web.json_response(
        {
            "sdp": answer.sdp,
            "type": answer.type,
            "viewer_id": viewer.viewer_id,
            "leave_url": f"/channels/{channel.name}/whep/{viewer.viewer_id}",
        }
    )


async def post_speak(request: web.Request) -> web.Response:
    registry = _registry(request)
    name = check_channel_name(request.match_info["name"])
    data = (await read_upload(request, registry.config.max_upload_bytes)).first()
    if not data:
        raise HttpError(400, "unreadable_audio", "The request holds no audio file.")
    max_s = registry.config.playout.max_queued_s
    try:
        pcm = await asyncio.get_running_loop().run_in_executor(
            None, decode_audio_bytes, data, INPUT_RATE_HZ, max_s
        )
    except AudioFormatError as exc:
        raise HttpError(400, "unreadable_audio", str(exc)) from exc
    channel = await registry.get_or_create(name)
    claim = channel.claim("file", None)
    try:
        segment_id = channel.push(pcm)
    except AudioQueueFullError:
        if not channel.has_pending_audio:
            claim.release()
        raise
    channel.end_segment()
    return web.json_response(
        {
            "channel": channel.name,
            "segment_id": segment_id,
            "duration_s": round(pcm.shape[0] / INPUT_RATE_HZ, 3),
            "queued_s": round(channel.queued_s, 3),
        },
        status=202,
    )


async def post_interrupt(request: web.Request) -> web.Response:
    channel = _registry(request).get(request.match_info["name"])
    channel.interrupt()
    return web.json_response({"channel": channel.name, "interrupted": True})


async def channel_audio(request: web.Request) -> web.WebSocketResponse:
    """The agent push WebSocket (see docs/agents.md)."""
    registry = _registry(request)
    name = check_channel_name(request.match_info["name"])
    raw_rate = request.query.get("sample_rate", "16000")
    try:
        rate_hz = int(raw_rate)
    except ValueError:
        rate_hz = 0
    if rate_hz not in PUSH_SAMPLE_RATES_HZ:
        raise HttpError(
            400,
            "bad_sample_rate",
            f"sample_rate must be one of {', '.join(map(str, PUSH_SAMPLE_RATES_HZ))} Hz.",
        )
    ws = web.WebSocketResponse(max_msg_size=registry.config.max_ws_message_bytes, heartbeat=20)
    if not ws.can_prepare(request).ok:  # refused before a channel is created for it
        raise HttpError(400, "not_a_websocket", "This endpoint is a WebSocket: send an upgrade.")
    channel = await registry.get_or_create(name)
    driver = PushDriver(channel, ws, rate_hz)
    claim: DriverClaim = channel.claim("websocket", driver.on_event, driver.on_revoke)
    try:
        await driver.serve(request)
    finally:
        claim.release()
    return ws


def _add_metrics(r: CollectorRegistry, registry: ChannelRegistry) -> None:
    """Channel gauges in the server's metrics registry ``r``, read when /metrics is scraped."""
    Gauge("avatar_channels", "Live channels", registry=r).set_function(
        lambda: len(registry.channels)
    )
    Gauge("avatar_channel_viewers", "Viewers of all channels", registry=r).set_function(
        lambda: sum(len(c.viewers) for c in registry.channels.values())
    )
    Gauge(
        "avatar_channel_queued_audio_seconds", "Driver audio queued in all channels", registry=r
    ).set_function(lambda: sum(c.queued_s for c in registry.channels.values()))


def add_routes(app: web.Application, registry: ChannelRegistry) -> None:
    """Keep ``registry`` under :data:`CHANNELS`, start it with the app, close it on cleanup and
    tell its drivers on shutdown; add the channel routes."""
    app[CHANNELS] = registry
    _add_metrics(registry.hub.metrics.registry, registry)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        registry.start()
        yield
        await registry.aclose()  # registered after the hub's: runs before it closes

    app.cleanup_ctx.append(lifecycle)

    async def hang_up(_app: web.Application) -> None:
        await registry.hang_up_drivers()

    app.on_shutdown.append(hang_up)
    r = app.router
    r.add_post("/channels", post_channel)
    r.add_get("/channels", list_channels)
    r.add_get("/channels/{name}", get_channel)
    r.add_delete("/channels/{name}", delete_channel)
    r.add_post("/channels/{name}/whep", post_whep)
    r.add_delete("/channels/{name}/whep/{viewer_id}", delete_viewer)
    r.add_post("/channels/{name}/publish", post_publish)
    r.add_get("/channels/{name}/audio", channel_audio)
    r.add_post("/channels/{name}/speak", post_speak)
    r.add_post("/channels/{name}/interrupt", post_interrupt)
