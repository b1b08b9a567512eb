"""A real server for the benchmarks that measure one: ``avatar-streamer serve`` in its own process.

Its own process, so its CPU time (:func:`cpu_s`, from /proc) is its own and the client peers'
work is not counted in it. Started from the working directory (``python -m streamer``), so a
benchmark run from another tree serves that tree's code (``scripts/bench_against.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

import aiohttp


@dataclass(frozen=True)
class Served:
    url: str
    pid: int
    health: dict[str, Any]  # its first /health answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def serve(http: aiohttp.ClientSession, *args: str) -> AsyncIterator[Served]:
    """``serve --port <free> *args``, once it answers /health; stopped with SIGINT after."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamer", "serve", "--port", str(port), *args]
    # The server's log goes to a file: a pipe nobody reads would block it once full.
    with tempfile.TemporaryFile() as log:
        server = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            health = await _wait_healthy(http, url, server, log)
            yield Served(url, server.pid, health)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(server.wait(), 10)
            except TimeoutError:
                server.kill()
                await server.wait()


async def _wait_healthy(
    http: aiohttp.ClientSession, url: str, server: asyncio.subprocess.Process, log: IO[bytes]
) -> dict[str, Any]:
    for _ in range(600):  # the model and avatar load first (seconds on a first run)
        if server.returncode is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read().decode()[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/health") as r:
                if r.status == 200:
                    health: dict[str, Any] = await r.json()
                    return health
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not answer /health within 60 s")
