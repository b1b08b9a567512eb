"""The one inference executor: a single worker thread that runs live work before background work.

Every model call of the process goes through it, so the model runs one batch at a time. Live
ticks (``submit``, what ``loop.run_in_executor`` uses) always run before queued background
work (``submit_background``: offline renders, in small chunks), so a render delays a tick by
at most the one chunk already running. Within one priority, calls run in submission order.

While live calls keep coming (one per 25 Hz tick), background work gets a budget of
``background_budget_s`` of worker time after each live call and then waits for the next one:
it fills the gap right after a tick and is done before the next, and it leaves the CPU (two
cores here, shared with the video encoders) mostly to the live path. With no live call for
``live_idle_s``, background work runs at full speed.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

LIVE = 0
BACKGROUND = 10


class _Call:
    """One queued call and its future."""

    def __init__(self, future: concurrent.futures.Future[Any], fn: Callable[[], Any]) -> None:
        self.future = future
        self.fn = fn

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn()
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    def cancel(self) -> None:
        self.future.cancel()


_Item = tuple[int, int, "_Call | None"]


class PriorityExecutor(concurrent.futures.Executor):
    """One worker thread, a priority queue in front of it. ``shutdown`` is idempotent.

    The queue is unbounded by design but bounded in practice by its callers: the scheduler has
    at most one tick in flight and each render job at most one chunk (see ``offline.py``).
    """

    def __init__(
        self,
        thread_name: str = "inference",
        background_budget_s: float = 0.006,
        live_idle_s: float = 0.2,
    ) -> None:
        self.background_budget_s = background_budget_s
        self.live_idle_s = live_idle_s
        self._live_end_s = -1e9  # when the last live call ended (monotonic)
        self._background_s = 0.0  # background worker time since then
        self._live_queued = threading.Event()
        self._queue: queue.PriorityQueue[_Item] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=thread_name, daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` at live priority."""
        return self.submit_with_priority(LIVE, fn, *args, **kwargs)

    def submit_background(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` behind every live call (now and later queued)."""
        return self.submit_with_priority(BACKGROUND, fn, *args, **kwargs)

    def submit_with_priority(
        self, priority: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        call = _Call(future, lambda: fn(*args, **kwargs))
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.put((priority, next(self._order), call))
        if priority <= LIVE:
            self._live_queued.set()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            priority, _, run = item
            if run is None:
                return
            if priority > LIVE:
                wait_s = self._background_wait_s()
                if wait_s > 0:
                    # Back in the queue; wake when a live call arrives or live traffic stops.
                    self._queue.put(item)
                    self._live_queued.wait(wait_s)
                    self._live_queued.clear()
                    continue
            started = time.monotonic()
            run()
            ended = time.monotonic()
            if priority <= LIVE:
                self._live_end_s, self._background_s = ended, 0.0
            else:
                self._background_s += ended - started

    def _background_wait_s(self) -> float:
        """0 when background work may run now, else how long to wait at most."""
        since_live_s = time.monotonic() - self._live_end_s
        if since_live_s >= self.live_idle_s or self._background_s < self.background_budget_s:
            return 0.0
        return self.live_idle_s - since_live_s

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._cancel_queued()
                # Sorts after everything queued: the worker ends once the queue is done.
                self._queue.put((1 << 30, next(self._order), None))
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _cancel_queued(self) -> None:
        while True:
            try:
                _, _, run = self._queue.get_nowait()
            except queue.Empty:
                return
            if run is not None:
                run.cancel()
