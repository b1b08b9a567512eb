"""``avatar-streamer serve``: the signaling server, the pages and the media pipeline."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamer.resources import (
    add_avatars_dir_argument,
    add_model_arguments,
    avatars_dir,
)

if TYPE_CHECKING:  # the server stack loads only when serving (keeps the CLI quick)
    from streamer.server.config import ServerConfig
    from streamer.server.http.access import AccessConfig
    from streamer.server.media.runtime import Runtime

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the WebRTC avatar server")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--avatar", default="default", help="avatar used when an offer names none")
    add_avatars_dir_argument(p)
    add_model_arguments(p, live=True)
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8", help="video codec")
    p.add_argument("--bitrate", type=int, default=None, help="video bitrate, bits per second")
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        help="STUN/TURN URL (repeatable); none by default",
    )
    p.add_argument(
        "--max-queued-audio-s",
        type=float,
        default=120.0,
        help="audio a channel's driver may queue ahead of playback (default 120 s)",
    )
    add_turn_arguments(p)
    limits = p.add_argument_group("limits (beyond them: 503 with Retry-After)")
    limits.add_argument("--max-channels", type=int, default=16)
    limits.add_argument("--max-viewers-per-channel", type=int, default=32)
    limits.add_argument("--max-viewers", type=int, default=64, help="over all channels")
    limits.add_argument(
        "--connect-timeout-s",
        type=float,
        default=15.0,
        help="a peer not connected by then is dropped (default 15 s)",
    )
    limits.add_argument(
        "--session-idle-timeout-s",
        type=float,
        default=60.0,
        help="close a call whose peer has sent no audio for this long; 0: never (default 60 s)",
    )
    limits.add_argument(
        "--channel-idle-timeout-s",
        type=float,
        default=600.0,
        help="delete a channel with no viewer, driver or audio after this long; 0: never",
    )
    add_access_arguments(p)
    p.set_defaults(func=run)


def add_turn_arguments(parser: Any) -> None:
    """The TURN flags shared by ``serve`` and ``live``."""
    parser.add_argument(
        "--turn-url",
        action="append",
        default=[],
        help="TURN server for the pages' browsers and the server's own peers (repeatable; the "
        "server uses the first), with short-lived credentials from the secret in "
        "AVATAR_STREAMER_TURN_SECRET (coturn use-auth-secret)",
    )
    parser.add_argument("--turn-ttl-s", type=int, default=3600, help="TURN credential lifetime")


def add_access_arguments(parser: Any) -> None:
    """The access flags shared by ``serve`` and ``live``."""
    parser.add_argument(
        "--public-viewers",
        action="store_true",
        help="viewers (WHEP, channel list, metrics) need no token even when one is set",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow cross-origin calls from this origin (repeatable; '*' for any); off by default",
    )
    guessing = parser.add_argument_group(
        "failed token attempts (per client address; beyond them: 429 with Retry-After)"
    )
    guessing.add_argument(
        "--auth-max-failures",
        type=int,
        default=20,
        help="failed attempts within the window that lock an address out (default 20)",
    )
    guessing.add_argument("--auth-window-s", type=float, default=60.0, help="default 60 s")
    guessing.add_argument(
        "--auth-lockout-s", type=float, default=60.0, help="lock-out length (default 60 s)"
    )
    guessing.add_argument(
        "--trust-x-forwarded-for",
        action="store_true",
        help="count attempts against X-Forwarded-For's last hop: only behind a reverse proxy "
        "that appends it (see docs/security.md); off by default",
    )


def set_video_bitrate(codec: str, bitrate_bps: int) -> None:
    """aiortc keeps its encoder bitrates as module globals: set them once, before serving."""
    if codec == "vp8":
        from aiortc.codecs import vpx as module
    else:
        from aiortc.codecs import h264 as module  # type: ignore[no-redef]
    module.DEFAULT_BITRATE = bitrate_bps
    module.MIN_BITRATE = min(module.MIN_BITRATE, bitrate_bps)
    module.MAX_BITRATE = max(module.MAX_BITRATE, bitrate_bps)


def server_config(
    args: argparse.Namespace, access: AccessConfig, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The server settings of a ``serve`` command line (secrets from ``environ``)."""
    from streamer.playout.queue import PlayoutConfig
    from streamer.server.config import ChannelConfig, ServerConfig
    from streamer.server.media.ice import turn_from_args

    return ServerConfig(
        host=args.host,
        port=args.port,
        avatar=args.avatar,
        max_sessions=args.max_sessions,
        video_codec=args.codec,
        video_bitrate_bps=args.bitrate,
        ice_servers=tuple(args.ice_server),
        connect_timeout_s=args.connect_timeout_s,
        session_idle_timeout_s=args.session_idle_timeout_s or None,
        channels=ChannelConfig(
            playout=PlayoutConfig(max_queued_s=args.max_queued_audio_s),
            max_channels=args.max_channels,
            max_viewers_per_channel=args.max_viewers_per_channel,
            max_viewers_total=args.max_viewers,
            idle_timeout_s=args.channel_idle_timeout_s or None,
        ),
        access=access,
        turn=turn_from_args(
            args.turn_url, args.turn_ttl_s, os.environ if environ is None else environ
        ),
    )


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    """The model and avatar the serving commands' flags ask for, loaded and warmed (see
    :func:`add_model_arguments`); raises ModelError or AvatarError."""
    from streamer.engine import EngineOptions
    from streamer.server.media.runtime import build_runtime

    return build_runtime(
        avatars_dir(args.avatars_dir),
        args.avatar,
        args.model,
        EngineOptions.from_flags(args.providers, args.fp16),
        allow_slow_model=args.allow_slow_model,
    )


def run(args: argparse.Namespace) -> int:
    from streamer.server.app import create_app
    from streamer.server.http.access import access_from_args
    from streamer.server.http.protocol import run_app

    access = access_from_args(args, os.environ)  # refuses an exposed bind before loading
    config = server_config(args, access)
    runtime = runtime_from_args(args)
    if args.bitrate:
        set_video_bitrate(args.codec, args.bitrate)
    app = create_app(config, runtime)
    print(
        f"avatar-streamer: serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True
    )
    run_app(app, host=args.host, port=args.port, shutdown_timeout_s=1.5)
    return 0
