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
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import aiohttp
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


@dataclass
class Watched:
    """What a group of viewers saw in the measured window."""

    fps: list[float]  # each viewer's video frames per second
    cpu_s: float  # the CPU its process(es) used in the window
    keyframes: int  # video keyframes its light decoders decoded in the window
    picture: str  # the last keyframe decoded, as :func:`picture` describes it


class LocalViewers:
    """``n`` viewers in this process. Connect, :meth:`measure` at ``t0``, then :meth:`result`
    once ``t1`` has passed; :meth:`aclose` always."""

    def __init__(self, url: str, n: int, decoded: Decoded) -> None:
        self.viewers = [CountingViewer(url) for _ in range(n)]
        self._decoded = decoded
        self._window = (0.0, 0.0)
        self._keyframes0, self._cpu0 = 0, 0.0

    async def connect(self, http: aiohttp.ClientSession) -> None:
        for viewer in self.viewers:
            await viewer.connect(http)

    def measure(self, t0: float, t1: float) -> None:
        self._window = (t0, t1)
        self._keyframes0, self._cpu0 = self._decoded.keyframes, time.process_time()

    async def result(self) -> Watched:
        return Watched(
            fps=fps_in(self.viewers, *self._window),
            cpu_s=time.process_time() - self._cpu0,
            keyframes=self._decoded.keyframes - self._keyframes0,
            picture=picture(self._decoded),
        )

    async def aclose(self, http: aiohttp.ClientSession) -> None:
        for viewer in self.viewers:
            await viewer.aclose(http)


async def _worker(url: str, n: int) -> Watched:
    loop = asyncio.get_running_loop()
    with light_decoding() as decoded:
        async with server_session() as http:
            viewers = LocalViewers(url, n, decoded)
            try:
                await viewers.connect(http)
                print(READY, flush=True)
                line = await loop.run_in_executor(None, sys.stdin.readline)
                t0, t1 = (float(x) for x in line.split())
                viewers.measure(t0, t1)
                await asyncio.sleep(max(0.0, t1 - time.monotonic()))
                return await viewers.result()
            finally:
                await viewers.aclose(http)


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

    async def result(self, timeout_s: float) -> Watched:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        watched = Watched(**json.loads(line))
        await asyncio.wait_for(self.process.wait(), timeout_s)
        return watched

    async def aclose(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class WorkerViewers:
    """``n`` viewers spread over at most ``processes`` worker processes; the same steps as
    :class:`LocalViewers`."""

    def __init__(self, url: str, n: int, processes: int) -> None:
        self._url, self._shares = url, split(n, processes)
        self._clients: list[ClientProcess] = []

    async def connect(self, http: aiohttp.ClientSession) -> None:
        for share in self._shares:
            self._clients.append(await ClientProcess.start(self._url, share))

    def measure(self, t0: float, t1: float) -> None:
        for client in self._clients:
            client.measure(t0, t1)

    async def result(self) -> Watched:
        parts = [await client.result(timeout_s=60.0) for client in self._clients]
        return Watched(
            fps=[f for w in parts for f in w.fps],
            cpu_s=sum(w.cpu_s for w in parts),
            keyframes=sum(w.keyframes for w in parts),
            picture=parts[-1].picture,
        )

    async def aclose(self, http: aiohttp.ClientSession) -> None:
        for client in self._clients:
            await client.aclose()


def split(n: int, parts: int) -> list[int]:
    """``n`` viewers over at most ``parts`` processes, as evenly as possible (none empty)."""
    parts = max(1, min(parts, n))
    return [n // parts + (k < n % parts) for k in range(parts)]


def main(argv: list[str]) -> int:
    url, n = argv[0], int(argv[1])
    watched = asyncio.run(_worker(url, n))
    print(json.dumps(dataclasses.asdict(watched)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
