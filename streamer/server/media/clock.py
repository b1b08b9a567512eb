"""One clock for the whole process, injectable so tests never wait on the wall clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and sleeping until a deadline on that same time line."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline_s: float) -> None: ...


class MonotonicClock:
    """``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline_s: float) -> None:
        delay_s = deadline_s - time.monotonic()
        await asyncio.sleep(max(0.0, delay_s))


class ManualClock:
    """A clock that only moves when told to; sleepers wake when it passes their deadline.

    For tests of the scheduler and pipeline: ``await clock.advance(0.04)`` runs one tick.
    """

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s
        self._changed = asyncio.Condition()

    def now(self) -> float:
        return self._now_s

    async def sleep_until(self, deadline_s: float) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._now_s >= deadline_s)

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every task that was due run until it blocks again."""
        await self.advance_to(self._now_s + seconds)

    async def advance_to(self, when_s: float) -> None:
        """Set the time to ``when_s`` (never backwards) and let due tasks run."""
        async with self._changed:
            self._now_s = max(self._now_s, when_s)
            self._changed.notify_all()
        for _ in range(20):
            await asyncio.sleep(0)
