"""The impairment schedule on known draws and on many packets (no network, no clock)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from streamer.probe.impairment import (
    Impairment,
    ImpairmentSchedule,
    jitter_ms_list,
    loss_pct_value,
)

PACKET_S = 0.020


class Scripted:
    """The RNG seam with given draws: per packet one for loss, then one for the delay."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


def run(
    schedule: ImpairmentSchedule, packets: int, seed: int = 0
) -> tuple[np.ndarray, list[float | None]]:
    """Send ``packets`` every 20 ms (plus up to 2 ms of pacing noise); (send times, releases)."""
    rng = np.random.default_rng(seed)
    sent = np.arange(packets) * PACKET_S + rng.uniform(0, 0.002, packets)
    return sent, [schedule.release_at_s(float(t)) for t in sent]


def test_known_draws_give_known_releases_and_order_is_kept() -> None:
    # loss 10 %, jitter 100 ms; draws: (loss, delay) per packet.
    schedule = ImpairmentSchedule(0.100, 0.10, Scripted([0.5, 0.9, 0.5, 0.0, 0.05, 0.3, 0.5, 0.2]))
    assert schedule.release_at_s(0.000) == pytest.approx(0.090)  # delayed 90 ms
    assert schedule.release_at_s(0.020) == pytest.approx(0.090)  # 0 ms, but not before packet 1
    assert schedule.release_at_s(0.040) is None  # 0.05 < 0.10: lost
    assert schedule.release_at_s(0.060) == pytest.approx(0.080 + 0.010)  # 20 ms, still behind
    assert (schedule.packets, schedule.dropped) == (4, 1)
    assert schedule.held_s_max == pytest.approx(0.090)


def test_many_packets_keep_order_and_delays_stay_within_the_jitter() -> None:
    schedule = Impairment(jitter_ms=80, seed=3).schedule()
    sent, released = run(schedule, 20_000)
    rel = np.asarray(released, np.float64)
    assert np.all(np.diff(rel) >= 0)  # never overtakes
    held = rel - sent
    assert held.min() >= 0
    assert held.max() <= 0.080 + 1e-12
    assert held.max() > 0.079  # the whole range is used
    # With 80 ms of jitter and a packet every 20 ms, order keeping really holds some packets
    # back (released together with the one before): the max() path is exercised.
    assert np.count_nonzero(np.diff(rel) == 0) > 1000


def test_delays_are_uniform_when_no_packet_catches_up() -> None:
    # 10 ms of jitter, a packet every 20 ms (+ <= 2 ms): no packet can reach the one before,
    # so the delays are the raw uniform draws: mean 5 ms, quartiles 2.5 / 7.5 ms.
    sent, released = run(Impairment(jitter_ms=10, seed=5).schedule(), 20_000)
    held_ms = (np.asarray(released) - sent) * 1e3
    assert held_ms.mean() == pytest.approx(5.0, abs=0.1)
    assert np.quantile(held_ms, [0.25, 0.75]) == pytest.approx([2.5, 7.5], abs=0.15)


@pytest.mark.parametrize("loss_pct", [1.0, 10.0])
def test_the_lost_share_is_close_to_the_asked_one(loss_pct: float) -> None:
    schedule = Impairment(loss_pct=loss_pct, seed=11).schedule()
    _, released = run(schedule, 50_000)
    lost = sum(r is None for r in released)
    assert lost == schedule.dropped
    # Binomial: sd = sqrt(n p (1-p)) = 22 packets at 1 %, 67 at 10 %; 4 sd either way.
    sd = np.sqrt(50_000 * loss_pct / 100 * (1 - loss_pct / 100))
    assert abs(lost - 50_000 * loss_pct / 100) <= 4 * sd
    # Without loss nothing is lost and, without jitter, nothing is held.
    _, clean = run(Impairment().schedule(), 1000)
    assert None not in clean


def test_a_seed_repeats_a_run_and_the_delays_do_not_depend_on_the_loss() -> None:
    a = run(Impairment(jitter_ms=10, loss_pct=5, seed=7).schedule(), 2000)[1]
    b = run(Impairment(jitter_ms=10, loss_pct=5, seed=7).schedule(), 2000)[1]
    c = run(Impairment(jitter_ms=10, loss_pct=5, seed=8).schedule(), 2000)[1]
    assert a == b
    assert a != c
    lossless = run(Impairment(jitter_ms=10, loss_pct=0, seed=7).schedule(), 2000)[1]
    kept = [k for k, r in enumerate(a) if r is not None]
    assert [a[k] for k in kept] == [lossless[k] for k in kept]
    assert Impairment(seed=7).for_peer(2).seed == 9


def test_bad_values_are_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Impairment(jitter_ms=-1)
    with pytest.raises(ValueError, match="loss"):
        Impairment(loss_pct=100)
    assert jitter_ms_list("0, 20,40") == [0.0, 20.0, 40.0]
    with pytest.raises(argparse.ArgumentTypeError):
        jitter_ms_list("0,x")
    with pytest.raises(argparse.ArgumentTypeError):
        loss_pct_value("-2")
    assert not Impairment().active
    assert Impairment(loss_pct=0.5).active
