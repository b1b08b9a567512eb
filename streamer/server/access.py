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

CORS is off unless origins are configured (no ``Access-Control-Allow-*`` header is ever sent,
so browsers refuse cross-origin reads and preflighted cross-origin calls).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from streamer.errors import StreamerError
from streamer.server.http_errors import HttpError, error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])

ACCESS_ATTR = "__access_level__"
TOKEN_ENV = "AVATAR_STREAMER_TOKEN"
MIN_TOKEN_CHARS = 16


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


def access_middleware(access: AccessConfig) -> Middleware:
    """Check the bearer token of routes that need it (install inside the errors middleware).

    Raises HttpError 401 (with ``WWW-Authenticate: Bearer``) for a missing or wrong token.
    Unmatched requests pass through, so the router answers 404/405 as usual.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = access.token
        needs_token = token is not None and _needs_token(_route_access(request), access)
        if needs_token and not token_matches(_bearer(request), token or ""):
            raise HttpError(
                401,
                "unauthorized",
                "This endpoint needs the server's token: Authorization: Bearer <token>.",
                {"WWW-Authenticate": 'Bearer realm="avatar-streamer"'},
            )
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
        token=token, public_viewers=args.public_viewers, cors_origins=tuple(args.cors_origin)
    )
    check_exposure(args.host, access)
    return access
