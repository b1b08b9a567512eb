"""The scheduler on a manual clock with a fake renderer (the model seam): no wall-clock sleeps."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from streamer.playout.pipeline import FrameJob, JobKind, SessionPipeline
from streamer.server.media.clock import ManualClock
from streamer.server.media.metrics import Metrics
from streamer.server.media.renderer import RenderRequest
from streamer.server.media.scheduler import FrameScheduler, LateTickLog

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
        self.sent = asyncio.Event()  # what drain() waits for: set it to "send" the frames
        self.sent.set()

    def deliver(self, job: FrameJob, image: np.ndarray, now_s: float) -> None:
        self.last_image = image
        self.delivered.append((job, image, now_s))

    async def drain(self) -> None:
        await self.sent.wait()


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


def _speak(pipeline: SessionPipeline, seconds: float, now_s: float) -> None:
    """Loud 16 kHz noise (speech to the pipeline's threshold)."""
    rng = np.random.default_rng(0)
    pipeline.push_pcm_16k(
        (0.5 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32), now_s
    )


async def test_finish_sends_each_sink_a_last_frame_at_rest_and_stops(executor) -> None:
    clock = ManualClock(T0_S)
    renderer = FakeRenderer()
    scheduler = FrameScheduler(clock, renderer, Metrics(), executor)
    sinks = [FakeSink("a"), FakeSink("b")]
    for s in sinks:
        scheduler.add(s)
    scheduler.start()
    for tick in range(8):
        for s in sinks:  # 40 ms of speech per tick, as a live peer sends it
            _speak(s.pipeline, 0.04, T0_S + tick * PERIOD_S)
        await to_tick(clock, tick)
    assert all(s.delivered[-1][0].kind is JobKind.RENDER for s in sinks)  # mid-speech
    stop_s = clock.now()
    finishing = asyncio.create_task(scheduler.finish(timeout_s=1.0, frames=3))
    await clock.advance(0)
    assert all(len(s.delivered) == 9 for s in sinks)  # the first rest frame, at once
    await clock.advance_to(stop_s + PERIOD_S)  # as the scheduler computes its deadlines
    await clock.advance_to(stop_s + 2 * PERIOD_S)
    await asyncio.wait_for(finishing, 1.0)
    for s in sinks:
        # The rest frame, sent as the next three frames (pts without a gap), with silence.
        assert [job.output_index for job, _, _ in s.delivered[-4:]] == [7, 8, 9, 10]
        times = [t for _, _, t in s.delivered[-3:]]
        assert np.diff(times) == pytest.approx([PERIOD_S, PERIOD_S])  # paced like ticks
        for job, image, _ in s.delivered[-3:]:
            assert job.kind is JobKind.IDLE
            assert job.strength == 0.0
            assert not np.any(job.audio_16k)
            assert int(image[0, 0, 0]) == 8  # rendered once, for output index 8
    # No tick after finish, however long the clock runs.
    await to_tick(clock, 20)
    assert all(len(s.delivered) == 11 for s in sinks)


async def test_finish_waits_for_the_last_frame_to_be_sent_but_not_forever(executor) -> None:
    clock = ManualClock(T0_S)
    scheduler = FrameScheduler(clock, FakeRenderer(), Metrics(), executor)
    prompt, stuck = FakeSink("prompt"), FakeSink("stuck")
    prompt.sent.clear()
    stuck.sent.clear()  # never sends: a peer that stopped reading
    scheduler.add(prompt)
    scheduler.add(stuck)
    scheduler.start()
    await to_tick(clock, 0)
    stop_s = clock.now()
    finishing = asyncio.create_task(scheduler.finish(timeout_s=0.2, frames=3))
    await clock.advance(0)
    await clock.advance_to(stop_s + PERIOD_S)
    await clock.advance_to(stop_s + 2 * PERIOD_S)  # all three frames delivered
    assert len(prompt.delivered) == 4
    await asyncio.sleep(0.05)
    assert not finishing.done()  # waiting for the frames to go out
    prompt.sent.set()
    await asyncio.sleep(0.05)
    assert not finishing.done()  # still waiting for the stuck one
    await asyncio.wait_for(finishing, 1.0)  # then gives up on it, within its bound


async def test_finish_without_sinks_or_start_is_a_no_op(executor) -> None:
    scheduler = FrameScheduler(ManualClock(T0_S), FakeRenderer(), Metrics(), executor)
    await scheduler.finish(timeout_s=0.1)
    await scheduler.aclose()


def test_late_ticks_are_logged_once_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    late = LateTickLog(period_s=10.0)
    with caplog.at_level("WARNING", logger="streamer.server.media.scheduler"):
        for k in range(30):  # a model three times too slow: every tick late for 9 s
            late.note(100.0 + 0.3 * k, 0.3, 7)
        assert [r.getMessage() for r in caplog.records] == [
            "scheduler 300 ms late: skipped 7 ticks"
        ]
        late.note(110.5, 0.5, 12)  # the next period: the last one's summary, then its first
        late.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "scheduler 300 ms late: skipped 7 ticks",
        "scheduler: 29 more late ticks in 10 s, 203 ticks skipped, worst 300 ms late",
        "scheduler 500 ms late: skipped 12 ticks",
    ]
