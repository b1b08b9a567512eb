"""The ``avatar-streamer`` command line: one argparse tree, one subcommand per feature.

Each feature module exposes ``register(subparsers)`` that adds its subcommands and sets
``func`` (``argparse.Namespace -> int`` exit status) as the parser default. Only the module of
the command being run is imported (its imports are the slow part: numpy, av, aiortc, ONNX);
``--help`` and a mistyped command list every command from :data:`COMMANDS` alone. Adding a
subcommand is one line there (``tests/test_cli.py`` checks each line against its module).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.errors import StreamerError

# (command, the module whose ``register`` adds it, its line in ``--help``), in that order.
COMMANDS = (
    ("serve", "streamer.server.commands.serve", "run the WebRTC avatar server"),
    (
        "live",
        "streamer.server.commands.live",
        "serve, and drive a channel from a local microphone (OBS, WHEP viewers)",
    ),
    (
        "prepare",
        "streamer.avatar.cli",
        "prepare an avatar from a photo or a video (once, before serving)",
    ),
    ("avatars", "streamer.avatar.cli", "list prepared avatars"),
    ("bench", "streamer.bench.cli", "measure and record performance figures"),
    ("render", "streamer.offline.cli", "render an audio file to a lip-synced MP4"),
    (
        "soak",
        "streamer.soak.cli",
        "run N real WebRTC peers against a server for M minutes and check it held",
    ),
    (
        "doctor",
        "streamer.doctor",
        "check this machine before a call: providers, GPU, model, avatar, audio, access",
    ),
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the full subparser of the command it names (its module
    imported), a one-line placeholder for every other command. Without ``argv``, every
    command's full subparser."""
    parser = argparse.ArgumentParser(
        prog="avatar-streamer",
        description="Live speech in, a lip-synced talking avatar out over WebRTC.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = {c for c, _, _ in COMMANDS}
    command = next((a for a in argv or () if a in names), None)
    chosen = {m for c, m, _ in COMMANDS if c == command}
    registered: set[str] = set()
    for command, module, help_text in COMMANDS:
        if argv is None or module in chosen:
            if module not in registered:
                importlib.import_module(module).register(subparsers)
                registered.add(module)
        else:
            subparsers.add_parser(command, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # aioice logs every ICE candidate pair check at INFO: a dozen lines per peer.
        for chatty in ("aioice", "aiortc"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        status: int = args.func(args)
    except StreamerError as exc:
        print(f"avatar-streamer: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status
