"""The aiohttp application: pages, signaling, health and metrics.

``create_app(config, runtime)`` builds everything from its arguments and keeps process-wide
objects under ``web.AppKey``s; ``cleanup_ctx`` closes every session, the scheduler and the
executor. No module-level mutable state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from streamer.errors import StreamerError
from streamer.resources import web_dir
from streamer.server.access import (
    AccessConfig,
    access_middleware,
    cors_middleware,
    is_authorized,
    public,
    viewer,
)
from streamer.server.auth_limit import AuthFailureLimiter
from streamer.server.channels import ChannelConfig, ChannelError, check_offer
from streamer.server.clock import Clock, MonotonicClock
from streamer.server.http_errors import HttpError as HttpError  # re-exported: routes raise it
from streamer.server.http_errors import error_response
from streamer.server.ice import TurnConfig, ice_servers_handler, new_server_peer
from streamer.server.inference import PriorityExecutor
from streamer.server.metrics import Metrics
from streamer.server.openapi import get_openapi
from streamer.server.pipeline import PipelineConfig, SessionPipeline
from streamer.server.receive import install_passthrough
from streamer.server.render import Renderer
from streamer.server.scheduler import FrameScheduler
from streamer.server.session import Session
from streamer.server.tasks import cancel_and_wait

if TYPE_CHECKING:
    from streamer.server.offline import RenderConfig

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    avatar: str = "default"
    max_sessions: int = 8
    video_codec: str = "vp8"  # or "h264"
    video_bitrate_bps: int | None = None
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs; none on a LAN or loopback
    max_body_bytes: int = 256 * 1024
    connect_timeout_s: float = 15.0
    # A call whose peer has sent no audio for this long is closed (None: never). A browser
    # sends packets even when muted, so silence on the wire means a broken or hostile peer.
    session_idle_timeout_s: float | None = 60.0
    retry_after_s: int = 5
    farewell_timeout_s: float = 0.5  # at shutdown, to send viewers their last frame
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    channels: ChannelConfig = field(default_factory=ChannelConfig)
    web_root: Path = field(default_factory=web_dir)  # the pages: see streamer.resources
    access: AccessConfig = field(default_factory=AccessConfig)  # token, viewers, CORS
    turn: TurnConfig | None = None  # TURN for the pages (GET /ice-servers) and the server's peers


@dataclass(frozen=True)
class Runtime:
    """What serving needs that is loaded before the first peer: the model and avatars."""

    renderer: Renderer
    model: dict[str, Any]  # name, source, provider, face size... for /health
    mel_frame_offset: int
    load_avatar: Callable[[str], object]  # raises AvatarError; loads (blocking) on first use


_STATUS_BY_CODE = {
    "avatar_not_found": 404,
    "invalid_avatar_name": 400,
    "avatar_cache_stale": 409,
}


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


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as ``{"error": code, "message": ...}``; nothing else reaches clients.

    Refusals (4xx, 503) are logged at INFO, one line with the session or channel; anything
    unexpected is logged with its traceback and answered 500 without it.
    """
    headers: dict[str, str] = {}
    try:
        return await handler(request)
    except HttpError as exc:
        status, code, message, headers = exc.status, exc.code, str(exc), exc.headers
    except StreamerError as exc:
        status, code, message = _STATUS_BY_CODE.get(exc.code, 400), exc.code, str(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
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
    except ConnectionResetError:
        # The client hung up before its request was read (a body cut short): nobody to answer,
        # nothing went wrong here. One line, like a refusal.
        log.info(
            "%s %s%s: the client went away mid-request",
            request.method,
            request.path,
            _subject(request),
        )
        return error_response(400, "connection_lost", "The request ended before its body.")
    except Exception:
        log.exception("unhandled error on %s %s%s", request.method, request.path, _subject(request))
        return error_response(500, "internal_error", "Internal server error.")
    log.info("%s %s%s: %d %s", request.method, request.path, _subject(request), status, code)
    return error_response(status, code, message, headers)


class Server:
    """Process-wide state of one app: sessions, the scheduler, metrics."""

    def __init__(self, config: ServerConfig, runtime: Runtime, clock: Clock) -> None:
        self.config = config
        self.runtime = runtime
        self.clock = clock
        self.metrics = Metrics()
        # One thread runs every model call: live ticks first, offline renders in between.
        self.executor = PriorityExecutor("inference")
        self.scheduler = FrameScheduler(clock, runtime.renderer, self.metrics, self.executor)
        self.sessions: dict[str, Session] = {}
        self.started_at = time.monotonic()
        self._watchdogs: set[asyncio.Task[None]] = set()
        self._watchdog_of: dict[str, asyncio.Task[None]] = {}  # by session id, until answered
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.scheduler.start()
        timeout_s = self.config.session_idle_timeout_s
        if timeout_s is not None and self._reaper is None:
            self._reaper = asyncio.create_task(
                self._reap_idle(timeout_s), name="session-idle-reaper"
            )

    async def _reap_idle(self, timeout_s: float) -> None:
        """Close calls whose peer has sent no audio for ``timeout_s`` (checked a few times
        per timeout, at most every 5 s)."""
        while True:
            await asyncio.sleep(min(5.0, timeout_s / 4))
            now_s = self.clock.now()
            for session in list(self.sessions.values()):
                silent_s = now_s - session.last_input_at_s
                if silent_s >= timeout_s:
                    log.warning(
                        "session %s: no audio from the peer for %.0f s, closing",
                        session.session_id,
                        silent_s,
                    )
                    self.metrics.idle_closed.inc()
                    await session.aclose()

    async def farewell(self) -> None:
        """Shutdown, first step: stop the frames and send every viewer a last one, at rest."""
        await self.scheduler.finish(timeout_s=self.config.farewell_timeout_s)

    async def aclose(self) -> None:
        await cancel_and_wait(self._reaper)
        self._reaper = None
        await asyncio.gather(*(s.aclose() for s in list(self.sessions.values())))
        for task in list(self._watchdogs):
            await cancel_and_wait(task)
        await self.scheduler.aclose()
        self.executor.shutdown(wait=True)

    async def _session_closed(self, session: Session) -> None:
        self.scheduler.remove(session.session_id)
        if self.sessions.pop(session.session_id, None) is not None:
            self.metrics.sessions.set(len(self.sessions))

    async def create_session(
        self, offer: RTCSessionDescription, avatar: str
    ) -> tuple[Session, RTCSessionDescription]:
        cfg = self.config
        if len(self.sessions) >= cfg.max_sessions:
            raise HttpError(
                503,
                "too_many_sessions",
                f"The server is at its limit of {cfg.max_sessions} sessions; try again later.",
                {"Retry-After": str(cfg.retry_after_s)},
            )
        if "m=audio" not in offer.sdp:
            raise HttpError(400, "no_audio", "The offer has no audio track to lip-sync.")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.runtime.load_avatar, avatar)
        try:
            check_offer(offer.sdp, audio_required=True, video_required=False)
        except ChannelError as exc:  # the same checks as a channel's offers
            raise HttpError(400, exc.code, str(exc)) from exc
        pc = new_server_peer(cfg.ice_servers, cfg.turn)
        session_id = uuid.uuid4().hex[:12]
        frame_count = self.runtime.renderer.frame_count(avatar)
        pipeline = SessionPipeline(frame_count, cfg.pipeline)
        pipeline.set_mel_frame_offset(self.runtime.mel_frame_offset)
        session = Session(session_id, pc, avatar, pipeline, self.clock, self._session_closed)
        # The session's playout buffer does all the waiting: aiortc's is bypassed.
        install_passthrough(pc.addTransceiver(session.audio, direction="sendrecv"))
        video = pc.addTransceiver(session.video, direction="sendonly")
        codecs = [
            c
            for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() in (f"video/{cfg.video_codec}", "video/rtx")
        ]
        video.setCodecPreferences(codecs)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                session.attach_input(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: connection %s", session_id, pc.connectionState)
            if pc.connectionState in ("connected", "failed", "closed"):
                self._end_watchdog(session_id)  # its question is answered
            if pc.connectionState in ("failed", "closed"):
                session.close_soon()

        try:
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            raise HttpError(400, "bad_sdp", f"The offer could not be negotiated: {exc}") from exc
        self.sessions[session_id] = session
        self.metrics.sessions.set(len(self.sessions))
        self.scheduler.add(session)
        watchdog = asyncio.create_task(
            self._connect_watchdog(session), name=f"watchdog-{session_id}"
        )
        self._watchdogs.add(watchdog)
        self._watchdog_of[session_id] = watchdog
        watchdog.add_done_callback(self._watchdogs.discard)
        log.info(
            "session %s: started with avatar %s (%d live)", session_id, avatar, len(self.sessions)
        )
        return session, pc.localDescription

    def _end_watchdog(self, session_id: str) -> None:
        """Cancel a session's connect watchdog (it ends at once; aclose() awaits the rest).

        Without this, every session that connected or left would keep a sleeping task for
        the whole connect timeout.
        """
        task = self._watchdog_of.pop(session_id, None)
        if task is not None:
            task.cancel()

    async def _connect_watchdog(self, session: Session) -> None:
        await asyncio.sleep(self.config.connect_timeout_s)
        # From here on it closes the session itself: no state change may cancel it midway.
        self._watchdog_of.pop(session.session_id, None)
        if session.pc.connectionState != "connected" and session.session_id in self.sessions:
            log.warning(
                "session %s: not connected after %.0f s, closing",
                session.session_id,
                self.config.connect_timeout_s,
            )
            await session.aclose()


SERVER = web.AppKey("server", Server)
AUTH_LIMITER = web.AppKey("auth_limiter", AuthFailureLimiter)  # failed token attempts


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "Send the offer as application/json.")
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


