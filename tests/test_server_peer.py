"""The one peer lifecycle (calls and channel viewers): watchdogs and reapers on the one clock.

The peer connection is a fake at its seam (state changes and close); the clock is a manual
one, so nothing here waits on the wall clock. Real peers go through the same code in the e2e
tests (test_e2e_lifecycle, test_e2e_channels_api).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from streamer.server.media.clock import ManualClock
from streamer.server.media.encoder import VideoEncoderSettings
from streamer.server.media.peer import PeerWatch, ServerPeer, run_every
from streamer.server.media.tracks import EncodingAudioTrack, EncodingVideoTrack


class FakePeerConnection:
    """What ServerPeer and PeerWatch use of an RTCPeerConnection."""

    def __init__(self) -> None:
        self.connectionState = "new"
        self.closed = False
        self._handlers: dict[str, Callable[[], Awaitable[None]]] = {}

    def on(self, event: str) -> Callable[[Any], Any]:
        def register(handler: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            self._handlers[event] = handler
            return handler

        return register

    async def become(self, state: str) -> None:
        self.connectionState = state
        await self._handlers["connectionstatechange"]()

    async def close(self) -> None:
        self.closed = True
        self.connectionState = "closed"


class Peer(ServerPeer):
    def __init__(self, peer_id: str, pc: FakePeerConnection, closed: list[str]) -> None:
        super().__init__(
            peer_id,
            pc,  # type: ignore[arg-type]
            f"peer {peer_id}",
            EncodingVideoTrack(VideoEncoderSettings(), ManualClock()),
            EncodingAudioTrack(),
        )
        self._closed_log = closed

    async def on_closed(self) -> None:
        self._closed_log.append(self.peer_id)


async def settle(clock: ManualClock, seconds: float) -> None:
    await clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_peer_not_connected_in_time_is_closed_on_the_one_clock() -> None:
    clock = ManualClock()
    watch = PeerWatch(clock, connect_timeout_s=15.0)
    closed: list[str] = []
    pc = FakePeerConnection()
    peer = Peer("a", pc, closed)
    watch.watch(peer)
    await asyncio.sleep(0)  # the watchdog reads the clock
    await pc.become("connecting")
    await settle(clock, 14.9)
    assert closed == []
    assert not pc.closed
    await settle(clock, 0.2)
    assert closed == ["a"]
    assert pc.closed
    await watch.aclose()


async def test_a_connected_peer_keeps_its_slot_and_its_watchdog_ends() -> None:
    clock = ManualClock()
    watch = PeerWatch(clock, connect_timeout_s=15.0)
    closed: list[str] = []
    pc = FakePeerConnection()
    watch.watch(Peer("b", pc, closed))
    await asyncio.sleep(0)
    await pc.become("connected")
    for _ in range(3):
        await asyncio.sleep(0)
    assert not watch._tasks  # no sleeping task per connected peer
    await settle(clock, 60.0)
    assert closed == []
    assert not pc.closed
    await watch.aclose()


async def test_a_failed_connection_closes_the_peer_at_once_and_only_once() -> None:
    clock = ManualClock()
    watch = PeerWatch(clock, connect_timeout_s=15.0)
    closed: list[str] = []
    pc = FakePeerConnection()
    peer = Peer("c", pc, closed)
    watch.watch(peer)
    await pc.become("failed")
    await peer.aclose()  # a second close (a DELETE meanwhile) waits for the same one
    assert closed == ["c"]
    assert pc.closed
    await settle(clock, 30.0)
    assert closed == ["c"]
    await watch.aclose()


async def test_run_every_checks_on_the_one_clock_until_cancelled() -> None:
    clock = ManualClock(start_s=100.0)
    seen: list[float] = []

    async def check(now_s: float) -> None:
        seen.append(now_s)

    task = run_every(clock, 5.0, check, "test-reaper")
    await asyncio.sleep(0)
    for _ in range(3):
        await settle(clock, 5.0)
    assert seen == [105.0, 110.0, 115.0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
