"""Channel viewers for ``bench viewers``, in this process or spread over client processes.

One asyncio process cannot keep up with fifty aiortc viewers on this machine (it ran at ~90 %
of a core and the kernel dropped ~22,000 of its UDP packets in 20 s), so ``--client-processes
P`` runs the viewers in P worker processes (``python -m streamer.bench.viewer_clients URL N``)
that share the cores with the server as separate processes do on any host.

A worker connects its N light viewers (:mod:`streamer.probe.light_receiver`), prints ``ready``,
reads the measured window ``t0 t1`` (``time.monotonic()`` seconds: one clock for every process
of the machine) from stdin, and once ``t1`` has passed prints one JSON line with each viewer's
frames per second in the window, its own CPU over it and what its light decoders saw; then it
closes its viewers and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from streamer.client_auth import server_session
from streamer.probe.light_receiver import Decoded, light_decoding
from streamer.probe.viewer import WhepViewer

CHANNEL = "bench"
READY = "ready"
START_TIMEOUT_S = 120.0  # connecting tens of viewers on a busy machine


class CountingViewer(WhepViewer):
    """A WHEP viewer that keeps arrival times only (its decoders are light ones)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, CHANNEL, keep_frames=False)
        self.audio_frames = 0

    def on_video(self, frame: av.VideoFrame, at_s: float) -> None:
        self.received.video_at_s.append(at_s)

    def on_audio(self, frame: av.AudioFrame, at_s: float) -> None:
        self.audio_frames += 1


def fps_in(viewers: list[CountingViewer], t0: float, t1: float) -> list[float]:
    """Each viewer's video frames per second received in [t0, t1)."""
    out = []
    for v in viewers:
        at = np.asarray(v.received.video_at_s)
        out.append(float(np.count_nonzero((at >= t0) & (at < t1))) / (t1 - t0))
    return out


def picture(decoded: Decoded) -> str:
    image = decoded.last_keyframe_bgr
    if image is None:
        return "n/a"
    return f"{image.shape[1]}x{image.shape[0]}, std {float(image.std()):.0f}"


async def _worker(url: str, n: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with light_decoding() as decoded:
        async with server_session() as http:
            viewers = [CountingViewer(url) for _ in range(n)]
            try:
                for viewer in viewers:
                    await viewer.connect(http)
                print(READY, flush=True)
                line = await loop.run_in_executor(None, sys.stdin.readline)
                t0, t1 = (float(x) for x in line.split())
                keyframes0, cpu0 = decoded.keyframes, time.process_time()
                await asyncio.sleep(max(0.0, t1 - time.monotonic()))
                cpu_s = time.process_time() - cpu0
                return {
                    "fps": fps_in(viewers, t0, t1),
                    "cpu_s": cpu_s,
                    "keyframes": decoded.keyframes - keyframes0,
                    "picture": picture(decoded),
                }
            finally:
                for viewer in viewers:
                    await viewer.aclose(http)


@dataclass
class ClientProcess:
    """A worker process running some of a row's viewers (the parent's side)."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, url: str, n: int) -> ClientProcess:
        """Start a worker with ``n`` viewers and wait until they are connected."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamer.bench.viewer_clients",
            url,
            str(n),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        client = cls(process)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY:
            await client.aclose()
            raise RuntimeError(f"a client process did not connect its {n} viewers")
        return client

    def measure(self, t0: float, t1: float) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{t0!r} {t1!r}\n".encode())

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        result: dict[str, Any] = json.loads(line)
        await asyncio.wait_for(self.process.wait(), timeout_s)
        return result

    async def aclose(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def split(n: int, parts: int) -> list[int]:
    """``n`` viewers over at most ``parts`` processes, as evenly as possible (none empty)."""
    parts = max(1, min(parts, n))
    return [n // parts + (k < n % parts) for k in range(parts)]


def main(argv: list[str]) -> int:
    url, n = argv[0], int(argv[1])
    result = asyncio.run(_worker(url, n))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
