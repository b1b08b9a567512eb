"""How late live audio arrives, and how much playout delay absorbs it: pure, time passed in.

In the spirit of WebRTC's NetEq (``delay_manager``, ``packet_arrival_history``; see
``docs/architecture.md``). Each observation is one unit of audio becoming usable: its arrival
time on the server's one clock and the media time it completes, on the sender's own sample
clock. Their difference is the unit's *offset*; the smallest offset over the last
``base_window_s`` is the *base* (the fastest recent path, which follows a drifting sender
clock); a unit's *relative delay* is its offset minus the base: how much later than the
fastest recent audio it came.

The *target* playout delay is a high quantile of recent lateness. Every ``interval_s`` the
interval's largest relative delay (its *peak*) enters a histogram of ``bucket_s`` buckets
whose older mass fades by ``forget_factor`` per interval (about 30 s of memory at the
defaults; at the start every interval weighs the same until that is reached), and the target
is the top of the bucket holding the ``quantile``, clamped to ``[min_delay_s, max_delay_s]``.
One late interval moves nothing (it weighs 1.7 %), but a unit later than the current target,
which would have made its frame wait, raises the target to cover it on the spot and holds it
there for ``late_hold_s`` after the last such unit; then the histogram decides again (where
three late intervals in ~30 s keep it up on their own).

A unit read while the server itself was held up (``stalled``: its event loop stalled, so the
packet waited in the socket, not on the network) tells nothing about the network: it moves the
base like any other but is no evidence of lateness (no peak, no late floor, no target change).
Otherwise one 100 ms stall of the server's own would raise the target to cover it for ~30 s.

Synchronous; one owner.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JitterConfig:
    """Playout delay bounds and the statistics behind the target (seconds)."""

    min_delay_s: float = 0.01
    # Audio later than this is dropped (counted) rather than waited for: it bounds latency.
    max_delay_s: float = 0.4
    # The target before the first interval closes (NetEq starts at 80 ms too).
    start_delay_s: float = 0.08
    quantile: float = 0.95
    bucket_s: float = 0.01
    interval_s: float = 0.5
    forget_factor: float = 0.983
    base_window_s: float = 2.0
    late_hold_s: float = 5.0
    # Recent interval peaks kept for reports (/metrics, the call page): 10 s at the defaults.
    peaks_kept: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_s <= self.start_delay_s <= self.max_delay_s:
            raise ValueError("need 0 <= min_delay_s <= start_delay_s <= max_delay_s")
        if not 0 < self.quantile < 1 or not 0 < self.forget_factor < 1:
            raise ValueError("quantile and forget_factor must lie in (0, 1)")
        if self.bucket_s <= 0 or self.interval_s <= 0 or self.base_window_s <= 0:
            raise ValueError("bucket_s, interval_s and base_window_s must be positive")


@dataclass(frozen=True)
class JitterSnapshot:
    """What the estimator knows now, for reports."""

    target_s: float
    quantile: float
    recent_peaks_s: tuple[float, ...]  # the last intervals' peak relative delays, oldest first
    observations: int
    late_units: int  # units that came later than the target of their time
    stalled_units: int  # units read while the server was held up: not counted as lateness


class DelayEstimator:
    """Relative delays of arriving audio and the playout delay target they call for."""

    def __init__(self, config: JitterConfig | None = None) -> None:
        self.config = config or JitterConfig()
        cfg = self.config
        self._n_buckets = math.ceil(cfg.max_delay_s / cfg.bucket_s) + 1
        # (arrival_s, offset_s), offsets increasing from the front: the front is the window's
        # minimum. Bounded by the window's length in time; the maxlen is a backstop for
        # pathological input (thousands of units per second).
        self._base: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)
        self._peaks: collections.deque[float] = collections.deque(maxlen=cfg.peaks_kept)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the sender's media clock restarted, or the source changed."""
        self._base.clear()
        self._peaks.clear()
        self._hist: F64 = np.zeros(self._n_buckets)
        self._updates = 0
        self._interval_start_s: float | None = None
        self._interval_peak_s: float | None = None
        self._hist_target_s = self.config.start_delay_s
        # A late unit's delay, held as a floor of the target until the time after it.
        self._late_floor_s = 0.0
        self._late_until_s = -math.inf
        self._target_s = self.config.start_delay_s
        self.observations = 0
        self.late_units = 0
        self.stalled_units = 0

    @property
    def base_s(self) -> float | None:
        """The smallest offset (arrival minus media time) in the window; None before any."""
        return self._base[0][1] if self._base else None

    @property
    def target_s(self) -> float:
        return self._target_s

    def observe(self, arrival_s: float, media_s: float, stalled: bool = False) -> float:
        """Record a unit of audio completing media time ``media_s`` that arrived at
        ``arrival_s``; returns its relative delay (>= 0). ``stalled``: it was read while the
        server was held up, so its lateness is not the network's (see above)."""
        cfg = self.config
        offset_s = arrival_s - media_s
        while self._base and self._base[-1][1] >= offset_s:
            self._base.pop()
        self._base.append((arrival_s, offset_s))
        while self._base[0][0] < arrival_s - cfg.base_window_s:
            self._base.popleft()
        relative_s = offset_s - self._base[0][1]
        self.observations += 1
        if stalled:
            self.stalled_units += 1
            self._update_target(arrival_s)
            return relative_s

        if self._interval_start_s is None:
            self._interval_start_s = arrival_s
        elif arrival_s >= self._interval_start_s + cfg.interval_s:
            if self._interval_peak_s is not None:
                self._close_interval(self._interval_peak_s)
            self._interval_start_s = arrival_s
            self._interval_peak_s = None
        self._interval_peak_s = max(self._interval_peak_s or 0.0, relative_s)

        if relative_s > self._target_s:
            self.late_units += 1
            held = arrival_s < self._late_until_s
            self._late_floor_s = max(relative_s, self._late_floor_s if held else 0.0)
            self._late_until_s = arrival_s + cfg.late_hold_s
        self._update_target(arrival_s)
        return relative_s

    def snapshot(self) -> JitterSnapshot:
        return JitterSnapshot(
            target_s=self._target_s,
            quantile=self.config.quantile,
            recent_peaks_s=tuple(self._peaks),
            observations=self.observations,
            late_units=self.late_units,
            stalled_units=self.stalled_units,
        )

    def _close_interval(self, peak_s: float) -> None:
        self._peaks.append(peak_s)
        # The first intervals weigh the same (1/1, 1/2, 1/3, ...) until the forget factor
        # takes over: the target is meaningful after one interval, not after thirty seconds.
        weight = max(1.0 - self.config.forget_factor, 1.0 / (self._updates + 1))
        self._updates += 1
        self._add(peak_s, weight)

    def _add(self, delay_s: float, weight: float) -> None:
        cfg = self.config
        self._hist *= 1.0 - weight
        self._hist[self._bucket(delay_s)] += weight
        cumulative = np.cumsum(self._hist)
        k = int(np.searchsorted(cumulative, cfg.quantile * cumulative[-1]))
        self._hist_target_s = (k + 1) * cfg.bucket_s

    def _bucket(self, delay_s: float) -> int:
        return min(self._n_buckets - 1, int(delay_s / self.config.bucket_s))

    def _update_target(self, now_s: float) -> None:
        cfg = self.config
        target_s = self._hist_target_s
        if now_s < self._late_until_s:
            target_s = max(target_s, (self._bucket(self._late_floor_s) + 1) * cfg.bucket_s)
        self._target_s = min(cfg.max_delay_s, max(cfg.min_delay_s, target_s))


