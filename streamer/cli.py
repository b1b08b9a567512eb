"""The ``avatar-streamer`` command line: one argparse tree, one subcommand per feature.

Each feature module exposes ``register(subparsers)`` that adds its subcommand and sets
``func`` (``argparse.Namespace -> int`` exit status) as the parser default. Adding a subcommand
is one line in :data:`_COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.errors import StreamerError

# Modules that define a ``register(subparsers)`` function, in the order of ``--help``.
_COMMAND_MODULES = (
    "streamer.server.commands.serve",
    "streamer.server.commands.live",
    "streamer.avatar.cli",
    "streamer.bench.cli",
    "streamer.offline.cli",
    "streamer.soak.cli",
    "streamer.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-streamer",
        description="Live speech in, a lip-synced talking avatar out over WebRTC.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
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
