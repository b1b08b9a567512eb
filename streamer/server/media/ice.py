"""ICE servers: STUN URLs and TURN with short-lived credentials, for the pages' browsers and
for the server's own peers.

A TURN server such as coturn with ``use-auth-secret`` accepts credentials derived from a shared
secret (its "TURN REST API" scheme): the username is ``<expiry unix time>:<name>`` and the
credential is ``base64(hmac-sha1(secret, username))``. ``GET /ice-servers`` (the app's) hands
the pages a fresh pair each time, valid for ``ttl_s``, so the secret never leaves the server and
a leaked pair expires by itself. The server's own peers (calls, channel viewers and publishers)
get a fresh pair each too, from :func:`server_configuration`, so a server behind NAT can relay.
coturn checks a pair when an allocation is made, not when it is refreshed: a call outlives it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from streamer.errors import StreamerError

TURN_SECRET_ENV = "AVATAR_STREAMER_TURN_SECRET"


@dataclass(frozen=True)
class TurnConfig:
    urls: tuple[str, ...]  # e.g. ("turn:turn.example.org:3478?transport=udp", "turns:...:5349")
    secret: str = field(repr=False)  # coturn's static-auth-secret
    ttl_s: int = 3600  # how long one handed-out credential stays valid


def turn_credentials(secret: str, name: str, now_s: float, ttl_s: int) -> tuple[str, str]:
    """(username, credential) valid until ``now_s + ttl_s`` (unix seconds) for coturn's
    ``use-auth-secret``."""
    username = f"{int(now_s) + ttl_s}:{name}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def browser_ice_servers(
    stun_urls: tuple[str, ...], turn: TurnConfig | None, now_s: float
) -> list[dict[str, Any]]:
    """The ``iceServers`` list of an ``RTCPeerConnection`` (browser shape)."""
    servers: list[dict[str, Any]] = [{"urls": list(stun_urls)}] if stun_urls else []
    if turn is not None and turn.urls:
        username, credential = turn_credentials(turn.secret, "avatar", now_s, turn.ttl_s)
        servers.append({"urls": list(turn.urls), "username": username, "credential": credential})
    return servers


def server_configuration(
    stun_urls: tuple[str, ...], turn: TurnConfig | None, now_s: float
) -> RTCConfiguration:
    """The ``RTCConfiguration`` of one of the server's own peers: TURN (with a fresh pair,
    username ``<expiry>:server``, valid until ``now_s + turn.ttl_s``) and the ``--ice-server``
    URLs.

    aiortc uses one STUN and one TURN server, the first of each it finds: the configured TURN
    server comes first so that it wins over a credential-less ``turn:`` URL in ``stun_urls``,
    and of its URLs the first one aiortc supports (``turn:`` over udp or tcp, ``turns:`` over
    tcp) is used.
    """
    servers: list[RTCIceServer] = []
    if turn is not None and turn.urls:
        username, credential = turn_credentials(turn.secret, "server", now_s, turn.ttl_s)
        servers.append(RTCIceServer(urls=list(turn.urls), username=username, credential=credential))
    servers.extend(RTCIceServer(urls=u) for u in stun_urls)
    return RTCConfiguration(iceServers=servers)


def new_server_peer(stun_urls: tuple[str, ...], turn: TurnConfig | None) -> RTCPeerConnection:
    """A peer connection of the server's (a call, a channel viewer or publisher)."""
    return RTCPeerConnection(server_configuration(stun_urls, turn, time.time()))


class TurnConfigError(StreamerError):
    code = "turn_secret_missing"


def turn_from_args(urls: list[str], ttl_s: int, environ: Mapping[str, str]) -> TurnConfig | None:
    """The TURN settings of a command line; the secret comes from the environment only.

    Raises TurnConfigError when TURN URLs are given without the secret.
    """
    if not urls:
        return None
    secret = environ.get(TURN_SECRET_ENV, "").strip()
    if not secret:
        raise TurnConfigError(
            f"--turn-url needs the TURN server's shared secret in {TURN_SECRET_ENV} "
            "(coturn: static-auth-secret with use-auth-secret)."
        )
    return TurnConfig(urls=tuple(urls), secret=secret, ttl_s=ttl_s)
