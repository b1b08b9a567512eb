"""Run the server for a test: in process on a free loopback port (``start_app``), or as the
real ``avatar-streamer serve`` command in a subprocess (``serve_subprocess``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from streamer.bench.served import free_port
from streamer.server.http.protocol import JsonErrorAppRunner

REPO = Path(__file__).resolve().parents[1]


async def start_app(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 (``port`` 0: a free one) with the runner ``serve`` uses;
    returns the runner and base URL.

    ``await runner.cleanup()`` stops it the way ``avatar-streamer serve`` does on a signal.
    """
    runner = JsonErrorAppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@dataclass(frozen=True)
class Stopped:
    """How a served process ended after a signal."""

    code: int
    took_s: float  # from the signal to the exit
    output: str  # stdout and stderr, together

    def assert_clean(self, within_s: float = 2.0) -> None:
        """Exit status 0 within ``within_s``, nothing logged at ERROR, no traceback."""
        assert self.code == 0, self.output[-2000:]
        assert self.took_s < within_s, self.took_s
        assert "Traceback" not in self.output, self.output[-2000:]
        assert " ERROR " not in self.output, self.output[-2000:]


class ServedProcess:
    def __init__(self, url: str, proc: asyncio.subprocess.Process) -> None:
        self.url = url
        self.proc = proc

    async def wait_ready(self, timeout_s: float) -> None:
        """Until ``/health`` answers 200 (the model and avatar are loaded)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    out = await self.proc.stdout.read()  # type: ignore[union-attr]
                    raise AssertionError(f"serve exited: {out.decode(errors='replace')[-2000:]}")
                try:
                    async with http.get(f"{self.url}/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"serve not ready after {timeout_s} s"
                await asyncio.sleep(0.1)

    async def stop(self, sig: signal.Signals) -> Stopped:
        """Send ``sig`` and wait (at most 10 s) for the process to end."""
        sent_at = time.monotonic()
        self.proc.send_signal(sig)
        output = await asyncio.wait_for(self.proc.stdout.read(), 10)  # type: ignore[union-attr]
        code = await self.proc.wait()
        return Stopped(code, time.monotonic() - sent_at, output.decode(errors="replace"))


@contextlib.asynccontextmanager
async def serve_subprocess(
    *args: str,
    command: tuple[str, ...] = ("streamer", "serve"),
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
) -> AsyncIterator[ServedProcess]:
    """``python -m streamer serve --port <free> *args`` (or another ``command`` module taking
    ``--port``), ready to take calls; killed on exit if still running."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *command,
        "--port",
        str(port),
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    served = ServedProcess(f"http://127.0.0.1:{port}", proc)
    try:
        await served.wait_ready(ready_timeout_s)
        yield served
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