async def post_offer(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = await _json_body(request)
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip() or kind != "offer":
        raise HttpError(400, "invalid_offer", 'Expected {"sdp": "...", "type": "offer"}.')
    avatar = body.get("avatar") or server.config.avatar
    if not isinstance(avatar, str) or not _NAME_RE.match(avatar):
        raise HttpError(
            400, "invalid_avatar_name", "Avatar names are 1-64 letters, digits, _ or -."
        )
    session, answer = await server.create_session(
        RTCSessionDescription(sdp=sdp, type="offer"), avatar
    )
    return web.json_response(
        {"sdp": answer.sdp, "type": answer.type, "session_id": session.session_id}
    )


async def get_session(request: web.Request) -> web.Response:
    """A call's state: its connection and its playout buffer (the call page's overlay)."""
    server = request.app[SERVER]
    session = server.sessions.get(request.match_info["session_id"])
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
    server = request.app[SERVER]
    session = server.sessions.get(request.match_info["session_id"])
    if session is None:
        raise HttpError(404, "session_not_found", "No such session.")
    await session.aclose()
    return web.json_response({"session_id": session.session_id, "closed": True})


@public
async def get_health(request: web.Request) -> web.Response:
    """Liveness for anyone (load balancers need no token); the model, sessions and uptime only
    for callers with the server's token, or from anyone when the server has none."""
    server = request.app[SERVER]
    if not is_authorized(request):
        return web.json_response({"status": "ok"})
    return web.json_response(
        {
            "status": "ok",
            "model": server.runtime.model,
            "sessions": len(server.sessions),
            "max_sessions": server.config.max_sessions,
            "uptime_s": round(time.monotonic() - server.started_at, 3),
        }
    )


@viewer
async def get_metrics(request: web.Request) -> web.Response:
    body = request.app[SERVER].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@public
async def get_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[SERVER].config.web_root / "index.html")


