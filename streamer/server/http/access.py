"""Who may call which route: a bearer token for control, optional for viewers; CORS.

Every route has an access level. Handlers declare theirs with :func:`public` or
:func:`viewer`; a route that declares nothing is :attr:`Access.CONTROL`, so a new route is
protected until someone decides otherwise (fail closed). The pages and their assets are public:
they hold no data and no secret.

With no token configured every route is open (a loopback-only server: see
:func:`check_exposure`). With one, CONTROL routes need ``Authorization: Bearer <token>``, and
VIEWER routes need it too unless ``public_viewers`` is set. The token is compared in constant
time. The pages read the token from their own URL's fragment (``#token=...``, never sent to
the server) or query and send it as that header.

Failed attempts (a wrong token, or none where one is needed; a wrong one presented anywhere, e.g.
to ``/health``, whose answer would tell a right guess) are counted per client address by an
:class:`~streamer.server.http.auth_limit.AuthFailureLimiter`; a locked-out address gets 429
``too_many_failures`` with Retry-After on every request that would check a token. The client
address is the TCP peer's, or with ``trust_forwarded_for`` the last ``X-Forwarded-For`` hop (the
one the trusted reverse proxy appended).

CORS is off unless origins are configured (no ``Access-Control-Allow-*`` header is ever sent,
so browsers refuse cross-origin reads and preflighted cross-origin calls).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from streamer.errors import StreamerError
from streamer.server.http.auth_limit import AuthFailureLimiter, FailureLimit
from streamer.server.http.errors import HttpError, error_response
from streamer.tokens import MIN_TOKEN_CHARS, TOKEN_ENV

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])

ACCESS_ATTR = "__access_level__"
# Set on every request by the access middleware: it carried the server's token (or the server
# has none). Handlers that show more to authorized callers read it through is_authorized().
AUTHORIZED = web.RequestKey("authorized", bool)
_MAX_ADDRESS_CHARS = 64  # a forwarded address longer than any IPv6 text is cut there


class Access(enum.Enum):
    PUBLIC = "public"  # pages, assets, health, the API description
    VIEWER = "viewer"  # watching: WHEP, channel listing, metrics, ICE servers
    CONTROL = "control"  # everything that starts, drives or ends something


def public(handler: H) -> H:
    """Mark a handler as callable by anyone."""
    setattr(handler, ACCESS_ATTR, Access.PUBLIC)
    return handler


def viewer(handler: H) -> H:
    """Mark a handler as a viewer's (open when ``public_viewers`` is set)."""
    setattr(handler, ACCESS_ATTR, Access.VIEWER)
    return handler


def access_of(handler: object) -> Access:
    """The declared level of a handler; CONTROL when it declares none."""
    level = getattr(handler, ACCESS_ATTR, None)
    return level if isinstance(level, Access) else Access.CONTROL


@dataclass(frozen=True)
class AccessConfig:
    # None: no authentication (loopback only, see check_exposure). Kept out of repr(): a
    # logged config must not carry the secret.
    token: str | None = field(default=None, repr=False)
    public_viewers: bool = False  # viewers need no token even when one is configured
    cors_origins: tuple[str, ...] = ()  # exact origins ("https://a.example") or "*"; () = off
    failure_limit: FailureLimit = field(default_factory=FailureLimit)  # failed token attempts
    # Take the client address from X-Forwarded-For's last hop: only behind a proxy that appends
    # it (anyone can send the header; trusted blindly it would let a guesser pick its address).
    trust_forwarded_for: bool = False


class ExposureError(StreamerError):
    """Serving would expose the control API to a network without a (good enough) token."""

    code = "token_required"


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname, or "" (every interface): assume reachable from outside


def check_exposure(host: str, access: AccessConfig) -> None:
    """Refuse to serve the control API to a network without a token.

    Raises ExposureError when ``host`` is not loopback and no token is configured, or when the
    token is too short to resist guessing.
    """
    if access.token is not None and len(access.token) < MIN_TOKEN_CHARS:
        raise ExposureError(f"The access token must be at least {MIN_TOKEN_CHARS} characters.")
    if access.token is None and not is_loopback_host(host):
        raise ExposureError(
            f"Refusing to serve on {host!r} without an access token: anyone who can reach it "
            f"could drive the avatar. Set {TOKEN_ENV} (e.g. to the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or bind 127.0.0.1."
        )


def _route_access(request: web.Request) -> Access | None:
    """The matched route's level; None when nothing matched (the router answers 404/405)."""
    match_info = request.match_info
    if getattr(match_info, "http_exception", None) is not None:
        return None
    return access_of(match_info.handler)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(provided: str | None, token: str) -> bool:
    """Constant-time comparison (the time taken does not reveal how much of it matched)."""
    if provided is None:
        return False
    return hmac.compare_digest(provided.encode("utf-8"), token.encode("utf-8"))


