"""The soak's figures on synthetic series with known answers (no network, no clock)."""

from __future__ import annotations

import fractions
import math

import av
import numpy as np
import pytest

from streamer.probe.analysis import (
    AnalysisOptions,
    PeerFigures,
    PeerRecord,
    Thresholds,
    av_offsets,
    drift_per_hour,
    evaluate,
    fps_series,
    frames_lost,
    freeze_limits_s,
    gaps,
    long_gaps,
    mouth_to_lips,
    peer_figures,
    rss_growth,
    stalled_s,
)
from streamer.probe.clip import PACKET_SAMPLES, RATE_HZ, SoakClip, find_onsets, make_clip
from streamer.probe.measuring_peer import MouthMeter, SoakPeer
from tests.speech_path import T0_S, call

FPS = 25


def steady_times(seconds: float, start_s: float = 100.0) -> np.ndarray:
    return start_s + np.arange(int(seconds * FPS)) / FPS


def test_fps_windows_and_a_freeze_are_found() -> None:
    t = steady_times(30)
    stalled = t.copy()
    stalled[500:] += 0.3  # frames held back 300 ms once, then steady again (a freeze)
    stalled = np.delete(stalled, range(500, 507))  # ... and the frames in between were lost
    centres, fps = fps_series(t, 100.0, 130.0, 10.0)
    assert np.allclose(fps, 25.0)
    assert centres.tolist() == [105.0, 115.0, 125.0]
    long = long_gaps(gaps(stalled), 3.0, 0.150)
    assert long.size == 1
    assert long[0] == pytest.approx(0.04 * 8 + 0.3)
    assert long_gaps(gaps(t), 3.0, 0.150).size == 0
    _, fps_stalled = fps_series(stalled, 100.0, 130.0, 10.0)
    assert fps_stalled.min() < 24.5


def test_a_freeze_is_what_browsers_count() -> None:
    # webrtc-stats freezeCount: a gap of at least max(3 x, + 150 ms) the mean of the last 30.
    at_25 = np.full(40, 0.040)
    limits = freeze_limits_s(at_25, 30, 3.0, 0.150)
    assert np.isinf(limits[0])  # nothing before the first gap
    assert limits[-1] == pytest.approx(0.190)
    at_10 = np.full(40, 0.100)
    assert freeze_limits_s(at_10, 30, 3.0, 0.150)[-1] == pytest.approx(0.300)
    # The mean is of the gaps before: a long gap raises the limit of the next ones.
    bumpy = at_25.copy()
    bumpy[35] = 0.5
    limits = freeze_limits_s(bumpy, 30, 3.0, 0.150)
    assert limits[35] == pytest.approx(0.190)
    assert limits[36] == pytest.approx(0.040 + (0.5 - 0.04) / 30 + 0.150)


def test_stalled_time_inside_intervals() -> None:
    starts = np.array([0.0, 10.0, 20.0])
    ends = np.array([1.0, 11.0, 21.0])
    stalls = np.array([[0.5, 0.7], [0.9, 2.0], [20.5, 20.6]])
    assert stalled_s(starts, ends, stalls) == pytest.approx([0.3, 0.0, 0.1])
    assert stalled_s(starts, ends, np.zeros((0, 2))).tolist() == [0.0, 0.0, 0.0]


