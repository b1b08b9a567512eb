"""A client peer's sent audio through an impaired network: the thin asyncio shim.

:class:`ImpairedLink` applies an :class:`~streamer.probe.impairment.ImpairmentSchedule` to RTP
packets: a lost packet is never sent (the receiver sees a real sequence-number hole), a delayed
one waits in a bounded queue until one owned task releases it. Submitting never blocks: aiortc's
sender paces itself on its track's ``recv()``, not on the transport, so a send that waited for
the delay would delay every later packet too.

:func:`impair_audio_sender` hooks a link into a real aiortc audio sender. That needs aiortc's
private API, all of it in that one function, written against **aiortc 1.16.0**:
``RTCRtpSender._run_rtp`` sends every packet with ``await self.transport._send_rtp(bytes)``,
where ``transport`` is a property returning the private ``_RTCRtpSender__transport`` (the
bundle's ``RTCDtlsTransport``). The function puts a stand-in there whose ``_send_rtp`` hands RTP
to the link and passes RTCP (``aiortc.rtp.is_rtcp``) straight on, and forwards everything else
to the real transport. ``tests/test_bench_impaired_link.py`` fails loudly if aiortc moves any of
it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDtlsTransport, RTCRtpSender
from aiortc.rtp import is_rtcp

from streamer.errors import StreamerError
from streamer.probe.impairment import ImpairmentSchedule
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SendRtp = Callable[[bytes], Awaitable[None]]

# Packets waiting for their release time. At most MAX_JITTER_MS (2 s) / 20 ms = 100 are ever in
# flight for one audio sender; when full, the newest packet is dropped and counted (overflowed).
QUEUE_PACKETS = 256
# The most recent releases, for tests and diagnostics (about 80 s of audio; oldest overwritten).
RELEASE_LOG = 4096


class ImpairmentUnsupportedError(StreamerError):
    """The installed aiortc does not send RTP the way :func:`impair_audio_sender` relies on."""

    code = "impairment_unsupported"


@dataclass(frozen=True)
class Release:
    """One packet that left: when it was sent, when the schedule let it go, when it went."""

    sent_at_s: float
    planned_s: float
    released_at_s: float


class ImpairedLink:
    """Owns a bounded queue of delayed packets and the one task that releases them, in order.

    ``submit`` is synchronous and never blocks. ``aclose`` cancels and awaits the task
    (idempotent); packets still waiting then are discarded, like a network that goes down.
    """

    def __init__(
        self, schedule: ImpairmentSchedule, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.schedule = schedule
        self.name = name
        self._clock = clock
        self._queue: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue(QUEUE_PACKETS)
        self._task: asyncio.Task[None] | None = None
        self.released = 0
        self.overflowed = 0
        self.releases: collections.deque[Release] = collections.deque(maxlen=RELEASE_LOG)

    def start(self, forward: SendRtp) -> None:
        """Start releasing packets into ``forward`` (once)."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._task = asyncio.create_task(self._release_forever(forward), name=self.name)

    def submit(self, packet: bytes) -> None:
        """Hand over one RTP packet sent now: lost, or queued until its release time."""
        sent_at_s = self._clock()
        release_s = self.schedule.release_at_s(sent_at_s)
        if release_s is None or self._task is None or self._task.done():
            return
        try:
            self._queue.put_nowait((sent_at_s, release_s, packet))
        except asyncio.QueueFull:
            self.overflowed += 1
            if self.overflowed == 1:
                log.warning(
                    "%s: %d packets in flight, dropping the newest", self.name, QUEUE_PACKETS
                )

    async def _release_forever(self, forward: SendRtp) -> None:
        while True:
            sent_at_s, release_s, packet = await self._queue.get()
            wait_s = release_s - self._clock()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            try:
                await forward(packet)
            except ConnectionError:
                # The DTLS transport closed (the call is ending): nothing can leave any more.
                log.debug("%s: transport closed, releasing no more packets", self.name)
                return
            self.released += 1
            self.releases.append(Release(sent_at_s, release_s, self._clock()))

    def stats(self) -> dict[str, float]:
        """Packets seen, lost, released, overflowed; hold (release - send) mean and max in ms."""
        s = self.schedule
        kept = s.packets - s.dropped
        return {
            "packets": s.packets,
            "lost": s.dropped,
            "released": self.released,
            "overflowed": self.overflowed,
            "held_mean_ms": 1e3 * s.held_s_total / kept if kept else 0.0,
            "held_max_ms": 1e3 * s.held_s_max,
        }

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)


class _StandIn:
    """Answers ``overrides`` itself and everything else from ``target``."""

    def __init__(self, target: object, overrides: dict[str, object]) -> None:
        self._target = target
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._target, name)


def impair_audio_sender(sender: RTCRtpSender, link: ImpairedLink) -> None:
    """Send ``sender``'s RTP through ``link`` (started here); its RTCP goes out unchanged.

    Call once, after ``setRemoteDescription`` (which settles the bundle: a later
    ``setTransport``, i.e. a renegotiation, would put the real transport back) and before media
    flows. Every use of aiortc's private API in this package is in this function.

    Raises :class:`ImpairmentUnsupportedError` when the sender is not an audio sender keeping
    its transport where aiortc 1.16.0 keeps it.
    """
    attribute = "_RTCRtpSender__transport"  # the name-mangled ``self.__transport``
    transport = getattr(sender, attribute, None)
    if not isinstance(transport, RTCDtlsTransport) or sender.transport is not transport:
        raise ImpairmentUnsupportedError(
            "cannot impair this aiortc's sent audio: RTCRtpSender keeps no RTCDtlsTransport in "
            f"{attribute} (written against aiortc 1.16.0)"
        )
    if sender.kind != "audio":
        raise ValueError(f"only an audio sender can be impaired, not {sender.kind}")
    forward: SendRtp = transport._send_rtp

    async def send_rtp(data: bytes) -> None:
        if is_rtcp(data):
            await forward(data)
        else:
            link.submit(data)

    link.start(forward)
    setattr(sender, attribute, _StandIn(transport, {"_send_rtp": send_rtp}))
