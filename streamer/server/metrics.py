"""Prometheus metrics of one server, in its own registry (no process-wide state)."""

from __future__ import annotations

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
_MIC_TO_LIPS_BUCKETS_S = (0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.6)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("avatar_sessions", "Live sessions", registry=r)
        self.frames = Counter("avatar_frames_total", "Frames produced", ["kind"], registry=r)
        self.dropped = Counter(
            "avatar_input_frames_dropped_total", "Input frames skipped to re-anchor", registry=r
        )
        self.late_ticks = Counter(
            "avatar_ticks_late_total", "Scheduler ticks missed (dropped, re-anchored)", registry=r
        )
        self.underruns = Counter(
            "avatar_audio_underruns_total", "Ticks with no complete audio window", registry=r
        )
        self.frame_latency = Histogram(
            "avatar_frame_latency_seconds",
            "From a frame's audio window completing to the frame handed to its track",
            buckets=_LATENCY_BUCKETS_S,
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
