"""cancel_and_wait: obeys a cancellation of its caller that arrives while it waits, and lets
cleanup code that already runs under a cancellation (aiohttp's after Ctrl-C) finish.
DropOldestQueue: a producer that never waits, and says what it dropped."""

from __future__ import annotations

import asyncio

import pytest

from streamer.tasks import DropOldestQueue, cancel_and_wait


async def test_cleanup_inside_a_cancelled_task_still_waits_for_each_task() -> None:
    ended: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append(name)

    async def main() -> None:
        workers = [asyncio.create_task(worker(n)) for n in ("a", "b")]
        try:
            await asyncio.sleep(3600)
        finally:  # runs with the cancellation pending, as aiohttp's cleanup does
            for task in workers:
                await cancel_and_wait(task)

    task = asyncio.create_task(main())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["a", "b"]  # the first wait did not abort the second


async def test_a_new_cancellation_of_the_caller_is_re_raised() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # takes its time to end
            raise

    async def closer(target: asyncio.Task[None]) -> str:
        await cancel_and_wait(target)
        return "finished"

    target = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    caller = asyncio.create_task(closer(target))
    await asyncio.sleep(0)
    caller.cancel()  # the caller is cancelled while it waits
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert target.cancelled()


async def test_a_full_drop_oldest_queue_drops_the_oldest_and_says_so() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    assert queue.put_dropping(1) == []
    assert queue.put_dropping(2) == []
    assert queue.put_dropping(3) == [1]
    assert queue.put_dropping(4) == [2]
    assert [await queue.get(), await queue.get()] == [3, 4]
    assert queue.empty()


async def test_a_drop_oldest_queue_wakes_a_waiting_consumer() -> None:
    queue: DropOldestQueue[str] = DropOldestQueue(1)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert queue.put_dropping("a") == []
    assert await asyncio.wait_for(waiting, 1.0) == "a"


def test_a_drop_oldest_queue_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        DropOldestQueue(0)
