"""``avatar-streamer soak --url URL --peers N --minutes M [--clip FILE] --out DIR``, optionally
with the peers' sent audio impaired: ``--jitter-ms J --loss-pct P --seed S``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.probe import impairment
from streamer.resources import add_avatars_dir_argument, avatars_dir

if TYPE_CHECKING:
    from streamer.soak.runner import SoakConfig


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "soak", help="run N real WebRTC peers against a server for M minutes and check it held"
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clip", type=Path, default=None, help="audio to loop (default: synthesised)")
    p.add_argument("--out", type=Path, required=True, help="directory for report.json and plots")
    p.add_argument("--avatar", default="default")
    add_avatars_dir_argument(p)
    p.add_argument("--warmup-s", type=float, default=30.0, help="excluded from steady figures")
    p.add_argument("--scrape-s", type=float, default=5.0, help="seconds between /metrics scrapes")
    p.add_argument("--fps-window-s", type=float, default=10.0)
    p.add_argument("--av-window-s", type=float, default=20.0)
    p.add_argument(
        "--receiver-bias-ms",
        type=float,
        default=-40.0,
        help="A/V offset an aiortc client reads for a perfectly synced server",
    )
    g = p.add_argument_group("thresholds (exit status 1 when one is crossed)")
    g.add_argument("--min-fps", type=float, default=24.5)
    g.add_argument("--max-p99-ms", type=float, default=40.0)
    g.add_argument("--max-freezes", type=int, default=0)
    g.add_argument("--max-av-offset-ms", type=float, default=40.0)
    g.add_argument("--max-rss-growth-pct-h", type=float, default=5.0)
    g.add_argument("--rss-noise-mb", type=float, default=8.0)
    p.add_argument("--no-plots", action="store_true")
    impairment.add_arguments(p, jitter_list=False)
    p.set_defaults(func=run)


def _f(x: Any, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def _range(figures: dict[str, Any], name: str) -> str:
    lo, hi = figures[f"{name}_min"], figures[f"{name}_max"]
    return "n/a" if lo is None else f"{lo:.0f}-{hi:.0f} ms"


def summary(report: dict[str, Any]) -> str:
    """One screen: the run, each peer, the server, each check."""
    c = report["config"]
    imp = c["impairment"]
    network = (
        f"jitter 0-{imp['jitter_ms']:g} ms, loss {imp['loss_pct']:g} %, seed {imp['seed']} + peer"
        if imp["jitter_ms"] > 0 or imp["loss_pct"] > 0
        else "none"
    )
    lines = [
        f"soak: {c['peers']} peers x {c['minutes']:g} min against {c['url']} "
        f"({report['started_utc']}, {report['machine']})",
        f"clip: {c['clip']} ({c['clip_s']:.1f} s, {c['clip_onsets']} onsets), "
        f"warm-up {report['analysis']['warmup_s']:g} s; client audio impaired: {network}",
        "",
        "peer    first frame  fps mean/min  gaps p50/p99/max ms  freezes (client's, "
        "machine's, gaps > 120 ms)  lost  "
        "mouth-to-lips p50/p95 ms  speech back  A/V median/max ms  drift ms/h",
    ]
    for p in report["peers"]:
        lines.append(
            f"{p['name']:<7} {_f(p['time_to_first_frame_s'], '.2f'):>9} s  "
            f"{_f(p['fps_mean'], '.2f')}/{_f(p['fps_min_window'], '.2f'):<6} "
            f"{_f(p['gap_p50_ms'], '.0f')}/{_f(p['gap_p99_ms'], '.0f')}/"
            f"{_f(p['gap_max_ms'], '.0f'):<13} "
            + (
                f"{p['freezes']} ({p.get('freezes_client', 0)}, {p.get('freezes_machine', 0)}, "
                f"{p.get('long_gaps', 'n/a')})"
            ).rjust(39)
            + f"  {p['frames_lost']:>4}  "
            f"{_f(p['mouth_to_lips_p50_ms'], '.0f')}/{_f(p['mouth_to_lips_p95_ms'], '.0f')} "
            f"({p['onsets_measured']} onsets)".ljust(22)
            + f"  {_f(p['speech_back_pct'], '.1f')} %".ljust(13)
            + f"  {_f(p['av_offset_median_ms'], '+.0f')}/{_f(p['av_offset_max_abs_ms'], '.0f')}"
            f"  {_f(p['av_drift_ms_per_h'], '+.0f')}"
        )
    s = report["server"]
    cl = report.get("client", {})  # absent from reports before the client watched itself
    hp = report.get("host_pauses", {})
    lines += [
        "",
        f"server: frame latency p99 {_f(s['frame_latency_p99_ms'])} ms, "
        f"dropped {_f(s['input_frames_dropped'], '.0f')}, late ticks {_f(s['late_ticks'], '.0f')}, "
        f"underruns {_f(s['audio_underruns'], '.0f')}, "
        f"GC pauses over 40 ms {_f(s.get('gc_pauses_over_40ms'), '.0f')}",
        f"client: own stalls {cl.get('stalls', 'n/a')} (longest "
        f"{_f(cl.get('stall_max_ms'), '.0f')} ms), "
        f"{cl.get('stalls_without_server_late_tick', 'n/a')} beside no late tick of the server; "
        f"machine paused by its host {hp.get('pauses', 'n/a')} times "
        f"({_f(hp.get('paused_s'), '.1f')} s)",
        f"        RSS {_f(s['rss_mb_start'])} -> {_f(s['rss_mb_end'])} MB "
        f"({_f(s['rss_growth_pct_per_h'], '+.1f')} %/h), fds max {_f(s['open_fds_max'], '.0f')}, "
        f"threads max {_f(s['threads_max'], '.0f')}, tasks max {_f(s['asyncio_tasks_max'], '.0f')}",
        f"        playout: target delay {_range(s, 'playout_target_delay_ms')}, concealed "
        f"{_f(s['playout_concealed'], '.0f')}, level inserts/skips "
        f"{_f(s['playout_level_inserts'], '.0f')}/{_f(s['playout_level_skips'], '.0f')}, "
        f"speech frames dropped {_f(s['speech_frames_dropped'], '.0f')}",
        "",
    ]
    for check in report["checks"]:
        verdict = "PASS" if check["ok"] else "FAIL"
        lines.append(
            f"{verdict}  {check['name']:<22} {_f(check['value'], '.2f'):>8} "
            f"(limit {check['limit']:g}): {check['detail']}"
        )
    lines.append("")
    lines.append("PASSED" if report["passed"] else "FAILED: a threshold was crossed")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    from streamer.probe.analysis import AnalysisOptions, Thresholds
    from streamer.soak.runner import SoakConfig

    return SoakConfig(
        url=args.url,
        peers=args.peers,
        minutes=args.minutes,
        out_dir=args.out,
        clip=args.clip,
        avatar=args.avatar,
        avatars_dir=avatars_dir(args.avatars_dir),
        scrape_every_s=args.scrape_s,
        thresholds=Thresholds(
            min_fps=args.min_fps,
            max_p99_latency_ms=args.max_p99_ms,
            max_freezes=args.max_freezes,
            max_av_offset_ms=args.max_av_offset_ms,
            max_rss_growth_pct_per_h=args.max_rss_growth_pct_h,
            rss_noise_mb=args.rss_noise_mb,
        ),
        analysis=AnalysisOptions(
            warmup_s=args.warmup_s,
            fps_window_s=args.fps_window_s,
            av_window_s=args.av_window_s,
            receiver_bias_s=args.receiver_bias_ms / 1e3,
        ),
        impairment=impairment.Impairment(args.jitter_ms, args.loss_pct, args.seed),
    )


def run(args: argparse.Namespace) -> int:
    from streamer.soak.plots import write_plots
    from streamer.soak.runner import run_soak

    config = config_from_args(args)
    # Every peer's ICE checks are logged at INFO: keep the operator's screen for the soak.
    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_soak(config))
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if not args.no_plots:
        write_plots(report, args.out)
    text = summary(report)
    (args.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    return 0 if report["passed"] else 1
