"""The soak client watches its own event loop, so that a freeze it caused itself is not charged
to the server: a real asyncio loop blocked on purpose, and the rule that a stall beside a late
tick of the server excuses nothing."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

from streamer.probe.playout_metrics import Playout
from streamer.soak import runner
from streamer.soak.runner import ServerSample, _watch_own_loop, excusing_stalls
from streamer.tasks import cancel_and_wait


async def test_the_watcher_records_a_blocked_loop_and_nothing_else() -> None:
    stalls: deque[tuple[float, float]] = deque(maxlen=10)
    pauses: deque[tuple[float, float]] = deque(maxlen=10)
    watcher = asyncio.create_task(_watch_own_loop(stalls, pauses, 0.030))
    await asyncio.sleep(0.3)
    quiet = list(stalls)
    blocked_at = time.monotonic()
    time.sleep(0.15)  # noqa: ASYNC251 (the point: the whole loop held, as in a stalled client)
    await asyncio.sleep(0.1)
    await cancel_and_wait(watcher)
    assert quiet == []  # this loop is idle: no wake-up 30 ms late
    (stall,) = stalls
    start, end = stall
    assert blocked_at - 0.025 <= start <= blocked_at + 0.025
    assert 0.12 <= end - start <= 0.2
    assert list(pauses) == []  # a stalled process is no pause of the machine


async def test_the_watcher_sees_the_machine_resume_from_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A host that stops its VM: on resume the wall clock has moved on 35 s, the monotonic
    # clock has not. The wall clock is the seam faked here.
    real_time = time.time
    jump_s = 0.0
    monkeypatch.setattr(runner.time, "time", lambda: real_time() + jump_s)
    stalls: deque[tuple[float, float]] = deque(maxlen=10)
    pauses: deque[tuple[float, float]] = deque(maxlen=10)
    watcher = asyncio.create_task(_watch_own_loop(stalls, pauses, 0.030))
    await asyncio.sleep(0.2)
    resumed_at = time.monotonic()
    jump_s = 35.0
    await asyncio.sleep(0.2)
    await cancel_and_wait(watcher)
    (pause,) = pauses
    assert resumed_at <= pause[0] <= resumed_at + 0.1
    assert pause[1] == pytest.approx(35.0, abs=0.01)
    assert list(stalls) == []


def sample(t_s: float, late_ticks: float) -> ServerSample:
    return ServerSample(t_s, [], 0, 0, late_ticks, 0, 2, 0, 0, 0, 0, 0, Playout())


def test_a_stall_beside_a_late_tick_of_the_server_excuses_nothing() -> None:
    samples = [sample(0.0, 0), sample(5.0, 0), sample(10.0, 1), sample(15.0, 1)]
    own = [(2.0, 2.2), (7.0, 7.3), (9.9, 10.1), (12.0, 12.1)]
    # The server was late somewhere in (5, 10]: the stalls touching it are the machine's.
    assert excusing_stalls(own, samples) == [(2.0, 2.2), (12.0, 12.1)]
    assert excusing_stalls(own, samples[:1]) == own
