"""The pass-through audio jitter buffer, and the aiortc internals it relies on (pinned)."""

from __future__ import annotations

import asyncio
import importlib.metadata

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from streamer.server.media.receive import (
    AIORTC_VERSION_CHECKED,
    PassthroughJitterBuffer,
    ReceiverSeamError,
    install_passthrough,
)


def rtp(seq: int, timestamp: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=timestamp)
    packet._data = bytes([seq % 256])  # what the receiver's depayloader leaves there
    return packet


def test_the_installed_aiortc_is_the_one_the_seam_was_checked_against() -> None:
    # An aiortc upgrade must come with a new look at streamer/server/media/receive.py (and this).
    assert importlib.metadata.version("aiortc") == AIORTC_VERSION_CHECKED


def test_aiortc_receivers_still_hold_the_buffer_this_replaces() -> None:
    async def check() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            transceiver = pc.addTransceiver("audio", direction="sendrecv")
            original = transceiver.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
            assert isinstance(original, JitterBuffer)
            buffer = install_passthrough(transceiver)
            assert transceiver.receiver._RTCRtpReceiver__jitter_buffer is buffer  # type: ignore[attr-defined]
            with pytest.raises(ReceiverSeamError):  # already replaced: nothing to replace
                install_passthrough(transceiver)
            with pytest.raises(ValueError, match="audio"):
                install_passthrough(pc.addTransceiver("video", direction="recvonly"))
        finally:
            await pc.close()

    asyncio.run(check())


def test_packets_leave_on_arrival_in_order_and_late_ones_are_dropped() -> None:
    buffer = PassthroughJitterBuffer()
    out = [buffer.add(rtp(s, s * 960))[1] for s in (10, 11, 13, 12, 13, 14)]
    released = [None if f is None else f.timestamp for f in out]
    # 12 came after 13: behind what was released, so it is dropped (a loss, not a reorder);
    # the second 13 is a duplicate.
    assert released == [9600, 10560, 12480, None, None, 13440]
    assert all(f.data == bytes([f.timestamp // 960]) for f in out if f is not None)
    assert buffer.released == 4
    assert buffer.dropped_late == 2
    pli, _ = buffer.add(rtp(20, 0))
    assert pli is False  # audio: never a picture loss


def test_sequence_numbers_wrap() -> None:
    buffer = PassthroughJitterBuffer()
    seqs = [65534, 65535, 0, 1]
    assert all(buffer.add(rtp(s, k * 960))[1] is not None for k, s in enumerate(seqs))
    assert buffer.add(rtp(65535, 0))[1] is None
