"""The per-session media logic on synthetic audio and explicit times (no clock, no network)."""

from __future__ import annotations

import fractions

import numpy as np
import pytest

from streamer import AudioIngest, pcm_to_frame
from streamer.playout.pipeline import JobKind, OutputAudio, PipelineConfig, SessionPipeline
from tests.audio_signals import speechlike

PERIOD_S = 0.04
PACKET_S = 0.02


def packets_48k(pcm_16k: np.ndarray) -> list:
    """The 16 kHz signal as aiortc would hand it over: 20 ms s16 stereo 48 kHz frames."""
    up = np.repeat(pcm_16k, 3)
    s16 = (np.clip(up, -1, 1) * 32767).astype(np.int16)
    return [pcm_to_frame(np.stack((b, b), axis=1), 48_000) for b in np.split(s16, len(s16) // 960)]


def run_realtime(pipeline: SessionPipeline, pcm: np.ndarray, phase_s: float, ticks: int) -> list:
    """Interleave packet arrivals (every 20 ms, offset by phase_s) with ticks (every 40 ms)."""
    packets = packets_48k(pcm)
    events = [(k * PACKET_S + phase_s, 0, k) for k in range(len(packets))]
    events += [(t * PERIOD_S, 1, t) for t in range(ticks)]
    jobs = []
    for when, kind, k in sorted(events):
        if kind == 0:
            pipeline.push_audio(packets[k], when)
        else:
            jobs.append(pipeline.next_job(when))
    return jobs


def test_idle_before_any_audio_with_counting_pts() -> None:
    p = SessionPipeline(avatar_frame_count=3)
    jobs = [p.next_job(k * PERIOD_S) for k in range(7)]
    assert [j.output_index for j in jobs] == list(range(7))
    assert [j.avatar_frame for j in jobs] == [0, 1, 2, 0, 1, 2, 0]
    assert all(j.kind is JobKind.IDLE and j.window is None for j in jobs)
    assert all(np.all(j.audio_16k == 0) and len(j.audio_16k) == 640 for j in jobs)
    assert p.stats.underruns == 0


def test_realtime_speech_renders_one_new_frame_per_tick_with_its_own_audio() -> None:
    pcm = speechlike(6.0)
    p = SessionPipeline(avatar_frame_count=10)
    jobs = run_realtime(p, pcm, phase_s=0.013, ticks=140)
    consumed = [j for j in jobs if j.input_frame is not None]
    inputs = [j.input_frame for j in consumed]
    assert inputs == list(range(inputs[0], inputs[0] + len(inputs)))  # no skips, no repeats
    assert len(consumed) >= 125
    assert p.stats.dropped_input_frames == 0
    ingest = AudioIngest()
    heard = np.concatenate([ingest.push(f).samples for f in packets_48k(pcm)])
    for j in consumed:  # each frame carries exactly the audio of its own 40 ms
        start = j.input_frame * 640
        np.testing.assert_array_equal(j.audio_16k, heard[start : start + 640])
    assert any(j.kind is JobKind.RENDER for j in consumed)
    # Each frame was ready before its tick and played close to the playout target; its window
    # was complete about 130 ms (Wav2Lip's lookahead + half an STFT window, rounded up to a
    # packet) after its audio.
    waits = [
        j_t - j.ready_at_s
        for j_t, j in ((k * PERIOD_S, j) for k, j in enumerate(jobs))
        if j.ready_at_s is not None
    ]
    assert min(waits) >= 0
    delays = [j.playout_delay_s for j in consumed]
    assert max(delays) <= p.target_delay_s + PERIOD_S + 0.01
    lookahead = [j.ready_at_s - j.heard_at_s for j in consumed if j.heard_at_s is not None]
    assert 0.12 <= float(np.median(lookahead)) <= 0.16


def test_windows_follow_the_mel_extractor() -> None:
    pcm = speechlike(3.0)
    p = SessionPipeline(avatar_frame_count=1)
    jobs = run_realtime(p, pcm, phase_s=0.013, ticks=70)
    for j in jobs:
        if j.kind is JobKind.RENDER:
            np.testing.assert_array_equal(j.window, p.mel.window(j.input_frame))


def test_a_burst_drops_what_is_older_than_the_maximum_delay_and_never_bursts_output() -> None:
    p = SessionPipeline(avatar_frame_count=1)
    packets = packets_48k(speechlike(1.0))
    for k, packet in enumerate(packets):  # one second arrives at once
        packet.pts = k * 960
        packet.time_base = fractions.Fraction(1, 48_000)
        p.push_audio(packet, 0.0)
    ready = p.mel.frames_ready()
    job = p.next_job(0.001)
    # The newest audio is the fastest path; frames more than the maximum delay older than it
    # are dropped (counted), the rest play one per tick.
    max_s = p.config.jitter.max_delay_s
    assert job.playout_delay_s is not None
    assert job.playout_delay_s <= max_s
    assert p.stats.dropped_input_frames == job.input_frame
    assert ready - 1 - job.input_frame == pytest.approx(max_s / PERIOD_S, abs=1)
    second = p.next_job(0.041)
    assert second.input_frame == job.input_frame + 1  # one frame per tick, no catch-up
    assert p.stats.underruns == 0


def test_mouth_strength_fades_over_blend_frames_and_silence_skips_inference() -> None:
    pcm = np.concatenate(
        [np.zeros(16000, np.float32), speechlike(2.0), np.zeros(16000, np.float32)]
    )
    p = SessionPipeline(avatar_frame_count=1, config=PipelineConfig(blend_frames=3))
    jobs = run_realtime(p, pcm, phase_s=0.013, ticks=95)
    strengths = [j.strength for j in jobs if j.input_frame is not None]
    steps = np.diff(strengths)
    assert np.all(np.abs(steps) <= 1 / 3 + 1e-9)
    assert max(strengths) == 1.0
    assert strengths[0] == 0.0
    assert strengths[-1] == 0.0
    for j in jobs:
        assert (j.window is not None) == (j.kind is JobKind.RENDER)
        if j.kind is JobKind.IDLE:
            assert j.strength == 0.0


@pytest.mark.parametrize("phase_s", [0.0005, 0.017, 0.021, 0.039])
def test_the_playout_delay_does_not_depend_on_the_packet_phase(phase_s: float) -> None:
    pcm = speechlike(10.0)
    p = SessionPipeline(avatar_frame_count=1)
    jobs = run_realtime(p, pcm, phase_s=phase_s, ticks=240)
    delays = [j.playout_delay_s for j in jobs[100:] if j.playout_delay_s is not None]
    target = p.target_delay_s
    tolerance = p.config.level_tolerance_s
    assert min(delays) >= target - tolerance
    assert max(delays) < target + PERIOD_S
    assert p.stats.underruns == 0


def test_output_audio_is_48k_20ms_frames_with_exact_counts() -> None:
    out = OutputAudio()
    t = np.arange(16000 * 2) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    frames = []
    for k in range(0, len(tone), 640):
        frames += out.convert(tone[k : k + 640])
    assert [f.pts for f in frames] == [960 * k for k in range(len(frames))]
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert len(frames) == 100
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32) / 32768
    spectrum = np.abs(np.fft.rfft(pcm[4800:]))
    assert abs(np.argmax(spectrum) * 48000 / len(pcm[4800:]) - 300) < 3
    assert 0.45 < np.abs(pcm[4800:]).max() < 0.55
