"""``avatar-streamer bench KIND``: run one benchmark and record it in docs/benchmarks.md."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="measure and record performance figures")
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True)

    audio = kinds.add_parser("audio", help="ingest + mel cost per 40 ms video frame")
    audio.add_argument("--seconds", type=float, default=60.0, help="audio to process")
    audio.add_argument("--no-record", action="store_true", help="print only")
    audio.set_defaults(func=_run_audio)


def _run_audio(args: argparse.Namespace) -> int:
    from streamer.bench.audio import run

    return run(seconds=args.seconds, record=not args.no_record)
