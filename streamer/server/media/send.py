"""The one place that reaches into aiortc's sender: keyframe requests and its bitrate target.

The server hands aiortc's video senders encoded packets (:mod:`~streamer.server.media.encoder`),
which a sender only packetises. Two things the sender learns from its viewer then reach no one:

- a keyframe request (RTCP PLI or FIR) sets a private flag that only aiortc's own frame path
  reads; :func:`on_keyframe_request` wraps the sender's ``_send_keyframe`` (one instance) so it
  also calls the server back;
- a REMB bitrate estimate sets ``target_bitrate`` on the sender's own (never opened) encoder;
  :func:`remb_target_bps` reads it.

This relies on private aiortc API (``RTCRtpSender._send_keyframe`` and the name-mangled
``RTCRtpSender.__encoder``), checked against aiortc 1.16.0, which ``pyproject.toml`` pins;
``tests/test_server_send.py`` fails loudly if an upgrade moves either.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender

AIORTC_VERSION_CHECKED = "1.16.0"
_ENCODER = "_RTCRtpSender__encoder"
_KEYFRAME = "_send_keyframe"


class SenderSeamError(RuntimeError):
    """The installed aiortc no longer has the sender internals this module relies on."""


def check_sender(sender: RTCRtpSender) -> None:
    """Raise SenderSeamError unless ``sender`` has the internals used here."""
    if not callable(getattr(sender, _KEYFRAME, None)) or not hasattr(sender, _ENCODER):
        raise SenderSeamError(
            f"aiortc's RTCRtpSender no longer has {_KEYFRAME}() and {_ENCODER} (checked "
            f"against aiortc {AIORTC_VERSION_CHECKED}): keyframe requests and REMB would be "
            "lost; update streamer/server/media/send.py"
        )


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` (on the event loop) each time ``sender``'s peer asks for a keyframe."""
    check_sender(sender)
    original = getattr(sender, _KEYFRAME)

    def send_keyframe() -> None:
        original()
        callback()

    setattr(sender, _KEYFRAME, send_keyframe)


def remb_target_bps(sender: RTCRtpSender) -> int | None:
    """The bitrate ``sender``'s peer last asked for (aiortc's clamped target, its default
    before any REMB), or None before the sender has taken its first packet."""
    encoder = getattr(sender, _ENCODER, None)
    target = getattr(encoder, "target_bitrate", None)
    return int(target) if target is not None else None