def test_a_freeze_the_clients_own_stall_explains_is_counted_apart() -> None:
    rec = record_with_delay(0.0)
    t = np.asarray(rec.video_at_s)
    # Two 300 ms holes in the frames: one while the measuring process itself stalled for
    # 250 ms of it, one with 60 ms of such a stall (which alone does not explain it).
    for at_s in (1020.0, 1040.0):
        k = int(np.searchsorted(t, at_s))
        t[k:] += 0.26
    rec.video_at_s = t.tolist()
    stalls = np.array([[1020.0, 1020.25], [1040.1, 1040.16]])
    fig, series = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(warmup_s=5.0), stalls)
    assert (fig.freezes, fig.freezes_client, fig.long_gaps) == (1, 1, 2)
    assert fig.longest_freeze_ms == pytest.approx(300.0, abs=1.0)
    assert series["freeze_client"] == [True, False]
    alone, _ = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(warmup_s=5.0))
    assert (alone.freezes, alone.freezes_client) == (2, 0)
    # The machine seen resuming from its host's pause at the second freeze's end: that one is
    # the machine's (and a pause seen 10 s away from both explains nothing).
    paused = np.array([1040.3, 1030.0])
    fig, series = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(warmup_s=5.0), stalls, paused)
    assert (fig.freezes, fig.freezes_client, fig.freezes_machine) == (0, 1, 1)
    assert series["freeze_machine"] == [False, True]
    # The lowest fps window (10 s windows from 5 s): each hole cost its window a few frames;
    # the windows the pauses fall in (25-35 s, 35-45 s) are left out, the first hole's counts.
    windows = dict(zip(series["fps_t_s"], series["fps"], strict=True))
    assert windows[40.0] < windows[20.0] < 25.0
    assert fig.fps_min_window == pytest.approx(windows[20.0])
    assert alone.fps_min_window == pytest.approx(windows[40.0])


def test_lost_frames_come_from_pts_steps() -> None:
    pts = np.arange(100, dtype=np.int64) * 3600 + 123_456
    assert frames_lost(pts) == 0
    assert frames_lost(np.delete(pts, [10, 11, 50])) == 3


def test_mouth_to_lips_is_the_first_open_frame_after_an_onset() -> None:
    t = steady_times(10)
    activity = np.zeros_like(t)
    onsets = np.array([102.0, 106.0])
    for onset in onsets:
        opened = (t >= onset + 0.2) & (t < onset + 1.0)
        activity[opened] = 8.0
    got = mouth_to_lips(onsets, t, activity, 4.0, 1.0)
    # The first frame at or after onset + 0.2 s (frames every 40 ms from 100.0).
    assert got == pytest.approx([0.2, 0.2], abs=1e-9)
    # A mouth still open at the onset (the previous word) gives no figure.
    assert math.isnan(mouth_to_lips(np.array([102.5]), t, activity, 4.0, 1.0)[0])


def record_with_delay(video_late_s: float, seconds: float = 60.0) -> PeerRecord:
    """Audio RMS every 20 ms and mouth activity every 40 ms following the same syllables,
    the video arriving ``video_late_s`` after its audio."""
    rng = np.random.default_rng(3)
    syllables = np.repeat(rng.uniform(0, 1, int(seconds * 4)) > 0.4, 1).astype(float)

    def envelope(times: np.ndarray) -> np.ndarray:
        return syllables[np.clip((times * 4).astype(int), 0, syllables.size - 1)]

    at = np.arange(int(seconds * 50)) / 50
    vt = np.arange(int(seconds * FPS)) / FPS
    rec = PeerRecord("p", answered_at_s=999.5)
    rec.audio_at_s = (1000 + at).tolist()
    rec.audio_rms = (0.2 * envelope(at)).tolist()
    rec.video_at_s = (1000 + vt).tolist()
    rec.mouth = (2.0 + 6.0 * envelope(vt - video_late_s)).tolist()
    rec.video_pts = (np.arange(vt.size) * 3600).tolist()
    return rec


@pytest.mark.parametrize("late_ms", [-40, 0, 120])
def test_av_offset_reads_the_injected_delay(late_ms: int) -> None:
    opts = AnalysisOptions(av_window_s=20.0, receiver_bias_s=0.0)
    rec = record_with_delay(late_ms / 1e3)
    _, offsets, corr = av_offsets(rec, 1000.0, 1060.0, opts)
    assert offsets.size == 3
    assert np.all(corr > 0.8)
    assert offsets * 1e3 == pytest.approx([late_ms] * 3, abs=10)