def _needs_token(level: Access | None, access: AccessConfig) -> bool:
    if access.token is None or level is None or level is Access.PUBLIC:
        return False
    return not (level is Access.VIEWER and access.public_viewers)


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    """The address failed attempts are counted against: the TCP peer's, or with
    ``trust_forwarded_for`` the last ``X-Forwarded-For`` hop (appended by the trusted proxy;
    the earlier hops are whatever the client sent). Falls back to the peer without the header."""
    if trust_forwarded_for:
        hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        last = next((h.strip() for h in reversed(hops) if h.strip()), "")
        if last:
            return last[:_MAX_ADDRESS_CHARS]
    return request.remote or "unknown"


def is_authorized(request: web.Request) -> bool:
    """Whether the request carried the server's token (always, when the server has none).

    False when the access middleware did not see the request (fail closed)."""
    return AUTHORIZED in request and request[AUTHORIZED]


def access_middleware(access: AccessConfig, limiter: AuthFailureLimiter) -> Middleware:
    """Check the bearer token of routes that need it (install inside the errors middleware).

    Raises HttpError 401 (with ``WWW-Authenticate: Bearer``) for a missing or wrong token, and
    429 ``too_many_failures`` (with Retry-After) before any token check for an address that
    ``limiter`` has locked out. A wrong token presented to a route that needs none is counted
    too (the route then serves the request as anonymous); requests that present none to such a
    route (the pages, ``/health`` for load balancers) are neither counted nor refused.
    Unmatched requests pass through, so the router answers 404/405 as usual. Sets
    :data:`AUTHORIZED` on every request it passes on.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = access.token
        level = _route_access(request)
        if token is None or level is None:
            request[AUTHORIZED] = token is None
            return await handler(request)
        needs_token = _needs_token(level, access)
        presented = _bearer(request)
        if not needs_token and presented is None:
            request[AUTHORIZED] = False  # nothing to check, nothing to count
            return await handler(request)
        address = client_address(request, access.trust_forwarded_for)
        locked_s = limiter.locked_for_s(address)
        if locked_s > 0:
            raise HttpError(
                429,
                "too_many_failures",
                f"Too many failed token attempts from this address; try again in "
                f"{math.ceil(locked_s)} s.",
                {"Retry-After": str(math.ceil(locked_s))},
            )
        authorized = token_matches(presented, token)
        if not authorized:
            if limiter.record_failure(address):
                limit = limiter.limit
                log.warning(
                    "%s: %d failed token attempts within %g s, locked out for %g s",
                    address,
                    limit.max_failures,
                    limit.window_s,
                    limit.lockout_s,
                )
            if needs_token:
                raise HttpError(
                    401,
                    "unauthorized",
                    "This endpoint needs the server's token: Authorization: Bearer <token>.",
                    {"WWW-Authenticate": 'Bearer realm="avatar-streamer"'},
                )
        request[AUTHORIZED] = authorized
        return await handler(request)

    return middleware


_PREFLIGHT_MAX_AGE_S = 600


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """CORS for the listed origins ("*": any); install outermost so errors carry it too.

    Answers preflights itself (204 for a listed origin, 403 JSON otherwise) before routing and
    before the token check: browsers send preflights without credentials.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        allowed = bool(origin) and ("*" in origins or origin in origins)
        headers = (
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Expose-Headers": "Location, Retry-After",
                "Vary": "Origin",
            }
            if allowed
            else {}
        )
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                return error_response(
                    403, "cors_refused", "Cross-origin requests from this origin are not allowed."
                )
            return web.Response(
                status=204,
                headers={
                    **headers,
                    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": str(_PREFLIGHT_MAX_AGE_S),
                },
            )
        response = await handler(request)
        if headers and not response.prepared:  # a WebSocket has sent its headers already
            response.headers.update(headers)
        return response

    return middleware


def access_from_args(args: Any, environ: Mapping[str, str]) -> AccessConfig:
    """The access settings of a command line; the token comes from the environment only (a
    command-line flag would show it to every user of ``ps``). Raises ExposureError when the
    bind address is not loopback and no token is set (see :func:`check_exposure`)."""
    token = environ.get(TOKEN_ENV, "").strip() or None
    access = AccessConfig(
        token=token,
        public_viewers=args.public_viewers,
        cors_origins=tuple(args.cors_origin),
        failure_limit=FailureLimit(
            max_failures=args.auth_max_failures,
            window_s=args.auth_window_s,
            lockout_s=args.auth_lockout_s,
        ),
        trust_forwarded_for=args.trust_x_forwarded_for,
    )
    check_exposure(args.host, access)
    return access
