"""Run a soak: peers and a /metrics scraper for a bounded time, then the report.

The thin asyncio shell around :mod:`streamer.probe.analysis`: it owns the peers and the
scraper task, ends them all (each awaited) when the time is up or on any failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from streamer.client_auth import refusal_message, server_session, token_from_env
from streamer.errors import StreamerError
from streamer.probe import promtext
from streamer.probe.analysis import (
    AnalysisOptions,
    Check,
    PeerFigures,
    Thresholds,
    evaluate,
    peer_figures,
    rss_growth,
)
from streamer.probe.clip import SoakClip, make_clip
from streamer.probe.impairment import Impairment
from streamer.probe.measuring_peer import SoakPeer, mouth_meter
from streamer.probe.playout_metrics import Playout, playout
from streamer.probe.report import machine_description
from streamer.resources import avatars_dir as default_avatars_dir
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LATENCY = "avatar_frame_latency_seconds"


@dataclass(frozen=True)
class SoakConfig:
    url: str
    peers: int
    minutes: float
    out_dir: Path
    clip: Path | None = None
    avatar: str = "default"
    # The local copy of the served avatar (its frames are the mouth meter's reference).
    avatars_dir: Path = field(default_factory=default_avatars_dir)
    scrape_every_s: float = 5.0
    # This process watches its own event loop: a wake-up this much later than asked is a stall
    # of the measuring client (its frames wait in the kernel meanwhile), not of the server.
    own_stall_s: float = 0.030
    stagger_s: float = 0.5
    thresholds: Thresholds = field(default_factory=Thresholds)
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    impairment: Impairment = field(default_factory=Impairment)  # peer k draws seed + k


@dataclass
class ServerSample:
    t_s: float
    latency_buckets: list[tuple[float, float]]
    frames: float
    dropped: float
    late_ticks: float
    underruns: float
    sessions: float
    rss_bytes: float
    open_fds: float
    threads: float
    asyncio_tasks: float
    gc_pauses_over_40ms: float  # cumulative, all generations (0 from a server without it)
    playout: Playout


def _sample(t_s: float, text: str) -> ServerSample:
    m = promtext.parse(text)
    return ServerSample(
        t_s=t_s,
        latency_buckets=promtext.buckets(m, LATENCY),
        frames=promtext.value(m, "avatar_frames_total"),
        dropped=promtext.value(m, "avatar_input_frames_dropped_total"),
        late_ticks=promtext.value(m, "avatar_ticks_late_total"),
        underruns=promtext.value(m, "avatar_audio_underruns_total"),
        sessions=promtext.value(m, "avatar_sessions"),
        rss_bytes=promtext.value(m, "avatar_process_resident_memory_bytes"),
        open_fds=promtext.value(m, "avatar_process_open_fds"),
        threads=promtext.value(m, "avatar_process_threads"),
        asyncio_tasks=promtext.value(m, "avatar_asyncio_tasks"),
        gc_pauses_over_40ms=promtext.value(m, "avatar_gc_pause_seconds_count")
        - promtext.value(m, "avatar_gc_pause_seconds_bucket", le="0.04"),
        playout=playout(m),
    )


async def _scrape_forever(
    http: aiohttp.ClientSession, url: str, every_s: float, into: list[ServerSample]
) -> None:
    t0 = time.monotonic()
    k = 0
    while True:
        await asyncio.sleep(max(0.0, t0 + k * every_s - time.monotonic()))
        k += 1
        try:
            async with http.get(f"{url}/metrics") as r:
                text = await r.text()
        except aiohttp.ClientError as exc:
            log.warning("soak: /metrics scrape failed: %s", exc)
            continue
        into.append(_sample(time.monotonic(), text))


# Bounded: a run that stalls this often measures nothing anyway.
MAX_OWN_STALLS = 100_000
WATCH_EVERY_S = 0.020
# A virtual machine whose host stops it (seen here: 35 s with nothing in the guest running, not
# even `vmstat`) resumes with its monotonic clock where it stopped and its wall clock set
# forward: the step between the two is the pause. NTP slews far slower than this.
MACHINE_PAUSE_S = 0.050


async def _watch_own_loop(
    stalls: deque[tuple[float, float]],
    pauses: deque[tuple[float, float]],
    min_stall_s: float,
) -> None:
    """Record this process's own stalls as (start, end) on the monotonic clock: each wake-up
    that came ``min_stall_s`` or more after it was due; and each pause of the whole machine as
    (the monotonic time it was seen, the wall-clock seconds it lasted)."""
    offset_s = time.time() - time.monotonic()
    while True:
        due = time.monotonic() + WATCH_EVERY_S
        await asyncio.sleep(WATCH_EVERY_S)
        woke, now_offset_s = time.monotonic(), time.time() - time.monotonic()
        if woke - due >= min_stall_s:
            stalls.append((due, woke))
        if abs(now_offset_s - offset_s) >= MACHINE_PAUSE_S:
            pauses.append((woke, now_offset_s - offset_s))
        offset_s = now_offset_s


def excusing_stalls(
    own_stalls: list[tuple[float, float]], samples: list[ServerSample]
) -> list[tuple[float, float]]:
    """The client's own stalls that may explain a freeze: those not overlapping a scrape
    interval in which the server counted a late tick (a stall of the whole machine stalls the
    server too; then the freeze is the server's)."""
    late = [(a.t_s, b.t_s) for a, b in itertools.pairwise(samples) if b.late_ticks > a.late_ticks]
    return [(s0, s1) for s0, s1 in own_stalls if not any(s0 < b and a < s1 for a, b in late)]


async def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run the soak and return the report (also written to ``out_dir/report.json``)."""
    url = config.url.rstrip("/")
    loop = asyncio.get_running_loop()
    clip: SoakClip = await loop.run_in_executor(None, make_clip, config.clip)
    if not clip.onset_samples:
        raise StreamerError("the soak clip has no speech onset after a silence")
    samples: list[ServerSample] = []
    peers: list[SoakPeer] = []
    started_wall = dt.datetime.now(dt.UTC)
    async with server_session() as http:  # the token from AVATAR_STREAMER_TOKEN, if set
        try:
            async with http.get(f"{url}/health") as r:
                health = await r.json()
        except (aiohttp.ClientError, ValueError) as exc:
            raise StreamerError(f"cannot reach the server at {url}: {exc}") from exc
        if "model" not in health:  # a server with a token shows it only to its holders
            raise StreamerError(refusal_message(401, f"{url}/health", token_from_env()))
        meter = await loop.run_in_executor(
            None, mouth_meter, health, config.avatar, config.avatars_dir
        )
        run_start_s = time.monotonic()
        own_stalls: deque[tuple[float, float]] = deque(maxlen=MAX_OWN_STALLS)
        pauses: deque[tuple[float, float]] = deque(maxlen=MAX_OWN_STALLS)
        watcher = asyncio.create_task(
            _watch_own_loop(own_stalls, pauses, config.own_stall_s), name="soak-own-stalls"
        )
        scraper = asyncio.create_task(
            _scrape_forever(http, url, config.scrape_every_s, samples), name="soak-scraper"
        )
        try:
            for k in range(config.peers):
                peer = SoakPeer(
                    f"peer{k + 1}", url, clip, meter, config.avatar, config.impairment.for_peer(k)
                )
                peers.append(peer)
                try:
                    await peer.connect(http)
                except (RuntimeError, aiohttp.ClientError) as exc:
                    raise StreamerError(f"{peer.record.name} could not connect: {exc}") from exc
                await asyncio.sleep(config.stagger_s)
            end_s = run_start_s + config.minutes * 60.0
            next_note_s = run_start_s + 60.0
            while (now := time.monotonic()) < end_s:
                await asyncio.sleep(min(end_s, next_note_s) - now)
                if time.monotonic() >= next_note_s:
                    next_note_s += 60.0
                    log.info(
                        "soak: %.1f of %g min, frames received %s",
                        (time.monotonic() - run_start_s) / 60,
                        config.minutes,
                        [len(p.record.video_at_s) for p in peers],
                    )
            run_end_s = time.monotonic()
        finally:
            await cancel_and_wait(scraper)
            await cancel_and_wait(watcher)
            for peer in peers:
                try:
                    await peer.aclose(http)
                except aiohttp.ClientError as exc:
                    log.warning("soak: closing %s: %s", peer.record.name, exc)
                    await peer.aclose()
    return build_report(
        config,
        clip,
        peers,
        samples,
        run_start_s,
        run_end_s,
        started_wall,
        list(own_stalls),
        list(pauses),
    )


def server_figures(
    samples: list[ServerSample], run_start_s: float, warmup_end_s: float
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Server figures after warm-up and the server's series over time."""
    steady = [s for s in samples if s.t_s >= warmup_end_s]
    p99_ms = math.nan
    if len(steady) >= 2:
        window = promtext.diff(steady[-1].latency_buckets, steady[0].latency_buckets)
        p99_ms = promtext.quantile(window, 0.99) * 1e3
    interval_p99: list[float | None] = [None]
    for a, b in itertools.pairwise(samples):
        q = promtext.quantile(promtext.diff(b.latency_buckets, a.latency_buckets), 0.99)
        interval_p99.append(None if math.isnan(q) else q * 1e3)
    t = np.asarray([s.t_s for s in samples])
    rss = np.asarray([s.rss_bytes for s in samples])
    pct_h, growth_mb = rss_growth(t, rss, warmup_end_s) if samples else (math.nan, math.nan)
    first, last = (steady[0], steady[-1]) if len(steady) >= 2 else (None, None)

    def delta(name: str) -> float | None:
        if first is None or last is None:
            return None
        return float(getattr(last, name) - getattr(first, name))

    moved = last.playout.minus(first.playout) if first is not None and last is not None else None
    targets_ms = [1e3 * v for s in steady for v in s.playout.target_delay_s.values()]
    figures = {
        "frame_latency_p99_ms": None if math.isnan(p99_ms) else p99_ms,
        "frames": delta("frames"),
        "input_frames_dropped": delta("dropped"),
        "late_ticks": delta("late_ticks"),
        "audio_underruns": delta("underruns"),
        "gc_pauses_over_40ms": delta("gc_pauses_over_40ms"),
        "rss_mb_start": None if first is None else first.rss_bytes / 1e6,
        "rss_mb_end": None if last is None else last.rss_bytes / 1e6,
        "rss_growth_pct_per_h": None if math.isnan(pct_h) else pct_h,
        "rss_growth_mb": None if math.isnan(growth_mb) else growth_mb,
        "open_fds_max": max((s.open_fds for s in samples), default=None),
        "threads_max": max((s.threads for s in samples), default=None),
        "asyncio_tasks_max": max((s.asyncio_tasks for s in samples), default=None),
        "playout_concealed": None if moved is None else moved.concealed,
        "playout_level_inserts": None if moved is None else moved.inserts,
        "playout_level_skips": None if moved is None else moved.skips,
        "speech_frames_dropped": None if moved is None else moved.speech_dropped,
        "playout_target_delay_ms_min": min(targets_ms, default=None),
        "playout_target_delay_ms_max": max(targets_ms, default=None),
    }
    series = {
        "t_s": (t - run_start_s).tolist(),
        "frame_latency_p99_ms": interval_p99,
        "input_frames_dropped": [s.dropped for s in samples],
        "late_ticks": [s.late_ticks for s in samples],
        "audio_underruns": [s.underruns for s in samples],
        "gc_pauses_over_40ms": [s.gc_pauses_over_40ms for s in samples],
        "rss_mb": (rss / 1e6).tolist(),
        "open_fds": [s.open_fds for s in samples],
        "threads": [s.threads for s in samples],
        "asyncio_tasks": [s.asyncio_tasks for s in samples],
        "sessions": [s.sessions for s in samples],
        # Every sink's target delay at each scrape (sinks come and go with sessions).
        "playout_target_delay_ms": [
            {sink: 1e3 * v for sink, v in s.playout.target_delay_s.items()} for s in samples
        ],
    }
    return figures, series


def build_report(
    config: SoakConfig,
    clip: SoakClip,
    peers: list[SoakPeer],
    samples: list[ServerSample],
    run_start_s: float,
    run_end_s: float,
    started_wall: dt.datetime,
    own_stalls: list[tuple[float, float]],
    machine_pauses: list[tuple[float, float]],
) -> dict[str, Any]:
    opts = config.analysis
    excuses = excusing_stalls(own_stalls, samples)
    excused = set(excuses)
    excuse_rows = np.asarray(excuses, np.float64).reshape(-1, 2)
    paused_at = np.asarray([at for at, _ in machine_pauses], np.float64)
    peer_results: list[PeerFigures] = []
    peer_series: dict[str, dict[str, list[float]]] = {}
    for peer in peers:
        figures, series = peer_figures(
            peer.finish(), run_start_s, run_end_s, opts, excuse_rows, paused_at
        )
        peer_results.append(figures)
        peer_series[figures.name] = series
    warmup_end_s = run_start_s + opts.warmup_s
    server, server_series = server_figures(samples, run_start_s, warmup_end_s)
    p99 = server["frame_latency_p99_ms"]
    checks = evaluate(
        peer_results,
        math.nan if p99 is None else p99,
        _nan(server["rss_growth_pct_per_h"]),
        _nan(server["rss_growth_mb"]),
        config.thresholds,
    )
    return {
        "started_utc": started_wall.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "config": {
            "url": config.url,
            "peers": config.peers,
            "minutes": config.minutes,
            "clip": str(config.clip) if config.clip else "synthesised speech",
            "clip_s": round(clip.duration_s, 3),
            "clip_onsets": len(clip.onset_samples),
            "avatar": config.avatar,
            "measured_s": round(run_end_s - run_start_s, 3),
            "own_stall_s": config.own_stall_s,
            "impairment": {**asdict(config.impairment), "seeds": "seed + peer index"},
        },
        # What each peer's impaired network did to the audio it sent (absent: not impaired).
        "client_network": {p.record.name: p.link.stats() for p in peers if p.link is not None},
        "thresholds": asdict(config.thresholds),
        "analysis": asdict(opts),
        "passed": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
        "peers": [p.to_json() for p in peer_results],
        "server": server,
        # The measuring process's own stalls; those beside no late tick of the server may
        # explain a freeze (``freezes_client``).
        "client": {
            "stalls": len(own_stalls),
            "stall_max_ms": max((1e3 * (b - a) for a, b in own_stalls), default=0.0),
            "stalls_without_server_late_tick": len(excuses),
        },
        # Pauses of the whole machine by its host (wall time stepped past the monotonic clock).
        "host_pauses": {
            "pauses": len(machine_pauses),
            "paused_s": sum(abs(jump) for _, jump in machine_pauses),
        },
        "series": {
            "peers": peer_series,
            "server": server_series,
            "client_stalls": [
                [a - run_start_s, 1e3 * (b - a), (a, b) in excused] for a, b in own_stalls
            ],
            "machine_pauses": [[at - run_start_s, jump] for at, jump in machine_pauses],
        },
    }


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def failed_checks(report: dict[str, Any]) -> list[Check]:
    return [Check(**c) for c in report["checks"] if not c["ok"]]
