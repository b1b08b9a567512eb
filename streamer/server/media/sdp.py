"""Offers checked once, before anything is created for them, and the video codec we answer.

:func:`check_offer` is the one validation of a peer's SDP (calls, WHEP viewers, publishing
pages): it parses it and refuses what could never be answered or connect. aiortc's
negotiation (:func:`streamer.server.media.peer.negotiate`) still has the last word.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.sdp import SessionDescription

from streamer.errors import StreamerError


class BadOfferError(StreamerError):
    """An SDP offer that does not parse, lacks what the route needs, or cannot connect."""

    code = "bad_sdp"


class NoAudioError(BadOfferError):
    """An offer without the audio the route lip-syncs or publishes."""

    code = "no_audio"


@dataclass(frozen=True)
class OfferShape:
    """What an offer asks for, once it has passed :func:`check_offer`."""

    audio: bool
    video: bool


def check_offer(sdp: str, *, audio_required: bool, video_required: bool) -> OfferShape:
    """Refuse an offer that cannot be answered; say what it holds.

    Raises :class:`NoAudioError` when required audio is missing from the text (said before
    anything else), :class:`BadOfferError` when ``sdp`` does not parse, lacks a required
    section once parsed, or has a media section without a DTLS fingerprint (it could never
    connect).
    """
    if audio_required and "m=audio" not in sdp:  # said before any parse error
        raise NoAudioError("The offer has no audio track.")
    try:
        media = SessionDescription.parse(sdp).media
    except Exception as exc:  # aiortc's parser raises anything, asserts included
        raise BadOfferError("The offer is not valid SDP.") from exc
    kinds = {m.kind for m in media}
    if audio_required and "audio" not in kinds:
        raise BadOfferError("The offer has no audio section that parses.")
    if video_required and "video" not in kinds:
        raise BadOfferError("The offer has no video to receive.")
    if any(m.dtls is None or not m.dtls.fingerprints for m in media):
        raise BadOfferError("The offer has a media section without a DTLS fingerprint.")
    return OfferShape(audio="audio" in kinds, video="video" in kinds)


def prefer_video_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Offer only ``codec`` (plus RTX): must run before ``setRemoteDescription``."""
    codecs = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in (f"video/{codec}", "video/rtx")
    ]
    transceiver.setCodecPreferences(codecs)
