"""The aiohttp application, composed: the media hub, calls, channels, render jobs, the pages.

``create_app(config, runtime)`` builds everything from its arguments: one
:class:`~streamer.server.media.hub.MediaHub` (clock, metrics, inference thread, scheduler)
shared by the call registry, the channel registry and the render jobs, each with its own routes
and lifecycle, and the pages, health, metrics and API description here. Middlewares: CORS
outermost (error responses carry it too), then the one errors middleware, then the token check.
No module-level mutable state; every process-wide object lives under a ``web.AppKey``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

from aiohttp import web

from streamer.server.calls import routes as call_routes
from streamer.server.calls.registry import CallLimits, CallRegistry
from streamer.server.calls.session import Session
from streamer.server.channels import routes as channel_routes
from streamer.server.channels.channel import check_channel_name
from streamer.server.channels.registry import ChannelRegistry
from streamer.server.config import ServerConfig
from streamer.server.http.access import (
    access_middleware,
    cors_middleware,
    is_authorized,
    public,
    viewer,
)
from streamer.server.http.auth_limit import AuthFailureLimiter
from streamer.server.http.errors import HttpError, errors_middleware
from streamer.server.http.openapi import get_openapi
from streamer.server.jobs import render_jobs
from streamer.server.media.clock import Clock, MonotonicClock
from streamer.server.media.encoder import VideoEncoderSettings
from streamer.server.media.hub import MediaHub
from streamer.server.media.ice import browser_ice_servers
from streamer.server.media.metrics import Metrics
from streamer.server.media.peer import PeerSettings
from streamer.server.media.runtime import Runtime
from streamer.server.media.scheduler import FrameScheduler

__all__ = ["AUTH_LIMITER", "SERVER", "Runtime", "Server", "ServerConfig", "create_app"]


class Server:
    """One app's parts, for the pages and for tests: its config, the media hub and the calls."""

    def __init__(self, config: ServerConfig, hub: MediaHub, calls: CallRegistry) -> None:
        self.config = config
        self.hub = hub
        self.calls = calls

    @property
    def runtime(self) -> Runtime:
        return self.hub.runtime

    @property
    def clock(self) -> Clock:
        return self.hub.clock

    @property
    def metrics(self) -> Metrics:
        return self.hub.metrics

    @property
    def scheduler(self) -> FrameScheduler:
        return self.hub.scheduler

    @property
    def sessions(self) -> dict[str, Session]:
        return self.calls.sessions


SERVER = web.AppKey("server", Server)
AUTH_LIMITER = web.AppKey("auth_limiter", AuthFailureLimiter)  # failed token attempts


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
            "uptime_s": round(time.monotonic() - server.hub.started_at, 3),
        }
    )


@viewer
async def get_metrics(request: web.Request) -> web.Response:
    body = request.app[SERVER].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@viewer
async def get_ice_servers(request: web.Request) -> web.Response:
    """``GET /ice-servers``: what the pages pass to ``new RTCPeerConnection``."""
    config = request.app[SERVER].config
    servers = browser_ice_servers(config.ice_servers, config.turn, time.time())
    return web.json_response({"iceServers": servers}, headers={"Cache-Control": "no-store"})


@public
async def get_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[SERVER].config.web_root / "index.html")


@public
async def get_view(request: web.Request) -> web.FileResponse:
    """The channel view page (OBS browser sources point here)."""
    check_channel_name(request.match_info["name"])
    return web.FileResponse(request.app[SERVER].config.web_root / "view.html")


# The page assets: one flat folder of plain names (no sub-folders, no dot segments).
_ASSET_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


@public
async def get_static(request: web.Request) -> web.FileResponse:
    """A page asset from the web root. Only plain file names in that folder are served, so no
    request can name anything outside it; a missing file is a JSON 404 like any other."""
    name = request.match_info["filename"]
    path = request.app[SERVER].config.web_root / name
    if not _ASSET_RE.fullmatch(name) or ".." in name or not path.is_file():
        raise HttpError(404, "not_found", f"No such resource: {request.path}")
    return web.FileResponse(path)


def create_app(
    config: ServerConfig, runtime: Runtime, clock: Clock | None = None
) -> web.Application:
    hub = MediaHub(runtime, clock or MonotonicClock(), config.pipeline)
    peers = PeerSettings(
        video=VideoEncoderSettings(codec=config.video_codec, bitrate_bps=config.video_bitrate_bps),
        ice_servers=config.ice_servers,
        turn=config.turn,
        connect_timeout_s=config.connect_timeout_s,
    )
    calls = CallRegistry(
        hub,
        CallLimits(
            default_avatar=config.avatar,
            max_sessions=config.max_sessions,
            idle_timeout_s=config.session_idle_timeout_s,
        ),
        peers,
    )
    channels = ChannelRegistry(config.channels, hub, peers, default_avatar=config.avatar)
    jobs = render_jobs.RenderJobs(config.render, hub, default_avatar=config.avatar)
    limiter = AuthFailureLimiter(config.access.failure_limit, hub.clock)
    middlewares = [
        cors_middleware(config.access.cors_origins),
        errors_middleware(config.retry_after_s),
        access_middleware(config.access, limiter),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[SERVER] = Server(config, hub, calls)
    app[AUTH_LIMITER] = limiter

    async def media(_app: web.Application) -> AsyncIterator[None]:
        hub.start()
        yield
        await hub.aclose()

    # Cleanups run in reverse: render jobs, then channels, then calls close before the hub
    # stops the scheduler and the inference thread.
    app.cleanup_ctx.append(media)
    call_routes.add_routes(app, calls)
    channel_routes.add_routes(app, channels)
    render_jobs.add_routes(app, jobs)
    app.router.add_get("/", get_index)
    app.router.add_get("/view/{name}", get_view)
    app.router.add_get("/static/{filename}", get_static)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/ice-servers", get_ice_servers)

    async def farewell(_app: web.Application) -> None:
        await hub.farewell(config.farewell_timeout_s)

    # On shutdown, after the channels' drivers are told (registered above): the last frames go
    # out before aiohttp waits for open requests and the cleanup closes the peers.
    app.on_shutdown.append(farewell)
    return app
