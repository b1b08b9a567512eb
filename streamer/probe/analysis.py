"""Soak figures from recorded series: pure numpy, no I/O, no clock.

Times are seconds on one monotonic clock (the soak process's). A peer's record is what it
saw: per video frame its arrival time, RTP pts (90 kHz) and mouth activity; per audio packet
its arrival time, RMS and RTP pts (48 kHz) and its energy per 1 ms; the send time of every
speech onset in the looped clip and of every packet it sent.
"""

from __future__ import annotations

import array
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.probe.speech_back import ClipSpeech, SpeechBack, returned_audio, speech_back

F64 = npt.NDArray[np.float64]

VIDEO_PTS_PER_FRAME = 3600  # 90 kHz at 25 fps
# An aiortc receiver's video jitter buffer releases a frame only when the next frame's first
# packet arrives, so every frame reaches ``recv()`` one frame period (40 ms at 25 fps) after it
# arrived. Mouth-to-lips takes it off: the figure is when the mouth reached the caller, not when
# this particular client let go of it.
RECEIVER_VIDEO_HOLD_S = 0.040


@dataclass(frozen=True)
class Thresholds:
    """Limits a soak run must stay within (the issue's defaults)."""

    min_fps: float = 24.5  # every fps window, every peer
    max_p99_latency_ms: float = 40.0  # server per-frame latency over the measured span
    max_freezes: int = 0  # per peer
    max_av_offset_ms: float = 40.0  # |A/V offset| of every window with speech
    max_rss_growth_pct_per_h: float = 5.0  # after warm-up
    # RSS growth below this many MB over the run is noise (allocator arenas, caches), whatever
    # its rate: a short run cannot tell 5 %/hour from a few pages.
    rss_noise_mb: float = 8.0


@dataclass(frozen=True)
class AnalysisOptions:
    warmup_s: float = 30.0  # from the start of the run: excluded from steady-state figures
    fps_window_s: float = 10.0
    av_window_s: float = 20.0
    av_max_lag_s: float = 0.3
    av_min_correlation: float = 0.3  # windows with less (no speech) give no offset
    # An aiortc receiver holds audio ~80 ms in its jitter buffer and video ~40 ms, so a server
    # that sends lips and sound together reads about -40 ms (video ahead) at this client.
    receiver_bias_s: float = -0.040
    # A freeze, as browsers count it (webrtc-stats ``freezeCount``): a gap between two frames
    # of at least max(3 x, the mean + 150 ms) the mean of the last 30 gaps.
    freeze_window_frames: int = 30
    freeze_factor: float = 3.0
    freeze_added_s: float = 0.150
    # The soak's first, stricter count, kept as a figure: gaps over min(3 x the mean, 150 ms).
    long_gap_factor: float = 3.0
    long_gap_s: float = 0.150
    mouth_open_fraction: float = 0.25  # of the way from rest to open: "the mouth opens"
    mouth_max_latency_s: float = 1.0
    receiver_video_hold_s: float = RECEIVER_VIDEO_HOLD_S  # taken off mouth-to-lips


@dataclass
class PeerRecord:
    """What one client peer saw. Lists grow by one item per frame or packet (bounded by the
    run's length)."""

    name: str
    answered_at_s: float
    video_at_s: list[float] = field(default_factory=list)
    video_pts: list[int] = field(default_factory=list)
    mouth: list[float] = field(default_factory=list)
    audio_at_s: list[float] = field(default_factory=list)
    audio_rms: list[float] = field(default_factory=list)
    onsets_sent_at_s: list[float] = field(default_factory=list)
    # The returned audio for speech back: per packet its pts (48 kHz), per 1 ms its position
    # (48 kHz samples) and energy; typed arrays keep an hour of it in tens of megabytes.
    audio_pts: array.array[int] = field(default_factory=lambda: array.array("q"))
    audio_sub_pos: array.array[int] = field(default_factory=lambda: array.array("q"))
    audio_sub_energy: array.array[float] = field(default_factory=lambda: array.array("d"))
    # What it sent: when each 20 ms packet left (packet k carried packet k % len of the looped
    # clip) and the clip's speech; without them speech back is not measured.
    sent_at_s: list[float] = field(default_factory=list)
    clip_speech: ClipSpeech | None = None


