"""``bench pipeline``: N real WebRTC client peers against a real server, side by side.

The server runs as its own process (``avatar-streamer serve`` on a free port) so its CPU use
is its own; the client peers run here. For each session count the clients loop a speech-like
clip in real time, and after a warm-up the benchmark reads the server's /metrics (per-frame
latency histogram, drops) and /proc CPU time, and the frames each client received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
import numpy as np

from streamer.bench import promtext
from streamer.bench.peer import LoopbackPeer
from streamer.bench.report import write_section
from streamer.bench.signals import speechlike_48k
from streamer.client_auth import server_session

TARGET_P99_S = 0.040


def register(kinds: Any) -> None:
    p = kinds.add_parser("pipeline", help="per-frame latency, fps and CPU with N live sessions")
    p.add_argument("--sessions", default="1,2,4,8", help="comma-separated session counts")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per count")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--no-record", action="store_true", help="print only")
    p.set_defaults(func=_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/metrics") as r:
        return promtext.parse(await r.text())


async def _level(
    http: aiohttp.ClientSession, url: str, pid: int, n: int, seconds: float, warmup: float
) -> dict[str, Any]:
    clip = speechlike_48k(12.0)
    peers = [LoopbackPeer(url, clip, loop=True, keep_frames=False) for _ in range(n)]
    try:
        for peer in peers:
            await peer.connect(http)
        await asyncio.sleep(warmup)
        before = await _scrape(http, url)
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        client0 = time.process_time()
        counts0 = [len(p.received.video_at_s) for p in peers]
        await asyncio.sleep(seconds)
        after = await _scrape(http, url)
        cpu1, t1 = _cpu_s(pid), time.monotonic()
        client1 = time.process_time()
        counts1 = [len(p.received.video_at_s) for p in peers]
    finally:
        for peer in peers:
            await peer.aclose(http)
    window = promtext.diff(
        promtext.buckets(after, "avatar_frame_latency_seconds"),
        promtext.buckets(before, "avatar_frame_latency_seconds"),
    )
    fps = [(c1 - c0) / (t1 - t0) for c0, c1 in zip(counts0, counts1, strict=True)]

    def delta(name: str) -> float:
        return promtext.value(after, name) - promtext.value(before, name)

    return {
        "sessions": n,
        "p50_ms": promtext.quantile(window, 0.5) * 1e3,
        "p99_ms": promtext.quantile(window, 0.99) * 1e3,
        "fps_min": min(fps),
        "fps_mean": float(np.mean(fps)),
        "dropped": delta("avatar_input_frames_dropped_total"),
        "late_ticks": delta("avatar_ticks_late_total"),
        "underruns": delta("avatar_audio_underruns_total"),
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_pct": 100 * (client1 - client0) / (t1 - t0),
    }


async def measure(
    counts: list[int], seconds: float, warmup: float, model: Path | None
) -> list[dict[str, Any]]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamer",
        "serve",
        "--port",
        str(port),
        "--max-sessions",
        str(max(counts)),
    ]
    if model is not None:
        cmd += ["--model", str(model)]
    # The server's log goes to a file: a pipe nobody reads would block it once full.
    with tempfile.TemporaryFile() as log:
        server = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            return await _measure_levels(server, log, port, counts, seconds, warmup)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(server.wait(), 10)
            except TimeoutError:
                server.kill()
                await server.wait()


async def _measure_levels(
    server: asyncio.subprocess.Process,
    log: IO[bytes],
    port: int,
    counts: list[int],
    seconds: float,
    warmup: float,
) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}"
    results = []
    async with server_session() as http:  # sends AVATAR_STREAMER_TOKEN if set
        for _ in range(600):  # the model and avatar load first (seconds on a first run)
            if server.returncode is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited: {log.read().decode()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/health") as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.1)
        for n in counts:
            results.append(await _level(http, url, server.pid, n, seconds, warmup))
            print(_row(results[-1]), flush=True)
    return results


def _row(r: dict[str, Any]) -> str:
    ok = r["p99_ms"] < TARGET_P99_S * 1e3 and r["dropped"] == 0 and r["fps_min"] >= 24.5
    return (
        f"| {r['sessions']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps_min']:.2f} | "
        f"{r['fps_mean']:.2f} | {r['dropped']:.0f} | {r['late_ticks']:.0f} | "
        f"{r['underruns']:.0f} | {r['cpu_pct']:.0f} % | {r['client_cpu_pct']:.0f} % | "
        f"{'yes' if ok else 'no'} |"
    )


HEADER = (
    "| sessions | latency p50 ms | p99 ms | fps (min session) | fps (mean) | dropped frames | "
    "late ticks | underruns | server CPU | client peers CPU | "
    "fits (p99 < 40 ms, 0 drops, >= 24.5 fps) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def _run(args: argparse.Namespace) -> int:
    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    print(HEADER, flush=True)
    results = asyncio.run(measure(counts, args.seconds, args.warmup, args.model))
    fitting = [r["sessions"] for r in results if "yes" in _row(r)]
    summary = (
        f"Most sessions at 25 fps within budget here: {max(fitting) if fitting else 0} "
        f"(of {', '.join(map(str, counts))} tried)."
    )
    print(summary)
    if not args.no_record:
        body = (
            "Server: `avatar-streamer serve` in its own process (built-in model unless stated, "
            "default 512x512 avatar, VP8); clients: aiortc peers in the benchmark process, each "
            "looping a speech-like clip in real time. Latency is from a frame's audio window "
            "completing to the frame handed to its track (server /metrics histogram, 2 ms "
            "buckets, interpolated). Server CPU is its process time over wall time (200 % = both "
            f"cores). Measured for {args.seconds:g} s after a {args.warmup:g} s warm-up per row; "
            "the client peers (VP8 decoding) share the same 2 cores.\n\n"
            + HEADER
            + "\n"
            + "\n".join(_row(r) for r in results)
            + "\n\n"
            + summary
            + "\n"
        )
        cmd = (
            f"avatar-streamer bench pipeline --sessions {args.sessions} --seconds {args.seconds:g}"
        )
        if args.model:
            cmd += f" --model {args.model}"
        write_section("pipeline", "Real-time pipeline: sessions, latency, fps, CPU", cmd, body)
    return 0
