"""Failed token attempts per client address: after too many, a lock-out (pure, synchronous).

A client that keeps presenting a wrong token (or none, where one is needed) is guessing. After
``max_failures`` failures within ``window_s`` its address is locked out for ``lockout_s``: the
access middleware then answers 429 without checking any token it sends, so a locked-out
guesser learns nothing, not even from a right guess. Successes are never counted or slowed.

Memory is bounded: at most ``max_addresses`` addresses are tracked (each with at most
``max_failures`` timestamps); beyond that the address whose last failure is the oldest is
forgotten (a lock-out included: many addresses buy a guesser little against a 16+ character
token, and the bound keeps a flood of addresses from exhausting memory).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from streamer.errors import StreamerError


class Now(Protocol):
    """Monotonic seconds (the server's :class:`~streamer.server.media.clock.Clock` is one)."""

    def now(self) -> float: ...


@dataclass(frozen=True)
class FailureLimit:
    """How many failed token attempts an address may make, and what follows."""

    max_failures: int = 20  # failures within the window that lock an address out
    window_s: float = 60.0
    lockout_s: float = 60.0  # refused (429) this long, whatever it sends
    max_addresses: int = 10_000  # tracked at once; the oldest is forgotten beyond

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_addresses < 1:
            raise StreamerError("The failed-attempt limit and the address cap must be >= 1.")
        if self.window_s <= 0 or self.lockout_s <= 0:
            raise StreamerError("The failed-attempt window and lock-out must be > 0 seconds.")


@dataclass
class _Address:
    failures_s: deque[float]  # times of the failures within the window, oldest first
    locked_until_s: float = field(default=0.0)


class AuthFailureLimiter:
    """Counts failed token attempts per address and locks guessers out.

    Synchronous and not thread-safe: call it from the event loop only. Times come from
    ``clock.now()`` (seconds, monotonic).
    """

    def __init__(self, limit: FailureLimit, clock: Now) -> None:
        self.limit = limit
        self._clock = clock
        # Least recently failed first: the eviction order.
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    def __len__(self) -> int:
        """Addresses tracked now (at most ``limit.max_addresses``)."""
        return len(self._addresses)

    def locked_for_s(self, address: str) -> float:
        """Seconds ``address`` stays locked out; 0.0 when it may try."""
        entry = self._addresses.get(address)
        if entry is None:
            return 0.0
        left_s = entry.locked_until_s - self._clock.now()
        return left_s if left_s > 0 else 0.0

    def record_failure(self, address: str) -> bool:
        """Count one failed attempt; True when it locks ``address`` out (just now)."""
        now_s = self._clock.now()
        limit = self.limit
        entry = self._addresses.get(address)
        if entry is None:
            entry = _Address(deque(maxlen=limit.max_failures))
            self._addresses[address] = entry
            while len(self._addresses) > limit.max_addresses:
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(address)
        if entry.locked_until_s > now_s:
            return False  # already locked out (callers refuse before counting)
        failures = entry.failures_s
        while failures and failures[0] <= now_s - limit.window_s:
            failures.popleft()
        failures.append(now_s)
        if len(failures) < limit.max_failures:
            return False
        failures.clear()  # the lock-out starts a fresh window when it ends
        entry.locked_until_s = now_s + limit.lockout_s
        return True
