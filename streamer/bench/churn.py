"""``bench churn``: connect/disconnect cycles of real WebRTC peers; do resources come back?

A server runs in this process (so its asyncio tasks can be counted) and real aiortc peers
connect to it and leave, in four ways that rotate: a call that ends with ``DELETE``, a call
whose peer just closes (abrupt: no goodbye), a WHEP viewer that leaves with ``DELETE``, and one
that just closes. Each cycle waits for the first video frame, so every cycle is a full ICE +
DTLS + media setup. After a warm-up the process's asyncio tasks, threads, open file
descriptors and RSS are sampled; after the cycles (and once the server has torn everything
down) they are sampled again. Counts must come back to the post-warm-up baseline and RSS stay
within 5 % of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from streamer.client_auth import server_session
from streamer.probe.peer import LoopbackPeer
from streamer.probe.report import write_section
from streamer.probe.viewer import WhepViewer
from streamer.resources import avatars_dir

KINDS = ("call, DELETE", "call, abrupt close", "viewer, DELETE", "viewer, abrupt close")
RSS_TOLERANCE = 0.05


def _malloc_trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise), so that RSS
    measures memory in use rather than the allocator's high-water mark."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True)
class Levels:
    """What the process holds at one moment."""

    tasks: int
    threads: int
    fds: int
    rss_bytes: int

    @classmethod
    def sample(cls, trim: bool = True) -> Levels:
        """The process's counts now; RSS after ``malloc_trim(0)`` unless ``trim`` is False
        (then it is what an operator's RSS graph shows)."""
        gc.collect()
        if trim:
            _malloc_trim()
        with open("/proc/self/statm", encoding="ascii") as f:
            rss_pages = int(f.read().split()[1])
        return cls(
            tasks=len(asyncio.all_tasks()),
            threads=threading.active_count(),
            fds=len(os.listdir("/proc/self/fd")),
            rss_bytes=rss_pages * resource.getpagesize(),
        )


@dataclass(frozen=True)
class ChurnResult:
    cycles: int
    warmup_cycles: int
    seconds_per_cycle: float
    baseline: Levels
    after: Levels
    setup_s_p50: float  # offer posted -> first video frame
    setup_s_p99: float
    rss_series_mib: tuple[float, ...] = ()  # every tenth of the cycles, while peers come and go

    @property
    def rss_change(self) -> float:
        return self.after.rss_bytes / self.baseline.rss_bytes - 1.0

    @property
    def ok(self) -> bool:
        b, a = self.baseline, self.after
        return (
            a.tasks <= b.tasks
            and a.threads <= b.threads
            and a.fds <= b.fds
            and abs(self.rss_change) <= RSS_TOLERANCE
        )


async def _first_frame(received: list[float], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not received:
        if time.monotonic() > deadline:
            raise TimeoutError("no video frame")
        await asyncio.sleep(0.01)


_CLIP = np.zeros(48_000, np.float32)


async def one_cycle(http: aiohttp.ClientSession, url: str, n: int) -> float:
    """Connect and leave once, in the n-th way of KINDS; returns the setup time in seconds."""
    kind = n % len(KINDS)
    started = time.monotonic()
    if kind < 2:
        peer = LoopbackPeer(url, _CLIP, loop=True, keep_frames=False)
        try:
            await peer.connect(http)
            await _first_frame(peer.received.video_at_s, 10)
            setup_s = time.monotonic() - started
        finally:
            await peer.aclose(http if kind == 0 else None)
        return setup_s
    viewer = WhepViewer(url, "churn", keep_frames=False)
    try:
        await viewer.connect(http)
        await _first_frame(viewer.received.video_at_s, 10)
        setup_s = time.monotonic() - started
    finally:
        await viewer.aclose(http if kind == 2 else None)
    return setup_s


async def settle(http: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    """Wait until the server holds no session and no viewer (abrupt leavers take a while)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get(f"{url}/health") as r:
            sessions = (await r.json())["sessions"]
        async with http.get(f"{url}/channels") as r:
            viewers = sum(c["viewers"] for c in (await r.json())["channels"])
        if sessions == 0 and viewers == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {sessions} sessions and {viewers} viewers")
        await asyncio.sleep(0.1)


async def churn(url: str, cycles: int, warmup_cycles: int, trim: bool = True) -> ChurnResult:
    """Run warm-up and measured cycles against the server at ``url`` in this process."""
    async with server_session() as http:  # sends AVATAR_STREAMER_TOKEN if set
        # Let the default executor grow to its bound now: it adds threads lazily, up to
        # min(32, cores + 4), and that growth is not churn.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.05) for _ in range(32)))
        for n in range(warmup_cycles):
            await one_cycle(http, url, n)
        await settle(http, url, 30)
        await asyncio.sleep(0.5)  # let closed transports' callbacks run
        baseline = Levels.sample(trim)
        setups = []
        started = time.monotonic()
        rss_series_mib = []
        for n in range(cycles):
            setups.append(await one_cycle(http, url, n))
            if (n + 1) % max(cycles // 10, 1) == 0:
                rss_series_mib.append(round(Levels.sample(trim).rss_bytes / 2**20, 1))
        seconds_per_cycle = (time.monotonic() - started) / max(cycles, 1)
        await settle(http, url, 30)
        await asyncio.sleep(0.5)
        after = Levels.sample(trim)
    return ChurnResult(
        cycles=cycles,
        warmup_cycles=warmup_cycles,
        seconds_per_cycle=seconds_per_cycle,
        baseline=baseline,
        after=after,
        setup_s_p50=float(np.percentile(setups, 50)) if setups else 0.0,
        setup_s_p99=float(np.percentile(setups, 99)) if setups else 0.0,
        rss_series_mib=tuple(rss_series_mib),
    )


def register(kinds: Any) -> None:
    p = kinds.add_parser("churn", help="connect/disconnect cycles: tasks, threads, fds, RSS")
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=40, help="cycles before the baseline")
    p.add_argument(
        "--no-malloc-trim",
        action="store_true",
        help="read RSS as it is (what an RSS graph shows), not after malloc_trim(0); print only",
    )
    p.add_argument("--no-record", action="store_true", help="print only")
    p.set_defaults(func=_run)


def report(r: ChurnResult) -> str:
    b, a = r.baseline, r.after
    mib = 1024 * 1024
    return (
        "| | tasks | threads | fds | RSS MiB |\n|---|---|---|---|---|\n"
        f"| after {r.warmup_cycles} warm-up cycles | {b.tasks} | {b.threads} | {b.fds} | "
        f"{b.rss_bytes / mib:.1f} |\n"
        f"| after {r.cycles} more cycles | {a.tasks} | {a.threads} | {a.fds} | "
        f"{a.rss_bytes / mib:.1f} ({100 * r.rss_change:+.1f} %) |\n\n"
        f"{r.seconds_per_cycle:.2f} s per cycle; setup (offer to first frame) "
        f"p50 {1e3 * r.setup_s_p50:.0f} ms, p99 {1e3 * r.setup_s_p99:.0f} ms. "
        f"RSS every {max(r.cycles // 10, 1)} cycles (MiB): "
        f"{', '.join(f'{x:.1f}' for x in r.rss_series_mib)}. "
        f"Verdict: {'PASS' if r.ok else 'FAIL'} (counts at baseline, RSS within "
        f"{100 * RSS_TOLERANCE:.0f} %)."
    )


async def _serve_and_churn(cycles: int, warmup: int, trim: bool) -> ChurnResult:
    from aiohttp import web

    from streamer.server.app import create_app
    from streamer.server.config import ServerConfig
    from streamer.server.media.runtime import build_runtime

    runtime = build_runtime(avatars_dir())
    runner = web.AppRunner(create_app(ServerConfig(connect_timeout_s=5.0), runtime))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        return await churn(f"http://127.0.0.1:{runner.addresses[0][1]}", cycles, warmup, trim)
    finally:
        await runner.cleanup()


def _run(args: argparse.Namespace) -> int:
    result = asyncio.run(_serve_and_churn(args.cycles, args.warmup, not args.no_malloc_trim))
    body = report(result)
    print(body)
    if not args.no_record and not args.no_malloc_trim:  # the recorded figures are trimmed
        intro = (
            "Server and client peers in one process (built-in model, default avatar, VP8); "
            f"the cycles rotate: {'; '.join(KINDS)}. Each waits for the first video frame. "
            "Counts are the whole process's (asyncio tasks, threads, /proc/self/fd), sampled "
            "after a garbage collection once the server holds no session and no viewer. RSS is "
            "read after glibc's malloc_trim(0), i.e. memory in use, not the allocator's "
            "high-water mark (see the note below the section).\n\n"
        )
        cmd = f"avatar-streamer bench churn --cycles {args.cycles} --warmup {args.warmup}"
        write_section("churn", "Churn: connect/disconnect cycles", cmd, intro + body)
    return 0 if result.ok else 1
