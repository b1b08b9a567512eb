"""The agent push WebSocket's driver: PCM and control messages in, events and errors out
(``GET /channels/{name}/audio``; the protocol is in docs/agents.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from streamer.audio.ingest import AudioIngest, pcm_to_frame
from streamer.playout.pipeline import INPUT_RATE_HZ
from streamer.playout.queue import AudioQueueFullError, PlaybackEvent
from streamer.server.channels.channel import Channel
from streamer.tasks import DropOldestQueue, cancel_and_wait

log = logging.getLogger(__name__)

# Sample rates a pushing driver may declare (what TTS engines and sound cards produce).
PUSH_SAMPLE_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class PushDriver:
    """One WebSocket driver: PCM and control messages in, events and errors out.

    Owns its sender task (the only writer to the socket) and a bounded outgoing queue: when a
    client stops reading, the oldest pending message is dropped (logged).
    """

    def __init__(self, channel: Channel, ws: web.WebSocketResponse, sample_rate_hz: int) -> None:
        self.channel = channel
        self.ws = ws
        self.sample_rate_hz = sample_rate_hz
        self._ingest = AudioIngest(INPUT_RATE_HZ)
        self._outbox: DropOldestQueue[dict[str, object]] = DropOldestQueue(
            channel.config.max_pending_events
        )

    def on_event(self, event: PlaybackEvent) -> None:
        self._send(event.as_json())

    def _send(self, message: dict[str, object]) -> None:
        for lost in self._outbox.put_dropping(message):
            log.warning("channel %s: driver not reading, dropped %s", self.channel.name, lost)

    def _error(self, code: str, message: str) -> None:
        self._send({"type": "error", "error": code, "message": message})

    async def serve(self, request: web.Request) -> None:
        """Answer the upgrade, then read messages until the client or the server hangs up."""
        await self.ws.prepare(request)
        name = f"channel-{self.channel.name}-ws-send"
        sender = asyncio.create_task(self._send_loop(), name=name)
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    self.on_binary(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.on_text(msg.data)
        finally:
            await cancel_and_wait(sender)

    async def _send_loop(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                await self.ws.send_json(message)
            except ConnectionError:
                return  # the client went away; the receive loop ends too

    async def on_revoke(self) -> None:
        """The channel was deleted (or the server is stopping): say so and hang up."""
        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"channel closed")

    def on_binary(self, data: bytes) -> None:
        if len(data) % 2:
            self._error("bad_pcm", "Binary messages carry s16le samples: an even byte count.")
            return
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        if pcm.shape[0] == 0:
            return
        chunk = self._ingest.push(pcm_to_frame(pcm, self.sample_rate_hz))
        self._push(chunk.samples)

    def _push(self, samples: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        try:
            self.channel.push(samples)
        except AudioQueueFullError as exc:
            self._error(exc.code, str(exc))

    def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self._error("bad_message", "Text messages must be JSON objects with a 'type'.")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "interrupt":
            self._ingest = AudioIngest(INPUT_RATE_HZ)  # drop what the resampler holds too
            self.channel.interrupt()
        elif kind == "end_of_segment":
            tail = self._ingest.flush()
            self._push(tail.samples)
            self.channel.end_segment()
        else:
            self._error(
                "unknown_message",
                f"Unknown message type {kind!r}; expected 'interrupt' or 'end_of_segment'.",
            )
