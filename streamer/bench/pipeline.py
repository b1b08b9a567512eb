"""``bench pipeline``: N real WebRTC client peers against a real server, side by side.

The server runs as its own process (``avatar-streamer serve`` on a free port) so its CPU use
is its own; the client peers run here. For each session count and each jitter value (one row
each) the clients loop the soak's spoken clip in real time, its audio crossing an impaired
network on the way out (:mod:`streamer.probe.impairment`); after a warm-up the benchmark reads
the server's /metrics (per-frame latency histogram, drops, playout counters) and /proc CPU time,
and what the clients saw: frames, mouth-to-lips, speech back, A/V offset (the soak's own
measures, :mod:`streamer.probe.analysis`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from streamer.bench.served import cpu_s, serve
from streamer.client_auth import server_session
from streamer.probe import impairment, promtext
from streamer.probe.analysis import AnalysisOptions, PeerFigures, peer_figures
from streamer.probe.clip import SoakClip, make_clip
from streamer.probe.impairment import Impairment
from streamer.probe.light_receiver import light_decoding
from streamer.probe.measuring_peer import MouthMeter, NoMouthMeter, SoakPeer, mouth_meter
from streamer.probe.playout_metrics import playout
from streamer.probe.report import write_section
from streamer.resources import avatars_dir

TARGET_P99_S = 0.040
MIN_ONSETS = 5  # fewer speech onsets measured in a row: its mic-to-lips reads n/a
AV_WINDOW_S = 5.0  # the A/V offset is read per window of this length


def register(kinds: Any) -> None:
    p = kinds.add_parser("pipeline", help="per-frame latency, fps and CPU with N live sessions")
    p.add_argument("--sessions", default="1,2,4,8", help="comma-separated session counts")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--no-record", action="store_true", help="print only")
    p.add_argument(
        "--light",
        action="store_true",
        help="client peers that decode only video keyframes (streamer/probe/light_receiver.py): "
        "the server's capacity, with the mouth and speech measures n/a; recorded apart",
    )
    impairment.add_arguments(p, jitter_list=True)
    p.set_defaults(func=_run)


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/metrics") as r:
        return promtext.parse(await r.text())


async def _level(
    http: aiohttp.ClientSession,
    url: str,
    pid: int,
    n: int,
    impaired: Impairment,
    clip: SoakClip,
    meter: MouthMeter,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    peers = [
        SoakPeer(f"session{k + 1}", url, clip, meter, "default", impaired.for_peer(k))
        for k in range(n)
    ]
    try:
        for peer in peers:
            await peer.connect(http)
        await asyncio.sleep(warmup)
        before = await _scrape(http, url)
        cpu0, t0 = cpu_s(pid), time.monotonic()
        client0 = time.process_time()
        await asyncio.sleep(seconds)
        after = await _scrape(http, url)
        cpu1, t1 = cpu_s(pid), time.monotonic()
        client1 = time.process_time()
    finally:
        for peer in peers:
            await peer.aclose(http)
    window = promtext.diff(
        promtext.buckets(after, "avatar_frame_latency_seconds"),
        promtext.buckets(before, "avatar_frame_latency_seconds"),
    )
    options = AnalysisOptions(warmup_s=0.0, fps_window_s=seconds, av_window_s=AV_WINDOW_S)
    measured = [peer_figures(p.finish(), t0, t1, options) for p in peers]
    fps = [frames_between(p.record.video_at_s, t0, t1) / (t1 - t0) for p in peers]

    return {
        "sessions": n,
        "jitter_ms": impaired.jitter_ms,
        "loss_pct": impaired.loss_pct,
        "p50_ms": promtext.quantile(window, 0.5) * 1e3,
        "p99_ms": promtext.quantile(window, 0.99) * 1e3,
        "fps_min": min(fps),
        "fps_mean": float(np.mean(fps)),
        **server_counters(before, after),
        **client_figures([f for f, _ in measured], [s for _, s in measured]),
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_pct": 100 * (client1 - client0) / (t1 - t0),
    }


def server_counters(
    before: dict[str, list[tuple[dict[str, str], float]]],
    after: dict[str, list[tuple[dict[str, str], float]]],
) -> dict[str, float]:
    """The server's counters over a row (two parsed /metrics scrapes) and its playout target
    delay at the end (mean over sinks, ms). The playout metrics read NaN when the server does
    not export them (:mod:`streamer.probe.playout_metrics`)."""

    def delta(name: str) -> float:
        return promtext.value(after, name) - promtext.value(before, name)

    moved = playout(after).minus(playout(before))
    targets = list(moved.target_delay_s.values())
    return {
        "dropped": delta("avatar_input_frames_dropped_total"),
        "late_ticks": delta("avatar_ticks_late_total"),
        "underruns": delta("avatar_audio_underruns_total"),
        "concealed": _nan(moved.concealed),
        "inserts": _nan(moved.inserts),
        "skips": _nan(moved.skips),
        "speech_dropped": _nan(moved.speech_dropped),
        "target_delay_ms": float(np.mean(targets)) * 1e3 if targets else math.nan,
    }


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def frames_between(at_s: list[float], t0: float, t1: float) -> int:
    t = np.asarray(at_s)
    return int(np.count_nonzero((t >= t0) & (t < t1)))


def client_figures(
    figures: list[PeerFigures], series: list[dict[str, list[Any]]]
) -> dict[str, float]:
    """One row's client figures, pooled over its sessions: mic-to-lips p50/p95 (NaN under
    ``MIN_ONSETS`` onsets), speech back %, A/V offset median and largest magnitude."""
    m2l = np.asarray([v for s in series for v in s["mouth_to_lips_ms"] if v is not None])
    av = np.asarray([v for s in series for v in s["av_offset_ms"] if v is not None])
    speech = sum(f.speech_blocks_measured for f in figures)
    back = sum(f.speech_blocks_returned for f in figures)
    enough = m2l.size >= MIN_ONSETS
    return {
        "onsets": float(m2l.size),
        "mic_to_lips_p50_ms": float(np.quantile(m2l, 0.5)) if enough else math.nan,
        "mic_to_lips_p95_ms": float(np.quantile(m2l, 0.95)) if enough else math.nan,
        "speech_back_pct": 100 * back / speech if speech else math.nan,
        "av_median_ms": float(np.median(av)) if av.size else math.nan,
        "av_max_abs_ms": float(np.abs(av).max()) if av.size else math.nan,
    }


async def measure(
    counts: list[int],
    jitters_ms: list[float],
    loss_pct: float,
    seed: int,
    seconds: float,
    warmup: float,
    model: Path | None,
    light: bool = False,
) -> list[dict[str, Any]]:
    args = ["--max-sessions", str(max(counts))]
    if model is not None:
        args += ["--model", str(model)]
    loop = asyncio.get_running_loop()
    clip = await loop.run_in_executor(None, make_clip, None)
    rows = [(n, Impairment(j, loss_pct, seed)) for n in counts for j in jitters_ms]
    results = []
    decoding = light_decoding() if light else contextlib.nullcontext()
    with decoding:
        async with server_session() as http, serve(http, *args) as served:  # token if set
            meter = (
                NoMouthMeter()
                if light
                else await loop.run_in_executor(
                    None, mouth_meter, served.health, "default", avatars_dir()
                )
            )
            for n, impaired in rows:
                level = await _level(
                    http, served.url, served.pid, n, impaired, clip, meter, seconds, warmup
                )
                if light:  # blank frames and silence: nothing to measure on the client side
                    level.update(dict.fromkeys(LIGHT_NA, math.nan), onsets=0.0)
                results.append(level)
                print(_row(results[-1]), flush=True)
    return results


# The client figures a light client cannot measure.
LIGHT_NA = (
    "mic_to_lips_p50_ms",
    "mic_to_lips_p95_ms",
    "speech_back_pct",
    "av_median_ms",
    "av_max_abs_ms",
)


def _f(x: float, spec: str = ".0f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def _fits(r: dict[str, Any]) -> bool:
    return bool(r["p99_ms"] < TARGET_P99_S * 1e3 and r["dropped"] == 0 and r["fps_min"] >= 24.5)


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['sessions']} | {r['jitter_ms']:g} | {r['loss_pct']:g} | {r['p50_ms']:.1f} | "
        f"{r['p99_ms']:.1f} | {r['fps_min']:.2f} | {r['fps_mean']:.2f} | {r['dropped']:.0f} | "
        f"{r['late_ticks']:.0f} | {r['underruns']:.0f} | {_f(r['concealed'])} | "
        f"{_f(r['inserts'])} / {_f(r['skips'])} | {_f(r['speech_dropped'])} | "
        f"{_f(r['target_delay_ms'])} | {_f(r['mic_to_lips_p50_ms'])} / "
        f"{_f(r['mic_to_lips_p95_ms'])} ({r['onsets']:.0f}) | "
        f"{_f(r['speech_back_pct'], '.1f')} % | "
        f"{_f(r['av_median_ms'], '+.0f')} / {_f(r['av_max_abs_ms'])} | {r['cpu_pct']:.0f} % | "
        f"{r['client_cpu_pct']:.0f} % | {'yes' if _fits(r) else 'no'} |"
    )


HEADER = (
    "| sessions | jitter ms | loss % | latency p50 ms | p99 ms | fps (min session) | "
    "fps (mean) | dropped frames | late ticks | underruns | concealed | level inserts / skips | "
    "speech frames dropped | target delay ms | mic-to-lips p50 / p95 ms (onsets) | speech back | "
    "A/V median / max ms | server CPU | client peers CPU | "
    "fits (p99 < 40 ms, 0 drops, >= 24.5 fps) |\n" + "|---" * 20 + "|"
)

COLUMNS = (
    "- sessions: client calls at once, each its own server session.",
    "- jitter ms, loss %: the impairment of the audio each client sends: every RTP packet "
    "delayed by a uniform 0..J ms without overtaking the one before, and that share of packets "
    "lost at random (real sequence-number holes); RTCP and the video untouched.",
    "- latency p50 / p99 ms: from the tick that plays a frame (its deadline) to the frame "
    "handed to its track: the server's processing per frame, the playout wait before it "
    "excluded (server /metrics histogram, 2 ms buckets, interpolated).",
    "- fps: video frames received per second by the slowest session, and by all on average.",
    "- dropped frames: input frames the server dropped for coming later than its maximum "
    "playout delay (`avatar_input_frames_dropped_total`).",
    "- late ticks: scheduler ticks that missed their deadline (`avatar_ticks_late_total`).",
    "- underruns: ticks whose next audio window was not complete, in speech or in a pause "
    "(`avatar_audio_underruns_total`).",
    "- concealed: underrun ticks during speech: the image held and the audio concealed, the "
    "late audio played when it came (`avatar_playout_concealed_frames_total`; n/a: the server "
    "does not export it); lost packets are filled when the next one comes and not counted here.",
    "- level inserts / skips: 40 ms of silence the playout buffer inserted or skipped to move "
    "its level (`avatar_playout_level_changes_total`, change=insert / skip; n/a as above).",
    "- speech frames dropped: input frames with speech the server dropped "
    "(`avatar_speech_frames_dropped_total`; n/a as above).",
    "- target delay ms: the playout buffer's target delay at the row's end, mean over its "
    "sinks (`avatar_playout_target_delay_seconds`; n/a as above).",
    "- mic-to-lips p50 / p95 ms (onsets): from a speech onset leaving the client to the first "
    "frame received with the mouth open, less the 40 ms an aiortc client holds each video "
    f"frame, over every session's onsets, counted in brackets (n/a with fewer than {MIN_ONSETS}).",
    "- speech back: the share of the speech the clients sent that came back in the audio the "
    "server returned, per 20 ms block by energy, each utterance found by envelope "
    "correlation (`streamer/probe/speech_back.py`).",
    "- A/V median / max ms: the lag of the mouth's motion behind the returned audio per "
    f"{AV_WINDOW_S:g} s window (+: video late), less an aiortc client's own -40 ms; median and "
    "largest magnitude over the windows with speech.",
    "- server CPU: the server's process time over wall time (200 % = both cores).",
    "- client peers CPU: the same for the benchmark process, which runs every client peer.",
    "- fits: p99 under 40 ms, no dropped frames and at least 24.5 fps in every session.",
)


def _run(args: argparse.Namespace) -> int:
    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    print(HEADER, flush=True)
    results = asyncio.run(
        measure(
            counts,
            args.jitter_ms,
            args.loss_pct,
            args.seed,
            args.seconds,
            args.warmup,
            args.model,
            args.light,
        )
    )
    print(summary_line(results, counts, args.jitter_ms))
    if not args.no_record:
        record(args, results)
    return 0


def summary_line(results: list[dict[str, Any]], counts: list[int], jitters: list[float]) -> str:
    return " ".join(
        f"Most sessions at 25 fps within budget here with {j:g} ms of jitter: "
        f"{max((r['sessions'] for r in results if r['jitter_ms'] == j and _fits(r)), default=0)}"
        f" (of {', '.join(map(str, counts))} tried)."
        for j in jitters
    )


def record(
    args: argparse.Namespace, results: list[dict[str, Any]], path: Path | None = None
) -> None:
    """Write the rows into the ``pipeline`` section of the report at ``path`` (default: the
    development clone's, see :func:`~streamer.probe.report.write_section`), with the
    command that measured them, the machine, the date and what each column means."""
    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    body = (
        "Server: `avatar-streamer serve` in its own process (built-in model unless stated, "
        "default 512x512 avatar, VP8); clients: aiortc peers in the benchmark process, each "
        "looping the soak's spoken clip (espeak-ng phrases a second apart; a synthetic voice "
        f"without espeak-ng) in real time, its sent audio impaired with seed {args.seed} "
        f"(+ session index). Measured for {args.seconds:g} s after a {args.warmup:g} s warm-up "
        "per row; the client peers (VP8 decoding, mouth metering) share the machine with the "
        "server.\n\n"
        + "\n".join(COLUMNS)
        + "\n\n"
        + HEADER
        + "\n"
        + "\n".join(_row(r) for r in results)
        + "\n\n"
        + summary_line(results, counts, args.jitter_ms)
        + "\n"
    )
    cmd = (
        f"avatar-streamer bench pipeline --sessions {args.sessions} --seconds {args.seconds:g}"
        f" --jitter-ms {','.join(f'{j:g}' for j in args.jitter_ms)} --loss-pct {args.loss_pct:g}"
        f" --seed {args.seed}"
    )
    if args.model:
        cmd += f" --model {args.model}"
    if getattr(args, "light", False):
        cmd += " --light"
        body = (
            "Light client peers: every packet received, only video keyframes decoded "
            "(`streamer/probe/light_receiver.py`), so the clients cost little; the mouth, "
            "speech-back and A/V columns read n/a.\n\n" + body
        )
        write_section("pipeline-light", "Real-time pipeline, light clients", cmd, body, path)
        return
    write_section("pipeline", "Real-time pipeline: sessions, latency, fps, CPU", cmd, body, path)
