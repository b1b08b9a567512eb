"""Helpers for owned tasks."""

from __future__ import annotations

import asyncio
from typing import Any


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
