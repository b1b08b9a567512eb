"""The client's network impairment: where it hooks into aiortc, and that a real server sees it.

``impair_audio_sender`` uses aiortc's private API (written against aiortc 1.16.0). The first
tests fail loudly when aiortc moves what it relies on; the last one calls a real in-process
server with a real aiortc client and reads, on the server's own receiver, the holes and the
spread of arrival times that the impairment made.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpSender

from streamer.probe.impaired_link import (
    ImpairedLink,
    ImpairmentUnsupportedError,
    impair_audio_sender,
)
from streamer.probe.impairment import Impairment, ImpairmentSchedule
from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from tests.servers import start_app

RTP = bytes([0x80, 96]) + bytes(10)  # version 2, payload type 96: RTP
RTCP = bytes([0x80, 200]) + bytes(6)  # packet type 200 (sender report): RTCP


class Scripted:
    def __init__(self, draws: list[float]) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


async def test_aiortc_still_sends_rtp_through_the_transport_we_replace() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("audio", direction="sendrecv").sender
        private = getattr(sender, "_RTCRtpSender__transport", None)
        assert isinstance(private, RTCDtlsTransport), "aiortc moved RTCRtpSender.__transport"
        assert sender.transport is private, "RTCRtpSender.transport no longer returns it"
        assert inspect.iscoroutinefunction(RTCDtlsTransport._send_rtp)
        # Every RTP packet leaves through the property, so replacing what it returns sees all.
        run_rtp = inspect.getsource(RTCRtpSender._run_rtp)
        assert "await self.transport._send_rtp(packet_bytes)" in run_rtp
    finally:
        await pc.close()


async def test_rtp_waits_for_its_release_rtcp_goes_at_once_and_lost_packets_never() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("audio", direction="sendrecv").sender
        real = sender.transport
        out: list[bytes] = []

        async def record(data: bytes) -> None:
            out.append(data)

        real._send_rtp = record  # the real transport's send, before the impairment wraps it
        # 10 % loss, 50 ms jitter; draws (loss, delay): kept + 50 ms, then lost.
        schedule = ImpairmentSchedule(0.050, 0.10, Scripted([0.5, 1.0, 0.01, 0.0]))
        link = ImpairedLink(schedule, "test-link")
        impair_audio_sender(sender, link)
        assert sender.transport is not real
        assert sender.transport.state == real.state  # everything else still reaches the real one
        await sender.transport._send_rtp(RTP + b"1")  # due in 50 ms
        await sender.transport._send_rtp(RTP + b"2")  # lost
        await sender.transport._send_rtp(RTCP)
        for _ in range(5):
            await asyncio.sleep(0)
        assert out == [RTCP]  # RTCP passed straight through; RTP waits its 50 ms
        await asyncio.sleep(0.1)
        assert out == [RTCP, RTP + b"1"]
        assert link.stats()["lost"] == 1
        assert link.stats()["released"] == 1
        await link.aclose()
        await link.aclose()  # idempotent
    finally:
        await pc.close()


def test_a_sender_without_the_private_transport_is_refused_loudly() -> None:
    class Moved:
        kind = "audio"
        transport = None

    link = ImpairedLink(Impairment(loss_pct=1).schedule(), "unused")
    with pytest.raises(ImpairmentUnsupportedError, match=r"aiortc 1\.16\.0"):
        impair_audio_sender(Moved(), link)  # type: ignore[arg-type]


async def inbound_audio(app: Any, peer: LoopbackPeer) -> Any:
    """The server's receiver statistics for the audio of ``peer``'s call."""
    session = app[SERVER].sessions[peer.session_id]
    report = await session.pc.getStats()
    (stats,) = [s for s in report.values() if s.type == "inbound-rtp" and s.kind == "audio"]
    return stats


def expected_of(stats: Any) -> int:
    return int(stats.packetsLost + stats.packetsReceived)


@pytest.mark.realtime
@pytest.mark.slow
async def test_a_real_server_sees_the_holes_and_the_late_packets(runtime: Runtime) -> None:
    app = create_app(ServerConfig(), runtime)
    runner, url = await start_app(app)
    clip = speechlike_48k(4.0)
    impairment = Impairment(jitter_ms=60, loss_pct=10, seed=4)
    impaired = LoopbackPeer(url, clip, loop=True, keep_frames=False, impairment=impairment)
    clean = LoopbackPeer(url, clip, loop=True, keep_frames=False)
    jitter_ms: dict[str, list[float]] = {"impaired": [], "clean": []}
    try:
        async with aiohttp.ClientSession() as http:
            await impaired.connect(http)
            await clean.connect(http)
            await asyncio.sleep(3.0)
            for _ in range(8):  # RFC 3550 jitter is a running estimate: sample it for 4 s
                await asyncio.sleep(0.5)
                for name, peer in (("impaired", impaired), ("clean", clean)):
                    jitter_ms[name].append((await inbound_audio(app, peer)).jitter / 48)
            got = await inbound_audio(app, impaired)
            got_clean = await inbound_audio(app, clean)
            assert impaired.link is not None
            link = impaired.link.stats()
            releases = list(impaired.link.releases)
            await impaired.aclose(http)
            await clean.aclose(http)
    finally:
        await runner.cleanup()
    assert clean.link is None
    print("server packets lost/expected", got.packetsLost, expected_of(got), "client", link)
    print("server RFC 3550 jitter ms, impaired", jitter_ms["impaired"], "clean", jitter_ms["clean"])

    # Loss: the server's receiver counts sequence-number holes. About 10 % of ~350 packets;
    # the packets the client dropped, less those after the last one received and those still
    # in flight (at most 60 ms / 20 ms + 1).
    assert got_clean.packetsLost == 0
    expected = expected_of(got)
    assert expected > 300
    assert 0.05 <= got.packetsLost / expected <= 0.16, (got.packetsLost, expected)
    assert link["lost"] - 5 <= got.packetsLost <= link["lost"], (got.packetsLost, link)

    # Jitter: with 0-60 ms per packet (order kept), RFC 3550 interarrival jitter reads ~18 ms
    # (the schedule alone, simulated); a clean client on this shared machine reads 1-8 ms (its
    # own pacing and the event loop, which the impaired one has as well).
    impaired_ms = float(np.mean(jitter_ms["impaired"]))
    clean_ms = float(np.mean(jitter_ms["clean"]))
    assert impaired_ms >= 10.0, jitter_ms
    assert impaired_ms >= clean_ms + 5.0, jitter_ms

    # The client's own log: planned holds within [0, 60 ms] and really spread; each packet left
    # within 50 ms of its plan (asyncio's timer and a busy 2-core machine).
    planned_ms = np.asarray([r.planned_s - r.sent_at_s for r in releases]) * 1e3
    late_ms = np.asarray([r.released_at_s - r.planned_s for r in releases]) * 1e3
    assert len(releases) > 250
    assert planned_ms.min() >= 0
    assert planned_ms.max() <= 60.0
    assert planned_ms.std() > 10.0
    assert late_ms.min() >= 0
    assert np.quantile(late_ms, 0.99) < 50.0, np.quantile(late_ms, [0.5, 0.99])
