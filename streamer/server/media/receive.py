"""The one place that reaches into aiortc's receiver: audio leaves its jitter buffer at once.

aiortc's audio receiver holds every packet in a ``JitterBuffer(capacity=16, prefetch=4)``:
80 ms of waiting that absorbs no jitter (release is driven by arrivals, not time), and after a
single lost or reordered packet it holds ~280 ms for the rest of the call (upstream aiortc
#543; ``docs/architecture.md``). The session's own playout buffer
(:mod:`streamer.playout.pipeline`) owns all waiting, by time. So each audio receiver gets a
:class:`PassthroughJitterBuffer` instead: every packet newer than the last one released is
released on arrival, as its own frame; anything at or behind it (a duplicate, or a packet
overtaken by a newer one) is dropped. A lost packet becomes a gap in the frames' pts, which
the pipeline fills with concealment of the same length.

This relies on private aiortc API (the name-mangled ``RTCRtpReceiver.__jitter_buffer``, and
its ``add(packet) -> (pli_flag, JitterFrame | None)`` contract), checked against aiortc
1.16.0, which ``pyproject.toml`` pins; ``tests/test_server_receive.py`` fails loudly if an
upgrade moves it.
"""

from __future__ import annotations

from aiortc import RTCRtpTransceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

AIORTC_VERSION_CHECKED = "1.16.0"
_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class ReceiverSeamError(RuntimeError):
    """The installed aiortc no longer has the receiver internals this module replaces."""


class PassthroughJitterBuffer:
    """aiortc's jitter buffer contract with no waiting, for single-packet audio frames (Opus).

    Not thread-safe; aiortc calls it from the event loop only.
    """

    def __init__(self) -> None:
        self._last_seq: int | None = None
        self.released = 0
        self.dropped_late = 0

    @property
    def capacity(self) -> int:  # part of aiortc's JitterBuffer interface
        return 1

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Release ``packet`` at once unless it is at or behind the last one released."""
        seq = packet.sequence_number
        if self._last_seq is not None and not uint16_gt(seq, self._last_seq):
            self.dropped_late += 1
            return False, None
        self._last_seq = seq
        self.released += 1
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def install_passthrough(transceiver: RTCRtpTransceiver) -> PassthroughJitterBuffer:
    """Replace an audio transceiver's receive jitter buffer; call right after creating the
    transceiver, before RTP flows. Raises ReceiverSeamError if aiortc's internals moved."""
    if transceiver.kind != "audio":
        raise ValueError("only audio receivers take the pass-through buffer")
    receiver = transceiver.receiver
    if not isinstance(getattr(receiver, _ATTRIBUTE, None), JitterBuffer):
        raise ReceiverSeamError(
            f"aiortc's RTCRtpReceiver has no {_ATTRIBUTE} JitterBuffer (checked with aiortc "
            f"{AIORTC_VERSION_CHECKED}): the audio jitter buffer cannot be replaced"
        )
    buffer = PassthroughJitterBuffer()
    setattr(receiver, _ATTRIBUTE, buffer)
    return buffer
