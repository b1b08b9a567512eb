"""``bench viewers``: many WHEP viewers of one channel against a real server: fps and CPU each.

The server runs as its own process (:mod:`streamer.bench.served`); the viewers are real aiortc
peers, light ones (:mod:`streamer.probe.light_receiver`): every packet crosses their whole
receive path, but only video keyframes are decoded (to check the picture), so fifty of them
still leave the machine to the server. They run in this process, or with
``--client-processes P`` spread over P worker processes
(:mod:`streamer.bench.viewer_clients`): one asyncio process cannot receive fifty. One
channel, driven by the soak's spoken clip uploaded to ``/channels/{name}/speak`` (so the model
runs every tick, not only idle frames).

Per row (a number of viewers): the server's CPU over the measured window, the frames each
viewer received per second (the slowest and the mean), late ticks, and, against the first row,
what each extra viewer costs: (CPU of the row - CPU of the first row) / (its viewers - the first
row's).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

import aiohttp
import numpy as np

from streamer.bench.served import cpu_s, serve
from streamer.bench.viewer_clients import CHANNEL, LocalViewers, WorkerViewers
from streamer.client_auth import server_session
from streamer.probe import promtext
from streamer.probe.clip import make_clip, wav_bytes
from streamer.probe.light_receiver import light_decoding
from streamer.probe.report import write_section


def register(kinds: Any) -> None:
    p = kinds.add_parser("viewers", help="fps and server CPU with N viewers of one channel")
    p.add_argument("--viewers", default="1,10,50", help="comma-separated viewer counts")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument(
        "--client-processes",
        type=int,
        default=0,
        help="run the viewers in this many worker processes (0: in this one); one process "
        "cannot keep up with fifty viewers",
    )
    p.add_argument("--no-record", action="store_true", help="print only")
    p.set_defaults(func=_run)


def _looped(pcm: np.ndarray, seconds: float) -> np.ndarray:
    """``pcm`` repeated to last ``seconds`` (48 kHz)."""
    return np.tile(pcm, max(1, math.ceil(seconds * 48_000 / pcm.shape[0])))


async def _speak(http: aiohttp.ClientSession, url: str, wav: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("audio", wav, filename="clip.wav", content_type="audio/wav")
    async with http.post(f"{url}/channels/{CHANNEL}/speak", data=form) as r:
        if r.status != 202:
            raise RuntimeError(f"speak refused: {r.status} {await r.text()}")


async def _row(
    http: aiohttp.ClientSession,
    url: str,
    pid: int,
    viewers: LocalViewers | WorkerViewers,
    wav: bytes,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    try:
        await viewers.connect(http)
        await _speak(http, url, wav)
        await asyncio.sleep(warmup)
        async with http.get(f"{url}/metrics") as r:
            before = promtext.parse(await r.text())
        cpu0, t0 = cpu_s(pid), time.monotonic()
        viewers.measure(t0, t0 + seconds)
        await asyncio.sleep(seconds)
        cpu1, t1 = cpu_s(pid), time.monotonic()
        async with http.get(f"{url}/metrics") as r:
            after = promtext.parse(await r.text())
        watched = await viewers.result()
    finally:
        await viewers.aclose(http)
        async with http.post(f"{url}/channels/{CHANNEL}/interrupt"):
            pass
    return {
        "viewers": len(watched.fps),
        "fps_min": min(watched.fps),
        "fps_mean": float(np.mean(watched.fps)),
        "late_ticks": promtext.value(after, "avatar_ticks_late_total")
        - promtext.value(before, "avatar_ticks_late_total"),
        "keyframes": watched.keyframes,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_pct": 100 * watched.cpu_s / (t1 - t0),
        "picture": watched.picture,
    }


async def measure(
    counts: list[int], seconds: float, warmup: float, codec: str, processes: int = 0
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    clip = await loop.run_in_executor(None, make_clip, None)
    wav = wav_bytes(_looped(clip.pcm, warmup + seconds + 10.0))
    most = str(max(counts))
    args = ["--max-viewers-per-channel", most, "--max-viewers", most, "--codec", codec]
    results: list[dict[str, Any]] = []
    with light_decoding() as decoded:
        async with server_session() as http, serve(http, *args) as served:
            for n in counts:
                viewers = (
                    WorkerViewers(served.url, n, processes)
                    if processes > 0
                    else LocalViewers(served.url, n, decoded)
                )
                row = await _row(http, served.url, served.pid, viewers, wav, seconds, warmup)
                results.append(row)
                print(_line(results[-1], results[0]), flush=True)
    return results


def per_extra_viewer(row: dict[str, Any], first: dict[str, Any]) -> float:
    """Server CPU (% of one core) per viewer beyond the first row's; NaN for the first row."""
    extra = row["viewers"] - first["viewers"]
    return (row["cpu_pct"] - first["cpu_pct"]) / extra if extra > 0 else math.nan


def _line(r: dict[str, Any], first: dict[str, Any]) -> str:
    extra = per_extra_viewer(r, first)
    return (
        f"| {r['viewers']} | {r['fps_min']:.2f} | {r['fps_mean']:.2f} | {r['late_ticks']:.0f} | "
        f"{r['keyframes']} | {r['cpu_pct']:.0f} % | "
        f"{'n/a' if math.isnan(extra) else f'{extra:.2f} %'} | {r['client_cpu_pct']:.0f} % | "
        f"{r['picture']} |"
    )


HEADER = (
    "| viewers | fps (slowest) | fps (mean) | late ticks | keyframes decoded | server CPU | "
    "server CPU per extra viewer | client peers CPU | last keyframe |\n" + "|---" * 9 + "|"
)

COLUMNS = (
    "- viewers: light WHEP viewers of the one channel (every packet received, only video "
    "keyframes decoded).",
    "- fps: video frames received per second by the slowest viewer, and by all on average.",
    "- late ticks: scheduler ticks that missed their deadline (`avatar_ticks_late_total`).",
    "- keyframes decoded: video keyframes the viewers received in the window, all together.",
    "- server CPU: the server's process time over wall time (100 % = one core).",
    "- server CPU per extra viewer: (server CPU - the first row's) / (viewers - the first "
    "row's), in % of one core.",
    "- client peers CPU: the same for the processes that run the viewers (this one, or the "
    "`--client-processes` workers together).",
    "- last keyframe: the size and pixel standard deviation of the last keyframe decoded (a "
    "blank or broken picture reads ~0).",
)


def _run(args: argparse.Namespace) -> int:
    counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    print(HEADER, flush=True)
    results = asyncio.run(
        measure(counts, args.seconds, args.warmup, args.codec, args.client_processes)
    )
    body = (
        "Server: `avatar-streamer serve` in its own process (built-in model, default 512x512 "
        f"avatar, {args.codec.upper()}), one channel driven by the soak's spoken clip (uploaded "
        f"to `/speak`); {args.seconds:g} s measured per row after {args.warmup:g} s.\n\n"
        + "\n".join(COLUMNS)
        + "\n\n"
        + HEADER
        + "\n"
        + "\n".join(_line(r, results[0]) for r in results)
        + "\n"
    )
    if not args.no_record:
        command = (
            f"avatar-streamer bench viewers --viewers {args.viewers} --seconds {args.seconds:g}"
        )
        if args.codec != "vp8":
            command += f" --codec {args.codec}"
        if args.client_processes:
            command += f" --client-processes {args.client_processes}"
        write_section("viewers", "Channel viewers: fps and server CPU per viewer", command, body)
    return 0 if all(r["fps_min"] >= 24.5 for r in results) else 1
