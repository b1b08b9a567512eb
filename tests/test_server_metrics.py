"""The process gauges a soak watches: RSS, open fds, threads, asyncio tasks; and the garbage
collector's pauses, which stop the event loop and the inference thread alike."""

from __future__ import annotations

import asyncio
import gc

from streamer.probe import promtext
from streamer.server.media.metrics import Metrics


async def test_each_scrape_samples_the_process() -> None:
    metrics = Metrics()
    extra = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    first = promtext.parse(metrics.render().decode())
    for task in extra:
        task.cancel()
    await asyncio.gather(*extra, return_exceptions=True)
    second = promtext.parse(metrics.render().decode())
    assert promtext.value(first, "avatar_process_resident_memory_bytes") > 10e6
    assert promtext.value(first, "avatar_process_open_fds") >= 3
    assert promtext.value(first, "avatar_process_threads") >= 1
    tasks_then = promtext.value(first, "avatar_asyncio_tasks")
    assert tasks_then >= 4  # this test's task and the three sleepers
    assert promtext.value(second, "avatar_asyncio_tasks") == tasks_then - 3


def test_gc_pauses_are_timed_while_watched_and_only_then() -> None:
    metrics = Metrics()

    def collections() -> float:
        m = promtext.parse(metrics.render().decode())
        return promtext.value(m, "avatar_gc_pause_seconds_count", generation="2")

    gc.collect()
    assert collections() == 0  # not watched yet
    metrics.watch_gc()
    metrics.watch_gc()  # once is enough: no double counting
    try:
        garbage = [[[k] for k in range(1000)] for _ in range(50)]
        del garbage
        gc.collect()
        gc.collect()
        assert collections() == 2
        m = promtext.parse(metrics.render().decode())
        assert promtext.value(m, "avatar_gc_pause_seconds_sum", generation="2") > 0
    finally:
        metrics.unwatch_gc()
    gc.collect()
    assert collections() == 2
    metrics.unwatch_gc()  # idempotent
