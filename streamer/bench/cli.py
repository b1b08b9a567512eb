"""``avatar-streamer bench KIND``: run one benchmark and record it in docs/benchmarks.md.

Each benchmark module defines ``register(kinds)`` that adds its KIND parser and sets ``func``.
Adding a benchmark is one line in :data:`_KIND_MODULES`.
"""

from __future__ import annotations

import importlib
from typing import Any

_KIND_MODULES = (
    "streamer.bench.audio",
    "streamer.bench.avatar",
    "streamer.bench.encoder",
    "streamer.bench.engine",
    "streamer.bench.musetalk_features",
    "streamer.bench.pipeline",
    "streamer.bench.offline",
    "streamer.bench.churn",
    "streamer.bench.viewers",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="measure and record performance figures")
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for name in _KIND_MODULES:
        importlib.import_module(name).register(kinds)