def test_the_receiver_bias_is_taken_off() -> None:
    opts = AnalysisOptions(av_window_s=20.0, receiver_bias_s=-0.040)
    _, offsets, _ = av_offsets(record_with_delay(-0.040), 1000.0, 1060.0, opts)
    assert offsets * 1e3 == pytest.approx([0, 0, 0], abs=10)


def test_drift_and_rss_growth_are_per_hour() -> None:
    t = np.arange(0.0, 600.0, 10.0)
    assert drift_per_hour(t, 5.0 + t * (20.0 / 3600)) == pytest.approx(20.0)
    assert math.isnan(drift_per_hour(t[:1], t[:1]))
    rss = 400e6 + t * (40e6 / 3600)  # 40 MB an hour on 400 MB: 10 %/h
    rss[:3] = 100e6  # warm-up: ignored
    pct, mb = rss_growth(t, rss, 30.0)
    assert pct == pytest.approx(10.0, rel=0.02)
    assert mb == pytest.approx(40e6 * (590 - 30) / 3600 / 1e6, rel=0.01)


def figures(**changes: float) -> PeerFigures:
    base = dict(
        name="p",
        time_to_first_frame_s=0.1,
        frames=1000,
        fps_mean=25.0,
        fps_min_window=25.0,
        gap_p50_ms=40.0,
        gap_p99_ms=60.0,
        gap_max_ms=80.0,
        freezes=0,
        longest_freeze_ms=0.0,
        freezes_client=0,
        freezes_machine=0,
        long_gaps=0,
        frames_lost=0,
        mouth_to_lips_p50_ms=200.0,
        mouth_to_lips_p95_ms=300.0,
        onsets_measured=10,
        av_offset_median_ms=5.0,
        av_offset_max_abs_ms=20.0,
        av_drift_ms_per_h=0.0,
        speech_back_pct=99.0,
        speech_blocks_measured=500,
        speech_blocks_returned=495.0,
        utterances_measured=8,
        utterances_found=8,
        audio_delay_p50_ms=250.0,
    )
    base.update(changes)
    return PeerFigures(**base)  # type: ignore[arg-type]


def failing(checks: list) -> set[str]:  # type: ignore[type-arg]
    return {c.name for c in checks if not c.ok}


def test_each_threshold_fails_on_its_own() -> None:
    th = Thresholds()
    assert failing(evaluate([figures()], 30.0, 1.0, 1.0, th)) == set()
    assert failing(evaluate([figures(), figures(fps_min_window=24.0)], 30.0, 1.0, 1.0, th)) == {
        "fps"
    }
    assert failing(evaluate([figures()], 41.0, 1.0, 1.0, th)) == {"p99_frame_latency_ms"}
    assert failing(evaluate([figures(freezes=1)], 30.0, 1.0, 1.0, th)) == {"freezes"}
    assert failing(evaluate([figures(av_offset_max_abs_ms=45.0)], 30.0, 1.0, 1.0, th)) == {
        "av_offset_ms"
    }
    assert failing(evaluate([figures()], 30.0, 6.0, 20.0, th)) == {"rss_growth_pct_per_h"}
    # A fast rate over a few MB is noise; a figure that could not be measured fails.
    assert failing(evaluate([figures()], 30.0, 50.0, 2.0, th)) == set()
    assert failing(evaluate([figures()], math.nan, 1.0, 1.0, th)) == {"p99_frame_latency_ms"}


def test_peer_figures_of_a_clean_record() -> None:
    rec = record_with_delay(0.0)
    rec.onsets_sent_at_s = [1010.0, 1030.0]
    fig, series = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(warmup_s=5.0))
    assert fig.time_to_first_frame_s == pytest.approx(0.5)
    assert fig.fps_mean == pytest.approx(25.0, abs=0.05)
    assert fig.freezes == 0
    assert fig.frames_lost == 0
    assert fig.gap_p99_ms == pytest.approx(40.0)
    assert len(series["fps"]) == 5