class LoopStalls:
    """When the server itself was held up (a garbage collection, a blocking call, the
    hypervisor taking the CPU), as its scheduler saw it: a tick that fired ``threshold_s`` or
    more after its deadline means nothing ran on the event loop until then.

    Audio the sender sent before a stall ended waited in the server's socket for (part of) it,
    not only on the network: :meth:`explains` tells the playout buffer so, by the unit's media
    time (when it would have come by the fastest recent path), not by when the server got
    round to reading it, which may be well after the stall while the backlog is worked off.

    A stall is noted when its tick fires, but after one the loop may read the socket before
    it runs the tick (asyncio runs I/O callbacks before due timers). So the scheduler also
    says when its next tick is due (:meth:`expect`): while that tick is overdue by
    ``threshold_s`` or more, the loop is in a stall that has not been noted yet, and
    :meth:`explains` counts it too.
    Bounded: the last ``keep`` stalls. Pure; one writer (the scheduler), read by every sink.
    """

    def __init__(self, threshold_s: float = 0.02, margin_s: float = 0.02, keep: int = 8) -> None:
        self.threshold_s = threshold_s
        self.margin_s = margin_s
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.count = 0
        self._due_s: float | None = None  # when the next tick is due; None: not ticking

    def expect(self, due_s: float | None) -> None:
        """The scheduler's next tick is due at ``due_s`` (None: it stopped ticking)."""
        self._due_s = due_s

    def note(self, deadline_s: float, fired_s: float) -> None:
        """A tick due at ``deadline_s`` fired at ``fired_s``."""
        if fired_s - deadline_s >= self.threshold_s:
            self._stalls.append((deadline_s, fired_s))
            self.count += 1

    def ended_after(self, after_s: float) -> list[tuple[float, float]]:
        """The kept stalls, as (start, end), that ended after ``after_s``, oldest first."""
        return [(start_s, end_s) for start_s, end_s in self._stalls if end_s > after_s]

    def explains(self, expected_s: float, arrival_s: float) -> bool:
        """Whether a unit that would have come at ``expected_s`` and came at ``arrival_s``
        (later) waited through a recorded stall: one that ended after it was due (within the
        margin) and began before it came; or the stall going on as it came (the next tick
        overdue by the threshold)."""
        due_s = self._due_s
        if due_s is not None and arrival_s - due_s >= self.threshold_s:
            return True
        return any(
            expected_s <= end_s + self.margin_s and arrival_s >= start_s
            for start_s, end_s in self._stalls
        )
