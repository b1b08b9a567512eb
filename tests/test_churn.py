"""Churn with real peers: connect/disconnect cycles (calls and WHEP viewers, each ending
politely or abruptly) leave the process's asyncio tasks, threads and file descriptors at their
post-warm-up baseline and its RSS within 5 %.

By default 200 cycles after 20 warm-up ones (about 20 s here); set
``AVATAR_STREAMER_CHURN_CYCLES=1000`` for the full run (about 90 s here), whose figures are
recorded by ``avatar-streamer bench churn`` in docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.bench.churn import KINDS, RSS_TOLERANCE, churn, report
from streamer.server.app import ServerConfig, create_app
from streamer.server.media.runtime import build_runtime
from tests.servers import start_app

pytestmark = [pytest.mark.realtime, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CYCLES = int(os.environ.get("AVATAR_STREAMER_CHURN_CYCLES", "200"))
WARMUP = int(os.environ.get("AVATAR_STREAMER_CHURN_WARMUP", "20"))


@pytest.fixture
async def url() -> AsyncIterator[str]:
    runtime = build_runtime(REPO / "avatars")
    runner, url = await start_app(create_app(ServerConfig(connect_timeout_s=5.0), runtime))
    yield url
    await runner.cleanup()


@pytest.mark.timeout(3600)
async def test_churn_returns_every_resource(url: str) -> None:
    assert CYCLES % len(KINDS) == 0  # every way of leaving, equally often
    result = await churn(url, CYCLES, WARMUP)
    print(report(result))
    b, a = result.baseline, result.after
    assert a.tasks <= b.tasks, (b, a)
    assert a.threads <= b.threads, (b, a)
    assert a.fds <= b.fds, (b, a)
    assert abs(result.rss_change) <= RSS_TOLERANCE, (b, a)
    assert result.ok
