"""The idle reapers of calls and channels, on the manual clock: a silent call and an unwatched
channel go after their timeouts (to within one check period), busy ones never.

The hub is a stand-in at its seam (the clock, the metrics, the scheduler's ``remove``), and so
are the calls and channels (what the reapers read of them); the real ones are reaped in
test_e2e_limits and test_channels_idle (realtime).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streamer.server.calls.registry import CallLimits, CallRegistry
from streamer.server.channels.registry import ChannelRegistry
from streamer.server.config import ChannelConfig
from streamer.server.media.clock import ManualClock
from streamer.server.media.metrics import Metrics
from streamer.server.media.peer import PeerSettings


def fake_hub(clock: ManualClock) -> Any:
    return SimpleNamespace(
        clock=clock, metrics=Metrics(), scheduler=SimpleNamespace(remove=lambda _sink_id: None)
    )


class FakeCall:
    def __init__(self, registry: CallRegistry, session_id: str, now_s: float) -> None:
        self.registry = registry
        self.session_id = session_id
        self.last_input_at_s = now_s
        self.closed_at_s: float | None = None

    async def aclose(self) -> None:
        self.closed_at_s = self.registry.hub.clock.now()
        self.registry.sessions.pop(self.session_id, None)


async def step(clock: ManualClock, seconds: float) -> None:
    await clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_silent_call_is_closed_after_the_idle_timeout_on_the_one_clock() -> None:
    clock = ManualClock(start_s=0.0)
    calls = CallRegistry(fake_hub(clock), CallLimits(idle_timeout_s=60.0), PeerSettings())
    silent, talking = FakeCall(calls, "silent", 0.0), FakeCall(calls, "talking", 0.0)
    calls.sessions.update({"silent": silent, "talking": talking})  # type: ignore[dict-item]
    calls.start()
    await asyncio.sleep(0)
    while clock.now() < 120.0:
        await step(clock, 1.0)
        talking.last_input_at_s = clock.now()  # its packets keep coming
    # Checked every min(5 s, timeout / 4): closed at the first check at or after 60 s.
    assert silent.closed_at_s == 60.0
    assert talking.closed_at_s is None
    assert calls.hub.metrics.idle_closed._value.get() == 1
    await calls.aclose()


class FakeChannel:
    def __init__(self, name: str, idle: bool) -> None:
        self.name = name
        self.sink_id = f"channel:{name}"
        self.is_idle = idle
        self.viewers: dict[str, Any] = {}
        self.driver = None

    async def aclose(self) -> None:
        pass


async def test_an_unwatched_channel_is_deleted_after_the_idle_timeout_on_the_one_clock() -> None:
    clock = ManualClock(start_s=0.0)
    registry = ChannelRegistry(
        ChannelConfig(idle_timeout_s=10.0), fake_hub(clock), PeerSettings(), "default"
    )
    idle, watched = FakeChannel("idle", idle=True), FakeChannel("watched", idle=False)
    registry.channels.update({"idle": idle, "watched": watched})  # type: ignore[dict-item]
    registry.start()
    await asyncio.sleep(0)
    gone_at_s = None
    while clock.now() < 60.0:
        await step(clock, 0.5)
        if gone_at_s is None and "idle" not in registry.channels:
            gone_at_s = clock.now()
    # Idle from the first check (2.5 s: timeout / 4), deleted at the first check 10 s later.
    assert gone_at_s == 12.5
    assert list(registry.channels) == ["watched"]
    await registry.aclose()
