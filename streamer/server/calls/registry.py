"""Every call of one app: created from an offer, watched until connected, reaped when silent."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from streamer.playout.pipeline import SessionPipeline
from streamer.server.calls.session import Session
from streamer.server.http.errors import HttpError
from streamer.server.media.hub import MediaHub
from streamer.server.media.ice import new_server_peer
from streamer.server.media.peer import PeerSettings, PeerWatch, negotiate, run_every
from streamer.server.media.receive import install_passthrough
from streamer.server.media.sdp import check_offer, prefer_video_codec
from streamer.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallLimits:
    default_avatar: str = "default"  # for offers that name none
    max_sessions: int = 8
    # A call whose peer has sent no audio for this long is closed (None: never).
    idle_timeout_s: float | None = 60.0


class CallRegistry:
    """Owns every :class:`Session`, their watchdogs and the idle reaper. Event-loop only."""

    def __init__(self, hub: MediaHub, limits: CallLimits, peers: PeerSettings) -> None:
        self.hub = hub
        self.limits = limits
        self._peers = peers
        self.sessions: dict[str, Session] = {}
        self._watch = PeerWatch(hub.clock, peers.connect_timeout_s)
        self._reaper: asyncio.Task[None] | None = None

    @property
    def default_avatar(self) -> str:
        return self.limits.default_avatar

    def start(self) -> None:
        """Start closing calls whose peer went silent (when ``idle_timeout_s`` is set)."""
        timeout_s = self.limits.idle_timeout_s
        if timeout_s is not None and self._reaper is None:
            self._reaper = run_every(
                self.hub.clock, min(5.0, timeout_s / 4), self._reap_idle, "session-idle-reaper"
            )

    async def _reap_idle(self, now_s: float) -> None:
        timeout_s = self.limits.idle_timeout_s
        assert timeout_s is not None
        for session in list(self.sessions.values()):
            silent_s = now_s - session.last_input_at_s
            if silent_s >= timeout_s:
                log.warning(
                    "session %s: no audio from the peer for %.0f s, closing",
                    session.session_id,
                    silent_s,
                )
                self.hub.metrics.idle_closed.inc()
                await session.aclose()

    async def aclose(self) -> None:
        await cancel_and_wait(self._reaper)
        self._reaper = None
        await asyncio.gather(*(s.aclose() for s in list(self.sessions.values())))
        await self._watch.aclose()

    async def _session_closed(self, session: Session) -> None:
        self.hub.scheduler.remove(session.session_id)
        if self.sessions.pop(session.session_id, None) is not None:
            self.hub.metrics.sessions.set(len(self.sessions))

    async def create(
        self, offer: RTCSessionDescription, avatar: str
    ) -> tuple[Session, RTCSessionDescription]:
        """A call answering ``offer`` with ``avatar``. Refuses, in this order: 503
        ``too_many_sessions`` at the limit, AvatarError (an unknown avatar is a 404 whatever the
        offer), BadOfferError (the offer checked once, before a peer is made for it)."""
        limits = self.limits
        if len(self.sessions) >= limits.max_sessions:
            raise HttpError(
                503,
                "too_many_sessions",
                f"The server is at its limit of {limits.max_sessions} sessions; try again later.",
            )
        await self.hub.load_avatar(avatar)
        check_offer(offer.sdp, audio_required=True, video_required=False)
        pc = new_server_peer(self._peers.ice_servers, self._peers.turn)
        session_id = uuid.uuid4().hex[:12]
        frame_count = self.hub.runtime.renderer.frame_count(avatar)
        pipeline = self.hub.configure(SessionPipeline(frame_count, self.hub.pipeline_config))
        session = Session(
            session_id,
            pc,
            avatar,
            pipeline,
            self.hub.clock,
            self._session_closed,
            self._peers.video,
        )
        # The session's playout buffer does all the waiting: aiortc's is bypassed.
        install_passthrough(pc.addTransceiver(session.audio, direction="sendrecv"))
        video = pc.addTransceiver(session.video, direction="sendonly")
        prefer_video_codec(video, self._peers.video_codec)
        session.video.follow(video.sender)  # its PLI and REMB reach the session's encoder

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                session.attach_input(track)

        answer = await negotiate(pc, offer)
        self.sessions[session_id] = session
        self.hub.metrics.sessions.set(len(self.sessions))
        self.hub.scheduler.add(session)
        self._watch.watch(session)
        log.info(
            "session %s: started with avatar %s (%d live)", session_id, avatar, len(self.sessions)
        )
        return session, answer
