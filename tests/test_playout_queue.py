"""A channel's paced playout on synthetic audio and explicit ticks (no clock, no network)."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.playout.pipeline import JobKind, SessionPipeline
from streamer.playout.queue import (
    AudioQueueFullError,
    ChannelPipeline,
    PlaybackEvent,
    PlayoutConfig,
    PlayoutQueue,
)
from tests.audio_signals import speechlike
from tests.playout_sim import jittered, run, send_times

PERIOD_S = 0.04
SPF = 640  # 16 kHz samples per 40 ms frame


def run_ticks(p: ChannelPipeline, ticks: int, start: int = 0) -> tuple[list, list[PlaybackEvent]]:
    jobs, events = [], []
    for k in range(start, start + ticks):
        jobs.append(p.next_job(k * PERIOD_S))
        events.extend(p.take_events())
    return jobs, events


def test_queue_takes_exact_frames_in_order_then_silence() -> None:
    q = PlayoutQueue(PlayoutConfig(prebuffer_s=0.0))
    ramp = np.arange(1000, dtype=np.float32)
    q.push(ramp[:300])
    q.push(ramp[300:])
    q.end_segment()
    a, pieces_a = q.take(640)
    b, pieces_b = q.take(640)
    np.testing.assert_array_equal(a, ramp[:640])
    np.testing.assert_array_equal(b[:360], ramp[640:])
    assert not b[360:].any()
    assert [(off, n) for _, off, n in pieces_a] == [(0, 300), (300, 340)]
    assert [(off, n) for _, off, n in pieces_b] == [(0, 360)]


def test_queue_refuses_beyond_its_bound_and_keeps_what_it_had() -> None:
    q = PlayoutQueue(PlayoutConfig(max_queued_s=1.0))
    q.push(np.ones(12_000, np.float32))
    with pytest.raises(AudioQueueFullError, match="limit is 1 s"):
        q.push(np.ones(8_000, np.float32))
    assert q.queued_samples == 12_000
    assert q.stats.refused_pushes == 1
    q.push(np.ones(4_000, np.float32))  # exactly up to the bound is fine
    assert q.queued_s == pytest.approx(1.0)


def test_a_live_driver_goes_through_the_playout_buffer_and_the_queue_resumes_after() -> None:
    clip = speechlike(12.0)
    p = ChannelPipeline(avatar_frame_count=1)
    p.set_live(True)
    assert p.adaptive
    arrivals = jittered(send_times(400), 0.03, np.random.default_rng(0))  # 8 s, 0-30 ms
    result = run(p, clip, arrivals, extra_s=0.0)
    played = [j.input_frame for j in result.jobs if j.input_frame is not None]
    assert played == list(range(played[0], played[-1] + 1))
    assert p.stats.dropped_input_frames == 0
    assert p.playout.stats.samples_played == 0  # the queue is not read while live
    p.set_live(False)
    assert not p.adaptive
    assert p.target_delay_s == 0.0
    p.playout.push(np.ones(640 * 10, np.float32) * 0.5)
    p.playout.end_segment()
    jobs = [p.next_job(arrivals[-1] + 0.04 * (k + 1)) for k in range(60)]
    assert p.playout.stats.samples_played == 640 * 10  # queued audio plays again, at the tick
    assert any(e.kind == "playback_finished" for e in p.take_events())
    late = [j for j in jobs[-20:] if j.playout_delay_s is not None and j.playout_delay_s > 0.01]
    assert late == []  # the live level was shed: queued frames play at their own tick


def test_prebuffer_waits_for_a_cushion_unless_the_segment_is_complete() -> None:
    q = PlayoutQueue(PlayoutConfig(prebuffer_s=0.06))  # 960 samples
    q.push(np.ones(640, np.float32))
    out, pieces = q.take(640)
    assert not out.any()
    assert not pieces
    q.push(np.ones(640, np.float32))
    out, _ = q.take(640)
    assert out.all()
    q2 = PlayoutQueue(PlayoutConfig(prebuffer_s=0.06))
    q2.push(np.ones(100, np.float32))
    q2.end_segment()
    out, _ = q2.take(640)
    assert out[:100].all()  # a complete short segment plays at once


def test_pushed_audio_plays_one_frame_per_tick_whatever_the_push_speed() -> None:
    p = ChannelPipeline(avatar_frame_count=4)
    speech = speechlike(2.0)
    p.playout.push(speech)  # two seconds pushed at once, like fast TTS
    p.playout.end_segment()
    jobs, events = run_ticks(p, 70)
    released = [j for j in jobs if j.input_frame is not None]
    # Each tick releases exactly one input frame: its own 40 ms of the pushed audio.
    assert [j.input_frame for j in released] == list(range(len(released)))
    played = np.concatenate([j.audio_16k for j in released])
    np.testing.assert_array_equal(played[: speech.shape[0]], speech)
    assert [e.kind for e in events] == ["playback_started", "playback_finished"]
    finished = events[1]
    assert finished.position_s == pytest.approx(2.0)
    assert not finished.interrupted
    # playback_finished comes with the frame that releases the segment's last sample.
    last_frame = (speech.shape[0] - 1) // SPF
    assert jobs[finished_tick(p, speech)].input_frame == last_frame


def finished_tick(p: ChannelPipeline, speech: np.ndarray) -> int:
    """Replay ``speech`` on a fresh pipeline like ``p``'s; the tick reporting its end."""
    fresh = ChannelPipeline(avatar_frame_count=4, config=p.config)
    fresh.playout.push(speech)
    fresh.playout.end_segment()
    for k in range(200):
        fresh.next_job(k * PERIOD_S)
        if any(e.kind == "playback_finished" for e in fresh.take_events()):
            return k
    raise AssertionError("no playback_finished")