def _q(values: F64, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else math.nan


def fps_series(times_s: F64, start_s: float, end_s: float, window_s: float) -> tuple[F64, F64]:
    """(window centres, frames per second) over consecutive windows in [start, end)."""
    edges = np.arange(start_s, end_s - window_s + 1e-9, window_s)
    counts = [np.count_nonzero((times_s >= a) & (times_s < a + window_s)) for a in edges]
    return edges + window_s / 2, np.asarray(counts, np.float64) / window_s


# A machine pause is seen by the first wake-up after it; a freeze that ends up to this long
# before that wake-up (or starts this long after it) is still across it.
MACHINE_PAUSE_SLACK_S = 0.5


def gaps(times_s: F64) -> F64:
    return np.diff(times_s) if times_s.size > 1 else np.zeros(0)


def long_gaps(gap_s: F64, factor: float, floor_s: float) -> F64:
    """The gaps longer than ``factor`` x the mean gap or than ``floor_s``."""
    if not gap_s.size:
        return gap_s
    limit = min(factor * float(gap_s.mean()), floor_s)
    return gap_s[gap_s > limit]


def freeze_limits_s(gap_s: F64, window: int, factor: float, added_s: float) -> F64:
    """Per gap, the length from which it is a freeze as browsers count one (webrtc-stats
    ``freezeCount``): max(``factor`` x, + ``added_s``) the mean of the ``window`` gaps before
    it (of those there are; the first gap, with none before it, is never a freeze)."""
    if not gap_s.size:
        return gap_s
    sums = np.concatenate(([0.0], np.cumsum(gap_s)))
    k = np.arange(gap_s.size)
    lo = np.maximum(0, k - window)
    count = k - lo
    mean = np.divide(sums[k] - sums[lo], count, out=np.full(gap_s.size, np.inf), where=count > 0)
    return np.asarray(np.maximum(factor * mean, mean + added_s), np.float64)


def stalled_s(starts_s: F64, ends_s: F64, stalls: F64) -> F64:
    """Per interval [start, end): how much of it the stalls (rows of [start, end)) cover,
    the stalls assumed apart from each other."""
    if not stalls.size:
        return np.zeros(starts_s.shape)
    lo = np.maximum(starts_s[:, None], stalls[None, :, 0])
    hi = np.minimum(ends_s[:, None], stalls[None, :, 1])
    return np.asarray(np.clip(hi - lo, 0.0, None).sum(axis=1), np.float64)


def frames_lost(pts: npt.NDArray[np.int64]) -> int:
    """Frames missing between received ones, from the 90 kHz pts steps (3600 per frame)."""
    if pts.size < 2:
        return 0
    steps = np.rint(np.diff(pts) / VIDEO_PTS_PER_FRAME).astype(np.int64)
    return int(np.clip(steps - 1, 0, None).sum())


def mouth_threshold(activity: F64, fraction: float) -> float:
    """Activity above which the mouth counts as open: ``fraction`` of the way from the rest
    level (20th percentile) to the open level (98th)."""
    rest, open_ = _q(activity, 0.2), _q(activity, 0.98)
    return rest + fraction * (open_ - rest)


def mouth_to_lips(
    onsets_s: F64, video_at_s: F64, activity: F64, threshold: float, max_latency_s: float
) -> F64:
    """Per speech onset: from its sending to the first frame received after it whose mouth is
    open (NaN when none within ``max_latency_s``). The mouth must be closed at the onset
    (else the previous word is still on the lips and the onset is skipped: NaN)."""
    out = np.full(onsets_s.shape[0], np.nan)
    for k, onset in enumerate(onsets_s):
        first = int(np.searchsorted(video_at_s, onset))
        if first >= video_at_s.size or (first > 0 and activity[first - 1] > threshold):
            continue
        stop = int(np.searchsorted(video_at_s, onset + max_latency_s))
        opened = np.flatnonzero(activity[first:stop] > threshold)
        if opened.size:
            out[k] = video_at_s[first + opened[0]] - onset
    return out


def best_lag_s(
    a_times: F64, a: F64, b_times: F64, b: F64, max_lag_s: float, step_s: float = 0.005
) -> tuple[float, float]:
    """Lag by which series ``a`` trails ``b`` (positive: a later) and the correlation there."""
    lo, hi = max(a_times[0], b_times[0]), min(a_times[-1], b_times[-1])
    if hi - lo < 4 * max_lag_s:
        return math.nan, math.nan
    grid = np.arange(lo, hi, step_s)
    x = np.interp(grid, a_times, a)
    y = np.interp(grid, b_times, b)
    x = (x - x.mean()) / (x.std() + 1e-12)
    y = (y - y.mean()) / (y.std() + 1e-12)
    max_lag = round(max_lag_s / step_s)
    best = (math.nan, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        c = (
            float(np.mean(x[lag:] * y[: len(y) - lag]))
            if lag >= 0
            else float(np.mean(x[:lag] * y[-lag:]))
        )
        if c > best[1]:
            best = (lag * step_s, c)
    return best


def av_offsets(
    record: PeerRecord, start_s: float, end_s: float, options: AnalysisOptions
) -> tuple[F64, F64, F64]:
    """(window centres, A/V offset s, correlation) per window: the lag of the mouth's motion
    behind the returned audio's envelope, minus the receiver's known bias (positive: video
    late). Windows whose best correlation is under the minimum give NaN."""
    vt, mouth = np.asarray(record.video_at_s), np.asarray(record.mouth)
    at, rms = np.asarray(record.audio_at_s), np.asarray(record.audio_rms)
    centres, offsets, corrs = [], [], []
    a = start_s
    while a + options.av_window_s <= end_s + 1e-9:
        b = a + options.av_window_s
        vm = (vt >= a) & (vt < b)
        am = (at >= a) & (at < b)
        lag, corr = math.nan, math.nan
        if vm.sum() > 10 and am.sum() > 10 and mouth[vm].std() > 0 and rms[am].std() > 0:
            lag, corr = best_lag_s(vt[vm], mouth[vm], at[am], rms[am], options.av_max_lag_s)
        ok = not math.isnan(corr) and corr >= options.av_min_correlation
        centres.append(a + options.av_window_s / 2)
        offsets.append(lag - options.receiver_bias_s if ok else math.nan)
        corrs.append(corr)
        a = b
    return np.asarray(centres), np.asarray(offsets), np.asarray(corrs)


def drift_per_hour(times_s: F64, values: F64) -> float:
    """Slope of a least-squares line through the finite points, per hour (NaN if < 2)."""
    ok = np.isfinite(values)
    if ok.sum() < 2 or np.ptp(times_s[ok]) <= 0:
        return math.nan
    return float(np.polyfit(times_s[ok], values[ok], 1)[0] * 3600.0)


@dataclass(frozen=True)
class PeerFigures:
    name: str
    time_to_first_frame_s: float
    frames: int
    fps_mean: float
    fps_min_window: float
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float
    freezes: int  # as browsers count them, less those the client's own stalls explain
    longest_freeze_ms: float
    freezes_client: int  # freezes that the client process's own stalls explain
    freezes_machine: int  # freezes across a pause of the whole machine (its host stopped it)
    long_gaps: int  # gaps over min(3 x the mean, 150 ms): the soak's first, stricter count
    frames_lost: int
    mouth_to_lips_p50_ms: float
    mouth_to_lips_p95_ms: float
    onsets_measured: int
    av_offset_median_ms: float
    av_offset_max_abs_ms: float
    av_drift_ms_per_h: float
    speech_back_pct: float  # of the sent speech blocks measured, their energy that came back
    speech_blocks_measured: int
    speech_blocks_returned: float
    utterances_measured: int
    utterances_found: int
    audio_delay_p50_ms: float  # from an utterance sent to its return, median

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def peer_figures(
    record: PeerRecord,
    run_start_s: float,
    run_end_s: float,
    options: AnalysisOptions,
    client_stalls: F64 | None = None,
    machine_pauses_s: F64 | None = None,
) -> tuple[PeerFigures, dict[str, list[float]]]:
    """The figures of one peer and its series over time (seconds since the run's start).

    ``client_stalls`` are the measuring process's own stalls, rows of [start, end) on the
    record's clock: a freeze that would not be one without the stalled time inside it is the
    client's, counted apart (a real viewer's machine is not the one measuring).
    ``machine_pauses_s`` are the times (the record's clock) at which the whole machine was
    seen resuming from a pause of its host (wall time moved on, the monotonic clock did not):
    a freeze across one is the machine's, counted apart too, and the fps window it falls in is
    left out of the lowest window.
    """
    vt = np.asarray(record.video_at_s, np.float64)
    steady_s = run_start_s + options.warmup_s
    steady = vt >= steady_s
    centres, fps = fps_series(vt, steady_s, run_end_s, options.fps_window_s)
    g = gaps(vt[steady])
    limits = freeze_limits_s(
        g, options.freeze_window_frames, options.freeze_factor, options.freeze_added_s
    )
    frozen_at = np.flatnonzero(g >= limits)
    gap_end_s = vt[steady][1:]
    stalls = np.zeros((0, 2)) if client_stalls is None else client_stalls
    gap_start_s = gap_end_s[frozen_at] - g[frozen_at]
    pauses = np.zeros(0) if machine_pauses_s is None else machine_pauses_s
    # An fps window the machine was paused in says nothing of the server: not counted.
    half = options.fps_window_s / 2
    counted = np.array(
        [not np.any((pauses >= c - half) & (pauses < c + half)) for c in centres], dtype=bool
    )
    slack = MACHINE_PAUSE_SLACK_S
    machine = np.array(
        [
            bool(np.any((pauses >= a - slack) & (pauses <= b + slack)))
            for a, b in zip(gap_start_s, gap_end_s[frozen_at], strict=True)
        ],
        dtype=bool,
    )
    covered = stalled_s(gap_start_s, gap_end_s[frozen_at], stalls)
    client = ~machine & (g[frozen_at] - covered < limits[frozen_at])
    frozen = g[frozen_at[~client & ~machine]]
    mouth = np.asarray(record.mouth, np.float64)
    threshold = mouth_threshold(mouth, options.mouth_open_fraction) if mouth.size else math.nan
    onsets = np.asarray(record.onsets_sent_at_s, np.float64)
    onsets = onsets[(onsets >= steady_s) & (onsets < run_end_s)]
    m2l = (
        mouth_to_lips(onsets, vt, mouth, threshold, options.mouth_max_latency_s)
        - options.receiver_video_hold_s
        if mouth.size
        else np.zeros(0)
    )
    measured = m2l[np.isfinite(m2l)]
    av_t, av_off, _ = av_offsets(record, steady_s, run_end_s, options)
    finite = av_off[np.isfinite(av_off)]
    duration_s = max(1e-9, run_end_s - steady_s)
    back = returned_speech(record, steady_s, run_end_s)
    delays = back.utterance_delay_s[np.isfinite(back.utterance_delay_s)]
    figures = PeerFigures(
        name=record.name,
        time_to_first_frame_s=float(vt[0] - record.answered_at_s) if vt.size else math.nan,
        frames=int(vt.size),
        fps_mean=float(steady.sum() / duration_s),
        fps_min_window=float(fps[counted].min()) if counted.any() else math.nan,
        gap_p50_ms=_q(g, 0.5) * 1e3,
        gap_p99_ms=_q(g, 0.99) * 1e3,
        gap_max_ms=float(g.max() * 1e3) if g.size else math.nan,
        freezes=int(frozen.size),
        longest_freeze_ms=float(frozen.max() * 1e3) if frozen.size else 0.0,
        freezes_client=int(client.sum()),
        freezes_machine=int(machine.sum()),
        long_gaps=int(long_gaps(g, options.long_gap_factor, options.long_gap_s).size),
        frames_lost=frames_lost(np.asarray(record.video_pts, np.int64)[steady]),
        mouth_to_lips_p50_ms=_q(measured, 0.5) * 1e3,
        mouth_to_lips_p95_ms=_q(measured, 0.95) * 1e3,
        onsets_measured=int(measured.size),
        av_offset_median_ms=float(np.median(finite) * 1e3) if finite.size else math.nan,
        av_offset_max_abs_ms=float(np.abs(finite).max() * 1e3) if finite.size else math.nan,
        av_drift_ms_per_h=drift_per_hour(av_t, av_off * 1e3),
        speech_back_pct=back.fraction * 100,
        speech_blocks_measured=back.speech_blocks,
        speech_blocks_returned=back.returned_blocks,
        utterances_measured=back.utterances,
        utterances_found=back.utterances_found,
        audio_delay_p50_ms=float(np.median(delays) * 1e3) if delays.size else math.nan,
    )
    gap_t = vt[steady][1:] - run_start_s if g.size else np.zeros(0)
    series = {
        "fps_t_s": (centres - run_start_s).tolist(),
        "fps": fps.tolist(),
        "gap_t_s": gap_t.tolist(),
        "gap_ms": (g * 1e3).tolist(),
        "freeze_t_s": (gap_end_s[frozen_at] - run_start_s).tolist(),
        "freeze_ms": (g[frozen_at] * 1e3).tolist(),
        "freeze_client": client.tolist(),
        "freeze_machine": machine.tolist(),
        "av_t_s": (av_t - run_start_s).tolist(),
        "av_offset_ms": [None if not math.isfinite(v) else v for v in (av_off * 1e3).tolist()],
        "mouth_to_lips_t_s": (onsets - run_start_s).tolist(),
        "mouth_to_lips_ms": [None if not math.isfinite(v) else v for v in (m2l * 1e3).tolist()],
        "speech_back_t_s": (back.utterance_at_s - run_start_s).tolist(),
        "speech_back_pct": (back.utterance_fraction * 100).tolist(),
        "audio_delay_ms": [
            None if not math.isfinite(v) else v for v in (back.utterance_delay_s * 1e3).tolist()
        ],
    }
    return figures, series


def returned_speech(record: PeerRecord, start_s: float, end_s: float) -> SpeechBack:
    """Speech back (:mod:`streamer.probe.speech_back`) of the utterances ``record``'s peer sent
    from ``start_s`` whose return fits before ``end_s``; NaN without the sent side."""
    clip = record.clip_speech
    if clip is None or not record.sent_at_s:
        clip = ClipSpeech(np.zeros(0), 0.0, ())
    returned = returned_audio(
        np.asarray(record.audio_at_s, np.float64),
        np.asarray(record.audio_pts, np.int64),
        np.asarray(record.audio_sub_pos, np.int64),
        np.asarray(record.audio_sub_energy, np.float64),
    )
    return speech_back(clip, np.asarray(record.sent_at_s, np.float64), returned, start_s, end_s)


def rss_growth(times_s: F64, rss_bytes: F64, warmup_end_s: float) -> tuple[float, float]:
    """(growth %/hour of the RSS at warm-up's end, growth MB over the span) from a line fit
    through the samples after warm-up (NaN when fewer than 3)."""
    after = times_s >= warmup_end_s
    if after.sum() < 3 or np.ptp(times_s[after]) <= 0:
        return math.nan, math.nan
    t, y = times_s[after], rss_bytes[after]
    slope, intercept = np.polyfit(t, y, 1)
    base = slope * t[0] + intercept
    pct_per_h = float(slope * 3600.0 / max(base, 1.0) * 100.0)
    growth_mb = float(slope * (t[-1] - t[0]) / 1e6)
    return pct_per_h, growth_mb


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    ok: bool
    detail: str


def evaluate(
    peers: list[PeerFigures],
    server_p99_ms: float,
    rss_pct_per_h: float,
    rss_growth_mb: float,
    thresholds: Thresholds,
) -> list[Check]:
    """One check per threshold; a figure that could not be measured fails its check."""
    t = thresholds
    checks = []
    worst_fps = min((p.fps_min_window for p in peers), default=math.nan)
    checks.append(
        Check(
            "fps",
            _none(worst_fps),
            t.min_fps,
            math.isfinite(worst_fps) and worst_fps >= t.min_fps,
            "lowest fps over any window of any peer",
        )
    )
    checks.append(
        Check(
            "p99_frame_latency_ms",
            _none(server_p99_ms),
            t.max_p99_latency_ms,
            math.isfinite(server_p99_ms) and server_p99_ms <= t.max_p99_latency_ms,
            "server per-frame latency p99 after warm-up",
        )
    )
    worst_freezes = max((p.freezes for p in peers), default=0)
    checks.append(
        Check(
            "freezes",
            float(worst_freezes),
            float(t.max_freezes),
            worst_freezes <= t.max_freezes,
            "most freezes at one peer, as browsers count them (a frame gap of at least "
            "max(3 x, + 150 ms) the mean of the last 30), less those the client's own "
            "stalls explain and those across a pause of the whole machine",
        )
    )
    offsets = [p.av_offset_max_abs_ms for p in peers]
    worst_av = max(offsets) if offsets and all(math.isfinite(o) for o in offsets) else math.nan
    checks.append(
        Check(
            "av_offset_ms",
            _none(worst_av),
            t.max_av_offset_ms,
            math.isfinite(worst_av) and worst_av <= t.max_av_offset_ms,
            "largest |A/V offset| of any window with speech, any peer",
        )
    )
    rss_ok = (
        not math.isfinite(rss_pct_per_h)
        or rss_pct_per_h <= t.max_rss_growth_pct_per_h
        or rss_growth_mb <= t.rss_noise_mb
    )
    checks.append(
        Check(
            "rss_growth_pct_per_h",
            _none(rss_pct_per_h),
            t.max_rss_growth_pct_per_h,
            rss_ok,
            f"server RSS growth after warm-up ({_fmt(rss_growth_mb)} MB over the run; "
            f"under {t.rss_noise_mb:g} MB counts as noise)",
        )
    )
    return checks


def _none(x: float) -> float | None:
    return None if not math.isfinite(x) else x


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.1f}"
