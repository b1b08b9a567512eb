"""The process gauges a soak watches: RSS, open fds, threads, asyncio tasks."""

from __future__ import annotations

import asyncio

from streamer.bench import promtext
from streamer.server.metrics import Metrics


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
