"""HTTP and WebSocket routes of channels: create/list/delete, WHEP, the view page, drivers.

``add_routes(app, server)`` builds the app's :class:`ChannelRegistry` (kept under
:data:`CHANNELS`), closes it on cleanup (before the scheduler stops) and adds the routes.
Every error is the app's JSON ``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiortc import RTCSessionDescription
from prometheus_client import Gauge

from streamer.audio.files import decode_audio_bytes
from streamer.audio.ingest import AudioIngest, pcm_to_frame
from streamer.errors import AudioFormatError
from streamer.server.access import public, viewer
from streamer.server.app import SERVER, HttpError, Server
from streamer.server.channels import (
    Channel,
    ChannelError,
    ChannelRegistry,
    DriverClaim,
    ViewerNotFoundError,
    check_channel_name,
    check_offer,
)
from streamer.server.pipeline import INPUT_RATE_HZ
from streamer.server.playout import AudioQueueFullError, PlaybackEvent
from streamer.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNELS = web.AppKey("channels", ChannelRegistry)

# Sample rates a pushing driver may declare (what TTS engines and sound cards produce).
PUSH_SAMPLE_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _channel_errors(handler: Handler) -> Handler:
    """Turn channel errors (which carry their HTTP status) into the app's HttpError."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ChannelError as exc:
            headers = None
            if exc.status == 503:  # a limit: say when to come back
                headers = {"Retry-After": str(request.app[SERVER].config.retry_after_s)}
            raise HttpError(exc.status, exc.code, str(exc), headers) from exc
        except AudioQueueFullError as exc:
            raise HttpError(413, exc.code, str(exc)) from exc

    return wrapped


def _registry(request: web.Request) -> ChannelRegistry:
    return request.app[CHANNELS]


async def _json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, "invalid_json", f"The body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nesting deeper than the parser's stack
        raise HttpError(400, "invalid_json", "The body is nested too deeply.") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_json", "The body must be a JSON object.")
    return body


@_channel_errors
async def post_channel(request: web.Request) -> web.Response:
    body = await _json_object(request)
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


@_channel_errors
@viewer
async def get_channel(request: web.Request) -> web.Response:
    return web.json_response(_registry(request).get(request.match_info["name"]).describe())


