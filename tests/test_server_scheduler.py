"""The scheduler on a manual clock with a fake renderer (the model seam): no wall-clock sleeps."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from streamer.server.clock import ManualClock
from streamer.server.metrics import Metrics
from streamer.server.pipeline import FrameJob, SessionPipeline
from streamer.server.render import RenderRequest
from streamer.server.scheduler import FrameScheduler

PERIOD_S = 0.04


class FakeRenderer:
    """Images that encode which job they came from: pixel value = output index mod 256."""

    def __init__(self) -> None:
        self.calls: list[list[RenderRequest]] = []

    def frame_count(self, avatar: str) -> int:
        return 4

    def render(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        self.calls.append(list(requests))
        return [np.full((8, 8, 3), r.job.output_index % 256, np.uint8) for r in requests]


class FakeSink:
    def __init__(self, name: str) -> None:
        self.sink_id = name
        self.avatar = "default"
        self.pipeline = SessionPipeline(avatar_frame_count=4)
        self.last_image: np.ndarray | None = None
        self.delivered: list[tuple[FrameJob, np.ndarray, float]] = []

    def deliver(self, job: FrameJob, image: np.ndarray, now_s: float) -> None:
        self.last_image = image
        self.delivered.append((job, image, now_s))


class InlineExecutor(concurrent.futures.Executor):
    """Runs each call at submit time, so the test decides when work happens."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


@pytest.fixture
def executor() -> Iterator[concurrent.futures.Executor]:
    pool = InlineExecutor()
    yield pool
    pool.shutdown()


T0_S = 1000.0


async def to_tick(clock: ManualClock, tick: float) -> None:
    """Set the clock to ``t0 + tick * period``, computed as the scheduler computes deadlines."""
    await clock.advance_to(T0_S + tick * PERIOD_S)
    await clock.advance(0)  # let the finished render's result reach the scheduler


async def test_one_batched_render_per_tick_for_all_sinks(executor) -> None:
    clock = ManualClock(T0_S)
    renderer = FakeRenderer()
    scheduler = FrameScheduler(clock, renderer, Metrics(), executor)
    sinks = [FakeSink(f"s{k}") for k in range(3)]
    for s in sinks:
        scheduler.add(s)
    scheduler.start()
    for tick in range(5):
        await to_tick(clock, tick)
    await scheduler.aclose()
    assert len(renderer.calls) == 5
    assert all(len(call) == 3 for call in renderer.calls)
    for s in sinks:
        assert [job.output_index for job, _, _ in s.delivered] == [0, 1, 2, 3, 4]
        assert [int(img[0, 0, 0]) for _, img, _ in s.delivered] == [0, 1, 2, 3, 4]


async def test_new_sinks_join_the_grid_and_leavers_stop(executor) -> None:
    clock = ManualClock(T0_S)
    scheduler = FrameScheduler(clock, FakeRenderer(), Metrics(), executor)
    a, b = FakeSink("a"), FakeSink("b")
    scheduler.add(a)
    scheduler.start()
    await to_tick(clock, 0)
    await to_tick(clock, 1)
    scheduler.add(b)
    await to_tick(clock, 2)
    scheduler.remove("a")
    await to_tick(clock, 3)
    await scheduler.aclose()
    assert len(a.delivered) == 3
    assert len(b.delivered) == 2
    t_b = [t for _, _, t in b.delivered]
    t_a = [t for _, _, t in a.delivered]
    assert t_b[0] == pytest.approx(t_a[2])  # b's first frame came on a's grid


async def test_late_ticks_are_skipped_not_burst(executor) -> None:
    clock = ManualClock(T0_S)
    metrics = Metrics()
    renderer = FakeRenderer()
    scheduler = FrameScheduler(clock, renderer, metrics, executor)
    sink = FakeSink("s")
    scheduler.add(sink)
    scheduler.start()
    await to_tick(clock, 0)
    await to_tick(clock, 5.5)  # the loop was blocked for 5.5 periods
    await to_tick(clock, 6)
    await scheduler.aclose()
    # One frame after the stall (not 5), then back on the grid.
    assert len(sink.delivered) == 3
    assert metrics.late_ticks._value.get() == 4
    times = [t for _, _, t in sink.delivered]
    assert times[2] - scheduler.t0_s == pytest.approx(6 * PERIOD_S)
    assert [job.output_index for job, _, _ in sink.delivered] == [0, 1, 2]


async def test_aclose_is_idempotent_and_ends_the_task(executor) -> None:
    clock = ManualClock(T0_S)
    scheduler = FrameScheduler(clock, FakeRenderer(), Metrics(), executor)
    scheduler.start()
    await scheduler.aclose()
    await scheduler.aclose()
