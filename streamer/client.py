"""A small asyncio client for agents that drive a channel over its push WebSocket.

.. code-block:: python

    async with await ChannelClient.connect("http://127.0.0.1:8080", "studio", 24_000) as avatar:
        await avatar.push(pcm_s16le_bytes)  # any chunk sizes, faster than real time is fine
        await avatar.end_of_segment()
        finished = await avatar.wait_for("playback_finished")
        print(finished["position_s"], finished["interrupted"])

The server plays pushed audio at real time, reports ``playback_started`` and
``playback_finished`` (``position_s``, ``interrupted``) when the audio leaves with the avatar's
frames, and ``error`` messages for anything it refused (the connection stays open). Owns one
reader task; ``aclose()`` is idempotent and waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from streamer.client_auth import auth_headers, refusal_message, token_from_env
from streamer.tasks import DropOldestQueue, cancel_and_wait

__all__ = ["ChannelClient", "ChannelClientError"]


class ChannelClientError(RuntimeError):
    """The server refused the connection, or an awaited event did not come."""


class ChannelClient:
    """One driver connection to ``/channels/{channel}/audio``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        sample_rate_hz: int,
        owns_http: bool,
        max_events: int = 1024,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._http = http
        self._ws = ws
        self._owns_http = owns_http
        # Bounded: events nobody awaits are dropped oldest first once it is full.
        self._events: DropOldestQueue[dict[str, Any]] = DropOldestQueue(max_events)
        self.errors: list[dict[str, Any]] = []  # every error message the server sent
        self._reader = asyncio.create_task(self._read(), name="channel-client-reader")

    @classmethod
    async def connect(
        cls,
        base_url: str,
        channel: str,
        sample_rate_hz: int = 24_000,
        http: aiohttp.ClientSession | None = None,
        token: str | None = None,
    ) -> ChannelClient:
        """Open the push WebSocket; raises ChannelClientError with the server's reason (e.g.
        409 when the channel already has a driver, 400 for an unsupported sample rate, 401
        without the server's token). ``token`` defaults to ``AVATAR_STREAMER_TOKEN``."""
        session = http or aiohttp.ClientSession()
        url = f"{base_url.rstrip('/')}/channels/{channel}/audio?sample_rate={sample_rate_hz}"
        token = token or token_from_env()
        try:
            ws = await session.ws_connect(url, headers=auth_headers(token))
        except aiohttp.WSServerHandshakeError as exc:
            if http is None:
                await session.close()
            reason = f"{exc.status} {exc.message}"
            if exc.status in (401, 429):
                headers = exc.headers if isinstance(exc.headers, Mapping) else {}
                retry_after = str(headers.get("Retry-After", ""))
                reason += ": " + refusal_message(exc.status, url.split("?")[0], token, retry_after)
            raise ChannelClientError(f"connection refused: {reason}") from exc
        except BaseException:
            if http is None:
                await session.close()
            raise
        return cls(session, ws, sample_rate_hz, owns_http=http is None)

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = msg.json()
            if event.get("type") == "error":
                self.errors.append(event)
            self._events.put_dropping(event)

    async def push(self, pcm: bytes | npt.NDArray[np.int16]) -> None:
        """Send PCM s16le mono at the declared rate (bytes, or an int16 array)."""
        data = pcm if isinstance(pcm, bytes) else np.asarray(pcm, "<i2").tobytes()
        await self._ws.send_bytes(data)

    async def end_of_segment(self) -> None:
        """Mark the end of an utterance: its ``playback_finished`` comes when it has played."""
        await self._ws.send_json({"type": "end_of_segment"})

    async def interrupt(self) -> None:
        """Drop everything queued; the avatar's mouth is at rest within 2 frames."""
        await self._ws.send_json({"type": "interrupt"})

    async def next_event(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next message from the server (events and errors, in order)."""
        try:
            return await asyncio.wait_for(self._events.get(), timeout_s)
        except TimeoutError as exc:
            raise ChannelClientError(f"no event within {timeout_s} s") from exc

    async def wait_for(self, kind: str, timeout_s: float | None = 60.0) -> dict[str, Any]:
        """Skip messages until one of type ``kind`` arrives."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            event = await self.next_event(left)
            if event.get("type") == kind:
                return event

    async def aclose(self) -> None:
        await self._ws.close()
        await cancel_and_wait(self._reader)
        if self._owns_http and not self._http.closed:
            await self._http.close()

    async def __aenter__(self) -> ChannelClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
