"""Run the app for a test: in process on a free loopback port (``start_app``)."""

from __future__ import annotations

from aiohttp import web


async def start_app(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 (``port`` 0: a free one); returns the runner and base URL.

    ``await runner.cleanup()`` stops it the way ``avatar-streamer serve`` does on a signal.
    """
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