def test_a_segment_with_gaps_reports_only_its_own_audio_as_position() -> None:
    p = ChannelPipeline(avatar_frame_count=4, playout=PlayoutConfig(prebuffer_s=0.0))
    p.playout.push(np.full(1000, 0.1, np.float32))
    _, events = run_ticks(p, 10)  # the driver stalls: silence is played, segment stays open
    assert [e.kind for e in events] == ["playback_started"]
    p.playout.push(np.full(600, 0.1, np.float32))
    p.playout.end_segment()
    _, events = run_ticks(p, 10, start=10)
    assert len(events) == 1
    assert events[0].kind == "playback_finished"
    assert events[0].position_s == pytest.approx(1600 / 16_000)


def test_interrupt_drops_everything_and_rests_the_mouth_on_the_next_frame() -> None:
    p = ChannelPipeline(avatar_frame_count=4)
    speech = np.tile(speechlike(1.0), 6)
    p.playout.push(speech)
    jobs, events = run_ticks(p, 60)
    assert any(j.kind is JobKind.RENDER and j.strength == 1.0 for j in jobs[-10:])
    p.interrupt()
    events += p.take_events()
    after, more = run_ticks(p, 30, start=60)
    assert p.playout.queued_samples == 0
    # Every frame after the interrupt is at rest and silent: no fade, no stale window.
    assert all(j.kind is JobKind.IDLE and j.strength == 0.0 for j in after)
    assert all(not j.audio_16k.any() for j in after)
    finished = [e for e in events if e.kind == "playback_finished"]
    assert len(finished) == 1
    assert finished[0].interrupted
    released = sum(j.audio_16k.shape[0] for j in jobs if j.input_frame is not None)
    assert finished[0].position_s == pytest.approx(released / 16_000)
    assert not more


def test_speech_pushed_right_after_an_interrupt_animates_again() -> None:
    p = ChannelPipeline(avatar_frame_count=4)
    p.playout.push(np.tile(speechlike(1.0), 3))
    run_ticks(p, 40)
    p.interrupt()
    p.take_events()
    p.playout.push(np.tile(speechlike(1.0), 3))
    p.playout.end_segment()
    jobs, events = run_ticks(p, 40, start=40)
    assert any(j.kind is JobKind.RENDER for j in jobs)
    assert events[0].kind == "playback_started"
    assert events[0].segment_id == 2


def test_session_pipeline_interrupt_skips_pending_frames_and_rests() -> None:
    p = SessionPipeline(avatar_frame_count=4)
    speech = speechlike(3.0)
    now = 0.0
    for k in range(0, 40 * SPF, SPF):
        p.push_pcm_16k(speech[k : k + SPF], now)
        p.next_job(now)
        now += PERIOD_S
    released = p.interrupt()
    assert released % SPF == 0
    assert 0 < released < 40 * SPF
    job = p.next_job(now)
    assert job.kind is JobKind.IDLE
    assert job.strength == 0.0
    assert not job.underrun
