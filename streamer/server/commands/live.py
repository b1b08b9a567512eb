"""``avatar-streamer live --mic``: serve, and drive a channel from a local microphone.

The microphone is opened (and checked) before the model loads, so a missing or busy device
is one clear error at once (exit status 2). Viewers watch at ``/view/{channel}`` (OBS) or
over WHEP; Ctrl-C stops capture, then the server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from streamer.resources import (
    add_avatars_dir_argument,
    add_model_arguments,
)
from streamer.server.channels.microphone import (
    AudioInput,
    InputDevices,
    MicrophoneDriver,
    SoundDeviceInputs,
)
from streamer.server.commands.serve import (
    add_access_arguments,
    add_turn_arguments,
    runtime_from_args,
)

if TYPE_CHECKING:  # the server stack loads only when serving (keeps the CLI quick)
    from aiohttp import web

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "live", help="serve, and drive a channel from a local microphone (OBS, WHEP viewers)"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mic", action="store_true", help="drive the channel from a microphone")
    source.add_argument("--list-devices", action="store_true", help="list input devices, exit")
    p.add_argument("--device", type=int, default=None, help="input device index (default: system)")
    p.add_argument("--channel", default="live", help="channel name (default: live)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--avatar", default="default", help="the channel's avatar")
    add_avatars_dir_argument(p)
    add_model_arguments(p, live=True)
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8", help="video codec")
    p.add_argument("--ice-server", action="append", default=[], help="STUN/TURN URL (repeatable)")
    add_turn_arguments(p)
    add_access_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, inputs: InputDevices | None = None) -> int:
    devices = inputs or SoundDeviceInputs()
    if args.list_devices:
        found = devices.list_inputs()
        if not found:
            print("no audio input devices found")
        for d in found:
            mark = "*" if d.is_default else " "
            print(
                f"{mark} {d.index:3d}  {d.name}  "
                f"({d.channels} ch, {d.default_sample_rate_hz:.0f} Hz)"
            )
        return 0

    from streamer.server.app import create_app
    from streamer.server.channels.channel import check_channel_name
    from streamer.server.config import ServerConfig
    from streamer.server.http.access import access_from_args
    from streamer.server.http.protocol import run_app
    from streamer.server.media.ice import turn_from_args

    channel_name = check_channel_name(args.channel)
    access = access_from_args(args, os.environ)
    turn = turn_from_args(args.turn_url, args.turn_ttl_s, os.environ)
    source = devices.open(args.device)  # fail before the model loads
    try:
        runtime = runtime_from_args(args)
        config = ServerConfig(
            host=args.host,
            port=args.port,
            avatar=args.avatar,
            video_codec=args.codec,
            ice_servers=tuple(args.ice_server),
            access=access,
            turn=turn,
        )
        app = create_app(config, runtime)
        attach_microphone(app, channel_name, source, f"http://{args.host}:{args.port}")
        run_app(app, host=args.host, port=args.port, shutdown_timeout_s=1.5)
    finally:
        source.close()
    return 0


def attach_microphone(
    app: web.Application, channel_name: str, source: AudioInput, base_url: str
) -> None:
    """Drive ``channel_name`` from ``source`` while ``app`` runs; prints the viewer URLs.

    Registered after the channels' cleanup, so capture stops before the channels close.
    """

    from streamer.server.channels.routes import CHANNELS

    async def microphone(app: web.Application) -> AsyncIterator[None]:
        channel = await app[CHANNELS].get_or_create(channel_name)
        driver = MicrophoneDriver(channel, source, asyncio.get_running_loop())
        driver.start()
        print(
            f"avatar-streamer: microphone -> channel {channel_name!r}\n"
            f"  OBS Browser Source: {base_url}/view/{channel_name}\n"
            f"  WHEP: {base_url}/channels/{channel_name}/whep\n"
            "  (Ctrl-C to stop)",
            flush=True,
        )
        yield
        await driver.aclose()
        if driver.blocks_dropped:
            log.warning("microphone: %d blocks dropped (event loop stalls)", driver.blocks_dropped)

    app.cleanup_ctx.append(microphone)