# The page assets: one flat folder of plain names (no sub-folders, no dot segments).
_ASSET_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


@public
async def get_static(request: web.Request) -> web.FileResponse:
    """A page asset from the web root. Only plain file names in that folder are served, so no
    request can name anything outside it; a missing file is a JSON 404 like any other."""
    name = request.match_info["filename"]
    path = request.app[SERVER].config.web_root / name
    if not _ASSET_RE.match(name) or ".." in name or not path.is_file():
        raise HttpError(404, "not_found", f"No such resource: {request.path}")
    return web.FileResponse(path)


def create_app(
    config: ServerConfig,
    runtime: Runtime,
    clock: Clock | None = None,
    render: RenderConfig | None = None,
) -> web.Application:
    server = Server(config, runtime, clock or MonotonicClock())
    limiter = AuthFailureLimiter(config.access.failure_limit, server.clock)
    # CORS outermost (error responses carry it too), then errors, then the token check.
    middlewares = [
        cors_middleware(config.access.cors_origins),
        errors_middleware,
        access_middleware(config.access, limiter),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[SERVER] = server
    app[AUTH_LIMITER] = limiter

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await server.start()
        yield
        await server.aclose()

    app.cleanup_ctx.append(lifecycle)
    # Channels: their own module (it imports this one, hence the local import). Its cleanup
    # is registered after the server's, so channels close before the scheduler stops.
    from streamer.server.channel_routes import add_routes as add_channel_routes

    add_channel_routes(app, server)
    app.router.add_get("/", get_index)
    app.router.add_get("/static/{filename}", get_static)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/ice-servers", ice_servers_handler(config.ice_servers, config.turn))
    app.router.add_post("/offer", post_offer)
    app.router.add_get("/sessions/{session_id}", get_session)
    app.router.add_delete("/sessions/{session_id}", delete_session)
    # Offline renders (POST /render, GET /render/{id}); that module imports this one.
    from streamer.server.offline import add_routes as add_render_routes

    add_render_routes(app, render)

    async def farewell(_app: web.Application) -> None:
        await server.farewell()

    # On shutdown, after the channels' drivers are told (registered above): the last frames go
    # out before aiohttp waits for open requests and the cleanup closes the peers.
    app.on_shutdown.append(farewell)
    return app
