"""asyncio helpers shared by the server and the clients: owned tasks, bounded queues."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end; re-raise if *we* are cancelled meanwhile.

    Compares our own pending cancellation requests before and after the wait, so it also
    works in cleanup code that runs in a task already being cancelled (aiohttp runs its
    cleanup that way after Ctrl-C): there, a cancellation that is not new is not ours to obey.
    """
    if task is None or task.done():
        return
    current = asyncio.current_task()
    ours_before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > ours_before:
            raise


class DropOldestQueue(asyncio.Queue[T]):
    """A bounded queue whose producer never waits: when it is full, :meth:`put_dropping`
    drops the oldest item to make room and returns it (callers count or log it)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a drop-oldest queue needs room for at least one item")
        super().__init__(maxsize)

    def put_dropping(self, item: T) -> list[T]:
        """Queue ``item`` at once; returns what was dropped for it (the oldest item, or none)."""
        dropped = [self.get_nowait()] if self.full() else []
        self.put_nowait(item)
        return dropped
