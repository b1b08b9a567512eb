"""Prometheus metrics of one server, in its own registry (no process-wide state)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# 2 ms steps up to the 40 ms budget, so quantiles read off the histogram are within 1 ms.
_LATENCY_BUCKETS_S = (
    *(k / 1000 for k in range(2, 41, 2)),
    0.05,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)
_MIC_TO_LIPS_BUCKETS_S = (0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.6)
# 10 ms steps up to 200 ms (the estimator's buckets), then coarser to the 400 ms maximum.
_PLAYOUT_BUCKETS_S = (*(k / 100 for k in range(0, 21)), 0.25, 0.3, 0.35, 0.4, 0.5, 1.0)
# A collection that holds the GIL past a tick's slack makes the tick late: 40 ms and up matter.
_GC_PAUSE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("avatar_sessions", "Live sessions", registry=r)
        self.idle_closed = Counter(
            "avatar_sessions_idle_closed_total", "Calls closed for sending no audio", registry=r
        )
        self.frames = Counter("avatar_frames_total", "Frames produced", ["kind"], registry=r)
        self.dropped = Counter(
            "avatar_input_frames_dropped_total",
            "Input frames dropped for arriving later than the maximum playout delay",
            registry=r,
        )
        self.late_ticks = Counter(
            "avatar_ticks_late_total", "Scheduler ticks missed (dropped, re-anchored)", registry=r
        )
        self.underruns = Counter(
            "avatar_audio_underruns_total",
            "Ticks whose next audio window was not complete (in speech or in a pause)",
            registry=r,
        )
        self.frame_latency = Histogram(
            "avatar_frame_latency_seconds",
            "From the tick that plays a frame (its deadline) to the frame handed to its track: "
            "the per-frame processing latency (the wait before it is the playout delay)",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        # The playout buffer (live sources): what it aims at, what it did, what it measured.
        self.playout_target = Gauge(
            "avatar_playout_target_delay_seconds",
            "Current target playout delay of each live sink (a call, or a channel's live driver)",
            ["sink"],
            registry=r,
        )
        self.playout_delay = Histogram(
            "avatar_playout_delay_seconds",
            "How long after the fastest recent path each frame played from input was played",
            buckets=_PLAYOUT_BUCKETS_S,
            registry=r,
        )
        self.relative_delay = Histogram(
            "avatar_playout_relative_delay_seconds",
            "How late each played frame's audio arrived against the fastest recent audio "
            "(the target's quantile input)",
            buckets=_PLAYOUT_BUCKETS_S,
            registry=r,
        )
        self.concealed = Counter(
            "avatar_playout_concealed_frames_total",
            "Ticks whose audio came late during speech: image held, audio concealed",
            registry=r,
        )
        self.level_changes = Counter(
            "avatar_playout_level_changes_total",
            "Playout delay moved by one frame in a pause (insert: +1, skip: -1)",
            ["change"],
            registry=r,
        )
        self.speech_dropped = Counter(
            "avatar_speech_frames_dropped_total",
            "Input frames with speech dropped for arriving later than the maximum delay",
            registry=r,
        )
        self.mic_to_lips = Histogram(
            "avatar_mic_to_lips_seconds",
            "From a frame's own audio arriving to the frame handed to its track",
            buckets=_MIC_TO_LIPS_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "avatar_inference_batch_size",
            "Frames per inference call",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.render_seconds = Histogram(
            "avatar_render_seconds",
            "Inference + compositing time per tick",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.loop_lag = Histogram(
            "avatar_event_loop_lag_seconds",
            "Lateness of scheduler ticks against their deadline",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )

        self.gc_pause = Histogram(
            "avatar_gc_pause_seconds",
            "The interpreter's garbage collections, by generation: each holds the GIL, so the "
            "event loop and the inference thread wait it out (while the app runs)",
            ["generation"],
            buckets=_GC_PAUSE_BUCKETS_S,
            registry=r,
        )
        self._gc_started_s = 0.0

        # The process, sampled at each scrape: what a soak run watches for leaks.
        self.process_rss = Gauge(
            "avatar_process_resident_memory_bytes", "Resident set size of the process", registry=r
        )
        self.process_fds = Gauge("avatar_process_open_fds", "Open file descriptors", registry=r)
        self.process_threads = Gauge("avatar_process_threads", "OS threads", registry=r)
        self.asyncio_tasks = Gauge(
            "avatar_asyncio_tasks", "asyncio tasks alive in the serving loop", registry=r
        )

    def watch_gc(self) -> None:
        """Time every garbage collection into :attr:`gc_pause` until :meth:`unwatch_gc`.
        (``gc.callbacks`` is process-wide: the app that owns these metrics adds and removes
        its own callback.)"""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # The collector holds the GIL from start to stop: the two calls pair up.
        if phase == "start":
            self._gc_started_s = time.perf_counter()
        else:
            pause_s = time.perf_counter() - self._gc_started_s
            self.gc_pause.labels(str(info["generation"])).observe(pause_s)

    def forget_sink(self, sink_id: str) -> None:
        """Drop a sink's labelled series (it has gone)."""
        with contextlib.suppress(KeyError):
            self.playout_target.remove(sink_id)

    def render(self) -> bytes:
        """Prometheus text; call on the event loop (it counts that loop's tasks)."""
        self._sample_process()
        return generate_latest(self.registry)

    def _sample_process(self) -> None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key == "VmRSS":
                        self.process_rss.set(int(rest.split()[0]) * 1024)  # kB
                    elif key == "Threads":
                        self.process_threads.set(int(rest))
            self.process_fds.set(len(os.listdir("/proc/self/fd")))
        except OSError:
            pass  # not Linux: these gauges stay at 0
        # No running loop (a scrape from a thread): the gauge keeps its last value.
        with contextlib.suppress(RuntimeError):
            self.asyncio_tasks.set(len(asyncio.all_tasks()))
