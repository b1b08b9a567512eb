"""The client side of the server's token: every client here that calls a server sends it.

The token comes from ``AVATAR_STREAMER_TOKEN``, the environment only, as for the server (a
command-line flag would show it to every user of ``ps``). When it is set, requests carry
``Authorization: Bearer <token>``; a refusal (401, or 429 after too many failed attempts)
becomes :class:`TokenRefusedError`, one sentence naming the variable.

.. code-block:: python

    async with server_session() as http:  # the header on every request, refusals raised
        async with http.get(f"{url}/metrics") as r:
            ...
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from streamer.errors import StreamerError
from streamer.tokens import TOKEN_ENV

__all__ = [
    "TokenRefusedError",
    "auth_headers",
    "raise_for_token",
    "refusal_message",
    "server_session",
    "token_from_env",
]


class TokenRefusedError(StreamerError):
    """The server refused our token, or wanted one we did not have."""

    code = "unauthorized"


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The token in ``AVATAR_STREAMER_TOKEN`` (``os.environ`` by default); None when unset."""
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV, "").strip() or None


def auth_headers(token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or no header without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def refusal_message(status: int, url: str, token: str | None, retry_after: str = "") -> str:
    """The one sentence for a refused token (status 401 or 429), naming the variable."""
    if status == 429:
        wait = f" for {retry_after} s" if retry_after else " for a while"
        return (
            f"{url} refuses this address{wait} after too many failed token attempts: "
            f"check {TOKEN_ENV}."
        )
    if token is None:
        return f"{url} needs the server's token: set {TOKEN_ENV} to it."
    return f"{url} refused the token in {TOKEN_ENV}: set it to the server's token."


def raise_for_token(token: str | None) -> Callable[[aiohttp.ClientResponse], Awaitable[None]]:
    """A ``raise_for_status`` callable for aiohttp that turns a 401 or 429 into
    TokenRefusedError (its message says whether ``token`` was missing or wrong); any other
    status is left to the caller."""

    async def check(response: aiohttp.ClientResponse) -> None:
        if response.status in (401, 429):
            url = str(response.url.with_query(None))
            retry_after = response.headers.get("Retry-After", "")
            response.release()
            raise TokenRefusedError(refusal_message(response.status, url, token, retry_after))

    return check


def server_session(
    environ: Mapping[str, str] | None = None, **kwargs: Any
) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` for calling a server: the token from ``environ``
    (``os.environ`` by default) on every request, 401/429 raised as TokenRefusedError.
    ``kwargs`` go to the session (its own ``headers`` are kept, ours added)."""
    token = token_from_env(environ)
    headers = {**kwargs.pop("headers", {}), **auth_headers(token)}
    return aiohttp.ClientSession(headers=headers, raise_for_status=raise_for_token(token), **kwargs)
