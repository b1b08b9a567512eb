"""The session pipeline's playout buffer on synthetic networks (pure: no clock, no network).

Each scenario sends speech with pauses as 20 ms packets with media timestamps, delivers them
on a schedule (jitter with order kept, bursts, a stall, loss, a drifting sender clock) and
ticks at 25 Hz. The checks are the issue's: no speech frame dropped except beyond the maximum
delay, every change of the buffer level inside a pause, latency bounded, no growth.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamer.audio.ingest import AudioIngest
from streamer.audio.jitter import LoopStalls
from streamer.playout.pipeline import JobKind, LevelChange, PipelineConfig, SessionPipeline
from tests.audio_signals import speechlike
from tests.playout_sim import PACKET_S, Run, jittered, packet, run, send_times

CLIP_S = 20.0  # looped
BUILTIN_OFFSET = 4  # the built-in model's mel alignment (short lookahead)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speechlike(CLIP_S)


def pipeline(offset: int = BUILTIN_OFFSET, config: PipelineConfig | None = None) -> SessionPipeline:
    p = SessionPipeline(avatar_frame_count=1, config=config)
    p.set_mel_frame_offset(offset)
    return p


def frame_rms(clip: np.ndarray, frame: int) -> float:
    n = clip.shape[0]
    idx = np.arange(frame * 640, (frame + 1) * 640) % n
    return float(np.sqrt(np.mean(clip[idx].astype(np.float64) ** 2)))


def is_pause(clip: np.ndarray, frame: int) -> bool:
    """Independent of the pipeline: the frame and the two before it are at the clip's noise
    level (0.01 RMS; syllables reach 0.1-0.3). Skipping it joins quiet to whatever follows;
    an insert before it puts quiet between quiet frames."""
    return all(frame_rms(clip, k) < 0.02 for k in range(frame - 2, frame + 1))


def is_speech(clip: np.ndarray, frame: int) -> bool:
    return frame_rms(clip, frame) > 0.05


def check_invariants(result: Run, clip: np.ndarray, p: SessionPipeline, n_packets: int) -> None:
    """What must hold on any network, up to the end of the audio sent."""
    jobs = result.jobs
    played = [j.input_frame for j in jobs if j.input_frame is not None]
    assert played == sorted(set(played)), "input frames play once each, in order"
    skipped = {j.input_frame - 1 for j in jobs if j.level_change is LevelChange.SKIP}
    dropped_total = sum(j.dropped for j in jobs)
    last_sent_frame = n_packets // 2 - 1
    missing = set(range(played[0], min(played[-1], last_sent_frame))) - set(played)
    assert missing - skipped == set() or len(missing - skipped) <= dropped_total
    for k in skipped:
        assert is_pause(clip, k), f"skipped input frame {k} is not in a pause"
    for prev, job in itertools.pairwise(jobs):
        if job.level_change is LevelChange.INSERT:
            assert prev.input_frame is None or is_pause(clip, prev.input_frame + 1), (
                f"insert at output {job.output_index} is not in a pause"
            )
            assert float(np.abs(job.audio_16k).max()) < 0.1
    if dropped_total == 0:
        speech = [k for k in range(played[0], played[-1]) if is_speech(clip, k)]
        assert set(speech) <= set(played), "no speech frame was dropped"
    assert p.stats.dropped_speech_frames <= p.stats.dropped_input_frames


def delays_ms(result: Run, after_s: float = 0.0) -> np.ndarray:
    return np.array(
        [
            j.playout_delay_s * 1e3
            for t, j in zip(result.tick_s, result.jobs, strict=True)
            if j.playout_delay_s is not None and t >= after_s
        ]
    )


@pytest.mark.parametrize("jitter_ms", [0, 20, 40, 80])
def test_uniform_jitter_loses_nothing_and_the_delay_settles_above_it(
    clip: np.ndarray, jitter_ms: int
) -> None:
    n = int(90 / PACKET_S)
    arrivals = jittered(send_times(n), jitter_ms / 1e3, np.random.default_rng(jitter_ms))
    p = pipeline()
    result = run(p, clip, arrivals, extra_s=0.0)
    check_invariants(result, clip, p, n)
    assert p.stats.dropped_input_frames == 0
    assert p.stats.concealed <= 3  # at most one hold while the target first settles
    steady = delays_ms(result, after_s=30.0)
    # The target covers the jitter; the delay stays within a frame above it.
    assert p.target_delay_s * 1e3 <= max(20, jitter_ms) + 15
    assert float(np.max(steady)) <= p.target_delay_s * 1e3 + 55


def test_bursts_are_held_and_played_late_never_dropped(clip: np.ndarray) -> None:
    n = int(90 / PACKET_S)
    arrivals = send_times(n)
    for start in range(400, n - 20, 500):  # every 10 s: 200 ms of nothing, then 10 at once
        arrivals[start : start + 10] = arrivals[start + 10]
    p = pipeline()
    result = run(p, clip, arrivals, extra_s=0.0)
    check_invariants(result, clip, p, n)
    assert p.stats.dropped_input_frames == 0
    assert p.stats.concealed > 0  # bursts in speech were bridged, not skipped
    assert float(np.max(delays_ms(result))) <= 300  # 200 ms late + the target and a frame


def test_a_stall_longer_than_the_maximum_drops_only_what_is_beyond_it(clip: np.ndarray) -> None:
    n = int(60 / PACKET_S)
    arrivals = send_times(n)
    k0 = 1452  # 29.04 s: inside speech
    assert is_speech(clip, (k0 // 2) % int(CLIP_S * 25))
    arrivals[k0 : k0 + 25] = arrivals[k0 + 25]  # 500 ms of nothing, then all at once
    p = pipeline()
    result = run(p, clip, arrivals, extra_s=0.0)
    check_invariants(result, clip, p, n)
    max_ms = p.config.jitter.max_delay_s * 1e3
    # 500 ms + the delay before it, less the maximum: about 3 frames, and nothing else.
    assert 1 <= p.stats.dropped_input_frames <= 5
    assert float(np.max(delays_ms(result))) <= max_ms + 1
    later = delays_ms(result, after_s=45.0)
    assert float(np.max(later)) <= 80  # back to normal in the pauses after


@pytest.mark.parametrize("read_first", [False, True])
def test_a_server_stall_plays_its_backlog_late_instead_of_dropping_speech(
    clip: np.ndarray, read_first: bool
) -> None:
    n = int(60 / PACKET_S)
    stall = (29.03, 30.13)  # the server stood still for 1.1 s, inside speech
    assert sum(is_speech(clip, k % int(CLIP_S * 25)) for k in range(726, 753)) >= 10
    # Without knowing of the stall, the audio it held up is later than the maximum: cut out.
    blind = pipeline()
    run(blind, clip, send_times(n), extra_s=0.0, server_stalls=[stall], loop_stalls=LoopStalls())
    assert blind.stats.dropped_speech_frames >= 10
    # Told of it (as the scheduler tells every call), the pipeline plays it late, whether the
    # held-up packets are read before or after the tick that notes the stall.
    stalls = LoopStalls()
    p = pipeline()
    p.watch_stalls(stalls)
    targets_s: list[float] = []
    result = run(
        p,
        clip,
        send_times(n),
        extra_s=0.0,
        server_stalls=[stall],
        loop_stalls=stalls,
        read_first=read_first,
        on_tick=lambda job: targets_s.append(p.target_delay_s),
    )
    check_invariants(result, clip, p, n)
    assert stalls.count == 1
    # Their wait was the server's, not the network's: the target did not rise for it.
    before_s = targets_s[700]  # at 28 s
    after = [t for t, tick_s in zip(targets_s, result.tick_s, strict=True) if 29.0 < tick_s < 36]
    assert max(after) <= before_s + 0.02, (before_s, max(after))
    assert p.stats.dropped_input_frames == 0
    assert p.stats.late_after_stall > 0
    # Late by the stall at most, then back to normal in the pauses after.
    assert float(np.max(delays_ms(result))) <= 1100 + p.target_delay_s * 1e3 + 45
    assert float(np.max(delays_ms(result, after_s=45.0))) <= 80
    assert p.stats.skipped >= 25  # the 1.1 s taken back in pauses, a frame at a time


def test_a_server_stall_longer_than_its_allowance_drops_only_beyond_it(clip: np.ndarray) -> None:
    n = int(60 / PACKET_S)
    stalls = LoopStalls()
    p = pipeline()
    p.watch_stalls(stalls)
    stall = (29.03, 32.03)  # 3 s: past the maximum delay and the 2 s a stall may add
    result = run(p, clip, send_times(n), extra_s=0.0, server_stalls=[stall], loop_stalls=stalls)
    check_invariants(result, clip, p, n)
    limit_ms = (p.config.jitter.max_delay_s + p.config.max_stall_backlog_s) * 1e3
    assert float(np.max(delays_ms(result))) <= limit_ms + 1
    # 3 s + the delay before it, less 2.4 s: about 16 frames, and nothing else.
    assert 10 <= p.stats.dropped_input_frames <= 20
    assert float(np.max(delays_ms(result, after_s=50.0))) <= 80


def test_an_overloaded_server_late_at_every_tick_keeps_its_latency_bound(
    clip: np.ndarray,
) -> None:
    # A model slower than the frame rate: every tick fires 50-70 ms late for 20 s, so every
    # other tick is skipped and input piles up. Each late tick is a short stall; they must not
    # add up into seconds of allowance.
    n = int(60 / PACKET_S)
    rng = np.random.default_rng(5)
    overload = [(t, t + float(rng.uniform(0.05, 0.07))) for t in np.arange(20.0, 40.0, 0.08)]
    stalls = LoopStalls()
    p = pipeline()
    p.watch_stalls(stalls)
    result = run(p, clip, send_times(n), extra_s=0.0, server_stalls=overload, loop_stalls=stalls)
    check_invariants(result, clip, p, n)
    assert stalls.count >= 200
    assert p.stats.dropped_input_frames > 100  # half the ticks lost: not all input could play
    max_ms = p.config.jitter.max_delay_s * 1e3
    assert float(np.max(delays_ms(result))) <= max_ms + 70 + 45  # the longest stall, a tick


def test_loss_becomes_concealment_of_equal_length_and_costs_no_hold(clip: np.ndarray) -> None:
    n = int(60 / PACKET_S)
    lost = np.random.default_rng(7).random(n) < 0.02
    lost[:10] = False
    clean, lossy = pipeline(), pipeline()
    clean_run = run(clean, clip, send_times(n), extra_s=0.0)
    lossy_run = run(lossy, clip, send_times(n), lost=lost, extra_s=0.0)
    check_invariants(lossy_run, clip, lossy, n)
    last = int(np.flatnonzero(~lost)[-1])  # losses after the last packet are no gap
    inner = lost[:last]
    runs = int(np.count_nonzero(inner[1:] & ~inner[:-1]) + inner[0])
    assert lossy.stats.gaps_filled == runs  # one gap per run of lost packets
    assert lossy.stats.gap_samples_filled == 320 * int(inner.sum())  # of equal length
    assert lossy.stats.dropped_input_frames == 0
    # A frame whose audio was lost completes with the packet after it, 20 ms later: the target
    # grows by that much (one bucket or two) instead of frames waiting in speech.
    assert lossy.stats.concealed == 0
    assert lossy.target_delay_s <= clean.target_delay_s + 0.03
    assert np.median(delays_ms(lossy_run)) <= np.median(delays_ms(clean_run)) + 45
    # Later audio keeps its place: every input frame plays once, in order (checked above).


def test_a_sender_restarting_its_clock_is_a_new_start_not_a_huge_gap(clip: np.ndarray) -> None:
    p = pipeline()
    for k in range(200):
        p.push_audio(packet(clip, k), k * PACKET_S)
    frame = packet(clip, 200)
    frame.pts = 0  # the timestamps start over
    p.push_audio(frame, 200 * PACKET_S)
    assert p.stats.restarts == 1
    assert p.stats.gaps_filled == 0
    taken = p.stats.samples_in
    duplicate = packet(clip, 0)
    p.push_audio(duplicate, 201 * PACKET_S)  # the same pts again: ignored
    assert p.stats.samples_in == taken
    p.push_audio(packet(clip, 1), 202 * PACKET_S)  # the new time line goes on
    assert p.stats.samples_in > taken


def test_the_same_audio_comes_back_in_order(clip: np.ndarray) -> None:
    n = int(30 / PACKET_S)
    arrivals = jittered(send_times(n), 0.04, np.random.default_rng(3))
    p = pipeline()
    result = run(p, clip, arrivals, extra_s=0.0)
    ingest = AudioIngest()
    heard = np.concatenate([ingest.push(packet(clip, k)).samples for k in range(n)])
    for job in result.jobs:
        if job.input_frame is not None and not job.concealed:
            start = job.input_frame * 640
            expected = heard[start : start + 640]
            if job.audio_16k[0] != expected[0]:  # the first frame after a concealment fades in
                np.testing.assert_allclose(job.audio_16k[40:], expected[40:])
            else:
                np.testing.assert_array_equal(job.audio_16k, expected)


@pytest.mark.parametrize("ppm", [300, -300])
@pytest.mark.slow
def test_an_hour_of_sender_clock_drift_is_absorbed_in_pauses(clip: np.ndarray, ppm: int) -> None:
    n = int(3600 / PACKET_S)
    p = pipeline()
    result = run(p, clip, send_times(n, ppm), extra_s=0.0)
    check_invariants(result, clip, p, n)
    assert p.stats.dropped_input_frames == 0
    assert p.stats.concealed <= 2
    # 300 ppm of an hour is 1.08 s: 27 frames, each moved in a pause.
    net = p.stats.skipped - p.stats.inserted
    assert net == pytest.approx(27 * np.sign(ppm), abs=2)
    d = delays_ms(result, after_s=60.0)
    assert float(np.max(d)) <= p.target_delay_s * 1e3 + 55
    assert float(np.min(d)) >= p.target_delay_s * 1e3 - 20


def test_an_underrun_in_speech_holds_the_image_conceals_and_fades_the_mouth(
    clip: np.ndarray,
) -> None:
    n = int(4 / PACKET_S)
    p = pipeline()
    arrivals = send_times(n)
    result = run(p, clip, arrivals, extra_s=1.0)  # the audio stops mid-speech
    tail = [j for j, t in zip(result.jobs, result.tick_s, strict=True) if t > arrivals[-1]]
    speaking = [j for j in tail if j.underrun]
    assert speaking, "the end of the audio is an underrun"
    kinds = [j.kind for j in speaking]
    hold = p.config.hold_frames
    assert kinds[:hold] == [JobKind.HOLD] * hold  # the picture holds first
    assert kinds[-1] is JobKind.IDLE  # then the mouth comes to rest
    strengths = [j.strength for j in speaking[hold:]]
    assert strengths == sorted(strengths, reverse=True)
    first = speaking[0].audio_16k
    assert float(np.abs(first[:40]).max()) > 0.01  # concealment, not a hard cut...
    assert float(np.abs(first[-100:]).max()) < 1e-3  # ...fading out
    assert all(np.all(j.audio_16k == 0) for j in speaking[1:])