def test_mouth_to_lips_takes_off_the_receivers_video_hold() -> None:
    rec = record_with_delay(0.0)
    t = np.asarray(rec.video_at_s)
    mouth = np.full(t.size, 2.0)
    rec.onsets_sent_at_s = [1010.0, 1020.0, 1030.0]
    for onset in rec.onsets_sent_at_s:
        mouth[(t >= onset + 0.2) & (t < onset + 0.7)] = 8.0  # opens 200 ms after each onset
    rec.mouth = mouth.tolist()
    fig, series = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(warmup_s=5.0))
    assert fig.onsets_measured == 3
    # The frame that shows the open mouth reached recv() 200 ms after the onset; it had been
    # at the client since 160 ms (aiortc holds a frame until the next one starts).
    assert fig.mouth_to_lips_p50_ms == pytest.approx(160.0, abs=0.5)
    assert series["mouth_to_lips_ms"] == pytest.approx([160.0] * 3, abs=0.5)
    held, _ = peer_figures(rec, 1000.0, 1060.0, AnalysisOptions(receiver_video_hold_s=0.0))
    assert held.mouth_to_lips_p50_ms == pytest.approx(200.0, abs=0.5)


async def test_a_soak_peer_keeps_what_speech_back_needs() -> None:
    speech, voice, sent_at, back = call()
    clip = SoakClip(voice, find_onsets(voice))
    meter = MouthMeter(np.zeros((1, 8, 8, 3), np.uint8), (0, 0, 8, 8))
    peer = SoakPeer("p", "http://127.0.0.1:9", clip, meter, "default")
    try:
        peer.track.sent_at_s[:] = sent_at.tolist()  # as if it had sent 3 loops from T0_S
        returned = np.concatenate((np.zeros(12_000, np.float32), back))  # 250 ms later
        for k in range(returned.size // 960):
            block = (returned[k * 960 : (k + 1) * 960] * 32767).astype(np.int16)
            stereo = np.stack((block, 0 * block), axis=1).reshape(1, -1)  # the left one counts
            frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 48_000, 960 * k
            frame.time_base = fractions.Fraction(1, 48_000)
            peer.on_audio(frame, T0_S + 0.02 * k + 0.03)  # arriving 30 ms after each is due
        record = peer.finish()
    finally:
        await peer.aclose()
    assert record.clip_speech is clip.speech
    assert len(record.audio_sub_energy) == len(record.audio_sub_pos) == 20 * len(record.audio_pts)
    fig, series = peer_figures(record, T0_S, T0_S + 40, AnalysisOptions(warmup_s=0.0))
    assert fig.speech_back_pct >= 99.0
    assert fig.utterances_found == fig.utterances_measured >= 3 * len(speech.utterances) - 2
    # 250 ms + 30 ms + Opus (2 x 6.5 ms) and the resamplers.
    assert 290 <= fig.audio_delay_p50_ms <= 300
    assert len(series["speech_back_pct"]) == fig.utterances_measured
    # Without what it sent, speech back is not measured (n/a), not 0.
    record.sent_at_s = []
    unsent, _ = peer_figures(record, T0_S, T0_S + 40, AnalysisOptions(warmup_s=0.0))
    assert math.isnan(unsent.speech_back_pct)


def test_the_clip_loops_on_packets_and_knows_its_onsets() -> None:
    clip = make_clip(None)
    assert clip.pcm.shape[0] % PACKET_SAMPLES == 0
    assert len(clip.onset_samples) >= 3
    assert clip.onset_samples[0] >= RATE_HZ  # after the leading second of silence
    burst = np.zeros(RATE_HZ * 3, np.float32)
    burst[RATE_HZ : RATE_HZ + 4800] = 0.5
    burst[2 * RATE_HZ : 2 * RATE_HZ + 4800] = 0.5
    assert find_onsets(burst) == (RATE_HZ, 2 * RATE_HZ)


def test_a_soak_without_a_server_says_so(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from streamer.cli import main

    status = main(["soak", "--url", "http://127.0.0.1:9", "--out", str(tmp_path), "--peers", "1"])
    assert status == 2
    assert "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
