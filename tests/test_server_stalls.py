"""A stall of the server's own (its process stopped, as a hypervisor or a long collection would
stop it) is not network lateness: the call's playout target stays where the network put it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest

from streamer.audio.jitter import LoopStalls
from streamer.probe.clip import make_clip
from streamer.probe.peer import LoopbackPeer
from tests.servers import ServedProcess, serve_subprocess


class StoppableCall:
    """One looping call (the soak's clip: speech between silences) to a server subprocess that
    the test can stop, and the call's playout state as ``/sessions/{id}`` reports it."""

    def __init__(self, served: ServedProcess, http: aiohttp.ClientSession, session_id: str):
        self._served = served
        self._http = http
        self._state_url = f"{served.url}/sessions/{session_id}"

    async def stop_server_for(self, seconds: float) -> None:
        os.kill(self._served.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(seconds)
        os.kill(self._served.proc.pid, signal.SIGCONT)

    async def playout(self) -> dict[str, float]:
        async with self._http.get(self._state_url) as r:
            return (await r.json())["playout"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def stoppable_call() -> AsyncIterator[StoppableCall]:
    async with serve_subprocess() as served, aiohttp.ClientSession() as http:
        peer = LoopbackPeer(served.url, make_clip(None).pcm, loop=True, keep_frames=False)
        await peer.connect(http)
        assert peer.session_id is not None
        try:
            yield StoppableCall(served, http, peer.session_id)
        finally:
            await peer.aclose(http)


def test_a_stall_explains_the_wait_of_audio_due_before_it_ended() -> None:
    stalls = LoopStalls(threshold_s=0.02, margin_s=0.02, keep=2)
    stalls.note(10.0, 10.005)  # 5 ms late: the timer's own jitter, not a stall
    assert not stalls.explains(9.99, 10.004)
    stalls.note(11.0, 11.15)  # nothing ran from 11.0 to 11.15
    assert stalls.explains(11.05, 11.16)  # due in it, read after it
    assert stalls.explains(10.98, 11.3)  # due before it, read while the backlog was worked off
    assert stalls.explains(11.16, 11.2)  # sent just as it ended: within the margin
    assert not stalls.explains(11.2, 11.3)  # due after it: its wait was the network's
    assert not stalls.explains(10.9, 10.95)  # came before it began
    stalls.note(12.0, 12.03)
    stalls.note(13.0, 13.03)  # only the last two are kept: bounded
    assert not stalls.explains(11.05, 11.16)
    assert stalls.count == 3
    # Read before the overdue tick fires: the stall going on now explains the wait too.
    stalls.expect(14.0)
    assert not stalls.explains(13.99, 14.01)  # 10 ms overdue: the timer's own jitter
    assert stalls.explains(13.9, 14.1)  # 100 ms overdue: nothing has run on the loop since
    stalls.expect(None)  # the scheduler stopped: nothing is overdue
    assert not stalls.explains(13.9, 14.1)


@pytest.mark.realtime
@pytest.mark.slow
async def test_a_stopped_server_does_not_raise_the_calls_playout_target() -> None:
    async with stoppable_call() as call:
        await asyncio.sleep(4.0)
        before = await call.playout()
        for _ in range(3):  # the server's process stopped for 150 ms, three times
            await call.stop_server_for(0.15)
            await asyncio.sleep(1.0)
            after = await call.playout()
            # Read within a second of each stall, when a late unit would hold the target up.
            assert after["target_delay_ms"] <= max(before["target_delay_ms"], 40.0) + 20.0, (
                before,
                after,
            )
    # The packets read after each stall were seen, and not taken for network lateness.
    assert after["stalled_units"] >= 3, after
    assert after["dropped_frames"] == 0


@pytest.mark.realtime
@pytest.mark.slow
async def test_a_server_stopped_for_a_second_plays_the_calls_audio_late_and_drops_none() -> None:
    async with stoppable_call() as call:
        await asyncio.sleep(4.0)
        await call.stop_server_for(1.2)  # three times the maximum delay
        await asyncio.sleep(1.0)
        during = await call.playout()
        after = during
        for _ in range(40):  # the delay comes back down in the clip's pauses
            await asyncio.sleep(0.5)
            after = await call.playout()
            if after["playout_delay_ms"] <= after["target_delay_ms"] + 45:
                break
    print(f"after a 1.2 s stop: {during}; then {after}")
    # Before, the audio the stop held up past the 400 ms maximum (~20 frames) was cut out.
    assert during["late_after_stall_frames"] > 0, during
    assert during["playout_delay_ms"] >= 700, during
    assert after["dropped_frames"] == 0, after
    assert after["playout_delay_ms"] <= after["target_delay_ms"] + 45, after