@_channel_errors
async def delete_channel(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _registry(request).delete(name)
    return web.json_response({"name": name, "deleted": True})


@_channel_errors
@viewer
async def post_whep(request: web.Request) -> web.Response:
    """WHEP (RFC 9725's shape for playback): SDP offer in, 201 + Location + complete answer."""
    if request.content_type != "application/sdp":
        raise HttpError(415, "unsupported_media_type", "Send the offer as application/sdp.")
    sdp = (await request.read()).decode("utf-8", errors="replace")
    if not sdp.strip():
        raise HttpError(400, "invalid_offer", "The body must be an SDP offer.")
    check_channel_name(request.match_info["name"])
    check_offer(sdp)  # before a channel is created for it
    registry = _registry(request)
    channel = await registry.get_or_create(request.match_info["name"])
    viewer, answer = await registry.add_viewer(channel, RTCSessionDescription(sdp, "offer"))
    location = f"/channels/{channel.name}/whep/{viewer.viewer_id}"
    return web.Response(
        status=201,
        text=answer.sdp,
        content_type="application/sdp",
        headers={"Location": location, "Access-Control-Expose-Headers": "Location"},
    )


@_channel_errors
@viewer
async def delete_viewer(request: web.Request) -> web.Response:
    channel = _registry(request).get(request.match_info["name"])
    viewer = channel.viewers.get(request.match_info["viewer_id"])
    if viewer is None:
        raise ViewerNotFoundError("No such viewer of this channel.")
    await viewer.aclose()
    return web.json_response({"viewer_id": viewer.viewer_id, "closed": True})


@_channel_errors
async def post_publish(request: web.Request) -> web.Response:
    """The call page publishing its microphone into a channel (and watching it)."""
    body = await _json_object(request)
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip() or kind != "offer":
        raise HttpError(400, "invalid_offer", 'Expected {"sdp": "...", "type": "offer"}.')
    if "m=audio" not in sdp:
        raise HttpError(400, "no_audio", "The offer has no audio track to publish.")
    check_channel_name(request.match_info["name"])
    check_offer(sdp, audio_required=True)  # before a channel is created for it
    registry = _registry(request)
    channel = await registry.get_or_create(request.match_info["name"])
    viewer, answer = await registry.add_viewer(
        channel, RTCSessionDescription(sdp, "offer"), publish=True
    )
    return web.json_response(
        {
            "sdp": answer.sdp,
            "type": answer.type,
            "viewer_id": viewer.viewer_id,
            "leave_url": f"/channels/{channel.name}/whep/{viewer.viewer_id}",
        }
    )


async def _read_upload(request: web.Request, limit_bytes: int) -> bytes:
    """The uploaded file: the raw body, or the first part of a multipart form."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise HttpError(413, "body_too_large", f"Uploads are limited to {limit_bytes} bytes.")
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            if part is None or not hasattr(part, "read_chunk"):
                raise HttpError(400, "unreadable_audio", "The form holds no file.")
            stream_read = part.read_chunk
        else:
            stream_read = request.content.read
        data = bytearray()
        while chunk := await stream_read(64 * 1024):
            data += chunk
            if len(data) > limit_bytes:
                raise HttpError(
                    413, "body_too_large", f"Uploads are limited to {limit_bytes} bytes."
                )
    except (ValueError, AssertionError, HttpProcessingError) as exc:  # a malformed form
        raise HttpError(400, "bad_form", "The multipart form cannot be read.") from exc
    return bytes(data)


@_channel_errors
async def post_speak(request: web.Request) -> web.Response:
    registry = _registry(request)
    name = check_channel_name(request.match_info["name"])
    data = await _read_upload(request, registry.config.max_upload_bytes)
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


@_channel_errors
async def post_interrupt(request: web.Request) -> web.Response:
    channel = _registry(request).get(request.match_info["name"])
    channel.interrupt()
    return web.json_response({"channel": channel.name, "interrupted": True})


class _PushDriver:
    """One WebSocket driver: PCM and control messages in, events and errors out.

    Owns its sender task (the only writer to the socket) and a bounded outgoing queue: when a
    client stops reading, the oldest pending message is dropped (logged).
    """

    def __init__(self, channel: Channel, ws: web.WebSocketResponse, sample_rate_hz: int) -> None:
        self.channel = channel
        self.ws = ws
        self.sample_rate_hz = sample_rate_hz
        self._ingest = AudioIngest(INPUT_RATE_HZ)
        self._outbox: asyncio.Queue[dict[str, object]] = asyncio.Queue(
            channel.config.max_pending_events
        )

    def on_event(self, event: PlaybackEvent) -> None:
        self._send(event.as_json())

    def _send(self, message: dict[str, object]) -> None:
        if self._outbox.full():
            lost = self._outbox.get_nowait()
            log.warning("channel %s: driver not reading, dropped %s", self.channel.name, lost)
        self._outbox.put_nowait(message)

    def _error(self, code: str, message: str) -> None:
        self._send({"type": "error", "error": code, "message": message})

    async def send_loop(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                await self.ws.send_json(message)
            except ConnectionError:
                return  # the client went away; the receive loop ends too

    async def on_revoke(self) -> None:
        """The channel was deleted (or the server is stopping): say so and hang up."""
        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"channel closed")

    def on_binary(self, data: bytes) -> None:
        if len(data) % 2:
            self._error("bad_pcm", "Binary messages carry s16le samples: an even byte count.")
            return
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        if pcm.shape[0] == 0:
            return
        chunk = self._ingest.push(pcm_to_frame(pcm, self.sample_rate_hz))
        self._push(chunk.samples)

    def _push(self, samples: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        try:
            self.channel.push(samples)
        except AudioQueueFullError as exc:
            self._error(exc.code, str(exc))

    def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self._error("bad_message", "Text messages must be JSON objects with a 'type'.")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "interrupt":
            self._ingest = AudioIngest(INPUT_RATE_HZ)  # drop what the resampler holds too
            self.channel.interrupt()
        elif kind == "end_of_segment":
            tail = self._ingest.flush()
            self._push(tail.samples)
            self.channel.end_segment()
        else:
            self._error(
                "unknown_message",
                f"Unknown message type {kind!r}; expected 'interrupt' or 'end_of_segment'.",
            )


@_channel_errors
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
    driver = _PushDriver(channel, ws, rate_hz)
    claim: DriverClaim = channel.claim("websocket", driver.on_event, driver.on_revoke)
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        sender = asyncio.create_task(driver.send_loop(), name=f"channel-{name}-ws-send")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                driver.on_binary(msg.data)
            elif msg.type == WSMsgType.TEXT:
                driver.on_text(msg.data)
    finally:
        claim.release()
        await cancel_and_wait(sender)
    return ws


@_channel_errors
@public
async def get_view(request: web.Request) -> web.FileResponse:
    check_channel_name(request.match_info["name"])
    return web.FileResponse(request.app[SERVER].config.web_root / "view.html")


def _add_metrics(server: Server, registry: ChannelRegistry) -> None:
    """Channel gauges in the server's registry, read when /metrics is scraped."""
    r = server.metrics.registry
    Gauge("avatar_channels", "Live channels", registry=r).set_function(
        lambda: len(registry.channels)
    )
    Gauge("avatar_channel_viewers", "Viewers of all channels", registry=r).set_function(
        lambda: sum(len(c.viewers) for c in registry.channels.values())
    )
    Gauge(
        "avatar_channel_queued_audio_seconds", "Driver audio queued in all channels", registry=r
    ).set_function(lambda: sum(c.queued_s for c in registry.channels.values()))


def add_routes(app: web.Application, server: Server) -> None:
    """Build the app's channel registry, close it on cleanup, add the channel routes."""
    registry = ChannelRegistry(
        server.config.channels,
        scheduler=server.scheduler,
        renderer=server.runtime.renderer,
        clock=server.clock,
        pipeline=server.config.pipeline,
        mel_frame_offset=server.runtime.mel_frame_offset,
        load_avatar=server.runtime.load_avatar,
        default_avatar=server.config.avatar,
        ice_servers=server.config.ice_servers,
        video_codec=server.config.video_codec,
        turn=server.config.turn,
        connect_timeout_s=server.config.connect_timeout_s,
    )
    app[CHANNELS] = registry
    _add_metrics(server, registry)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        registry.start()
        yield
        await registry.aclose()  # registered after the server's: runs before it closes

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
    r.add_get("/view/{name}", get_view)
