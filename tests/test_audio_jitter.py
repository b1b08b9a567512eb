"""The pure pieces of the playout buffer: delay estimation, pauses, concealment."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.audio.conceal import fade_in, fade_out_continuation
from streamer.audio.jitter import DelayEstimator, JitterConfig
from streamer.audio.pause import BLOCK_SAMPLES, PauseDetector

PACKET_S = 0.02


def feed(est: DelayEstimator, delays_s: np.ndarray, t0_s: float = 0.0) -> list[float]:
    """Packet k (media end (k+1) x 20 ms) arrives (k+1) x 20 ms + delay after t0."""
    out = []
    for k, d in enumerate(delays_s):
        media_s = (k + 1) * PACKET_S
        out.append(est.observe(t0_s + media_s + float(d), media_s))
    return out


def test_relative_delay_is_against_the_fastest_recent_packet() -> None:
    est = DelayEstimator()
    # A constant 50 ms path plus lateness: only the lateness counts.
    rel = feed(est, np.array([0.05, 0.05, 0.08, 0.05, 0.06]))
    assert rel == pytest.approx([0.0, 0.0, 0.03, 0.0, 0.01])
    assert est.base_s == pytest.approx(0.05)


def test_the_base_follows_a_drifting_sender_clock() -> None:
    # The sender's clock runs 300 ppm fast: its media time gains 0.3 ms per second on ours,
    # so arrival - media falls steadily; the base (a 2 s sliding minimum) follows it and the
    # relative delay stays near zero instead of growing.
    est = DelayEstimator()
    n = int(600 / PACKET_S)
    media = (np.arange(n) + 1) * PACKET_S
    arrival = media / (1 + 300e-6) + 0.04
    rel = [est.observe(float(a), float(m)) for a, m in zip(arrival, media, strict=True)]
    assert max(rel) < 1e-3
    assert est.target_s == est.config.min_delay_s


def test_target_covers_uniform_jitter_and_clamps_to_its_bounds() -> None:
    rng = np.random.default_rng(0)
    est = DelayEstimator()
    feed(est, rng.uniform(0, 0.06, 3000))
    assert 0.06 <= est.target_s <= 0.07  # the top of the bucket holding p95 of 500 ms peaks
    quiet = DelayEstimator()
    feed(quiet, np.zeros(3000))
    assert quiet.target_s == pytest.approx(quiet.config.min_delay_s)  # the floor
    huge = DelayEstimator()
    feed(huge, rng.uniform(0, 2.0, 3000))
    assert huge.target_s == pytest.approx(huge.config.max_delay_s)


def test_one_late_packet_raises_the_target_at_once_and_it_falls_back_later() -> None:
    est = DelayEstimator(JitterConfig(late_hold_s=5.0))
    delays = np.zeros(3000)  # 60 s
    feed(est, delays[:1500])
    floor = est.config.min_delay_s
    assert est.target_s == pytest.approx(floor)
    late = 0.03 + 0.2  # 200 ms later than the 30 ms path
    est.observe(1501 * PACKET_S + late, 1501 * PACKET_S)
    assert est.target_s >= 0.2  # on the spot: the next such packet would be in time
    assert est.late_units == 1
    t_s = 1502 * PACKET_S
    history = []
    for k in range(1502, 3000):
        t_s = (k + 1) * PACKET_S
        est.observe(t_s + 0.03, t_s)
        history.append((t_s, est.target_s))
    raised = [t for t, target in history if target >= 0.2]
    assert 4.0 <= raised[-1] - raised[0] <= 8.0  # held a few seconds, then back down
    assert history[-1][1] == pytest.approx(floor)


def test_audio_read_in_a_server_stall_is_no_evidence_of_lateness() -> None:
    # A 150 ms stall of the server's own loop: 7 packets wait in its socket, then are read at
    # once. Flagged, they leave the target where it was; unflagged (the same arrivals), they
    # raise it to cover 150 ms (what the server did before it told them apart).
    def run(flag: bool) -> DelayEstimator:
        est = DelayEstimator()
        rng = np.random.default_rng(2)
        feed(est, rng.uniform(0, 0.02, 1500))  # 30 s of a 0-20 ms network
        resumed_s = 1508 * PACKET_S + 0.03
        for k in range(1500, 1508):  # sent during the stall, read when it ended
            est.observe(resumed_s, (k + 1) * PACKET_S, stalled=flag)
        for k in range(1508, 1600):
            t_s = (k + 1) * PACKET_S
            est.observe(t_s + float(rng.uniform(0, 0.02)), t_s)
        return est

    before = DelayEstimator()
    feed(before, np.random.default_rng(2).uniform(0, 0.02, 1500))
    flagged, unflagged = run(True), run(False)
    assert flagged.target_s == pytest.approx(before.target_s)
    assert flagged.stalled_units == 8
    assert flagged.late_units == before.late_units
    assert unflagged.target_s >= 0.15


def test_repeated_lateness_keeps_the_target_up_one_spike_does_not_move_it_by_itself() -> None:
    rng = np.random.default_rng(1)
    steady = DelayEstimator(JitterConfig(late_hold_s=0.0))
    delays = rng.uniform(0, 0.01, 3000)
    delays[1000] = 0.15  # one spiky packet: one interval out of 120
    feed(steady, delays)
    assert steady.target_s <= 0.03
    spiky = DelayEstimator(JitterConfig(late_hold_s=0.0))
    delays = rng.uniform(0, 0.01, 3000)
    delays[::100] = 0.15  # every 2 s: 1 interval in 4
    feed(spiky, delays)
    assert spiky.target_s >= 0.15


def test_reset_forgets_everything() -> None:
    est = DelayEstimator()
    feed(est, np.full(100, 0.3))
    est.reset()
    assert est.base_s is None
    assert est.target_s == est.config.start_delay_s
    assert est.snapshot().recent_peaks_s == ()


def test_config_rejects_inconsistent_bounds() -> None:
    with pytest.raises(ValueError, match="min_delay_s"):
        JitterConfig(min_delay_s=0.5, max_delay_s=0.4)


def test_pauses_are_blocks_near_the_noise_floor() -> None:
    rng = np.random.default_rng(2)
    noise = 0.01 * rng.standard_normal(16000).astype(np.float32)  # -40 dBFS room noise
    tone = 0.3 * np.sin(np.arange(16000) * 2 * np.pi * 200 / 16000).astype(np.float32)
    det = PauseDetector()
    signal = np.concatenate((noise, tone + noise, noise))
    for k in range(0, signal.shape[0], 320):
        det.push(signal[k : k + 320])
    assert det.is_quiet(2000, 14000)  # room noise: quiet although far above digital silence
    assert not det.is_quiet(15000, 17000)  # reaches into the tone
    assert not det.is_quiet(20000, 30000)
    assert det.is_quiet(33000, 47000)
    assert not det.is_quiet(47000, 48320 + 640)  # not pushed yet: not known quiet


def test_concealment_does_not_lower_the_noise_floor() -> None:
    rng = np.random.default_rng(3)
    det = PauseDetector()
    noise = 0.01 * rng.standard_normal(BLOCK_SAMPLES * 10).astype(np.float32)
    det.push(noise)
    floor = det.noise_energy
    det.push(np.zeros(BLOCK_SAMPLES * 3, np.float32), real=False)  # a lost packet, filled
    det.push(noise)
    assert det.noise_energy == pytest.approx(floor)
    assert det.is_quiet(0, BLOCK_SAMPLES * 20)  # the fill itself is quiet


def test_audio_no_longer_held_is_not_called_quiet() -> None:
    det = PauseDetector(capacity_blocks=10)
    det.push(np.zeros(BLOCK_SAMPLES * 30, np.float32))
    assert not det.is_quiet(0, BLOCK_SAMPLES * 5)
    assert det.is_quiet(BLOCK_SAMPLES * 25, BLOCK_SAMPLES * 30)


def test_concealment_continues_without_a_jump_and_fades_to_silence() -> None:
    t = np.arange(640) / 16000
    previous = (0.5 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    out = fade_out_continuation(previous, 1000, 480)
    assert out.shape == (1000,)
    assert abs(out[0] - previous[-1]) < 0.01  # the join repeats the last sample heard
    assert np.all(out[480:] == 0)
    assert np.all(np.abs(np.diff(out)) < 0.1)  # no click anywhere
    long = fade_out_continuation(previous[:100], 600, 600)  # longer than what it repeats
    assert np.all(np.abs(np.diff(long)) < 0.1)


def test_fade_in_rises_from_silence() -> None:
    x = np.ones(200, np.float32)
    y = fade_in(x, 40)
    assert y[0] < 0.01
    assert np.all(np.diff(y[:40]) > 0)
    assert np.all(y[40:] == 1)
    assert np.all(x == 1)  # a copy
