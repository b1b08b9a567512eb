"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.media.runtime import build_runtime
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """The served model (built-in) and the default avatar, loaded and warmed once per run."""
    return build_runtime(REPO / "avatars")


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[tuple[str, web.Application]]:
    """The app with its default configuration, served in process on a free port: (URL, app).
    Modules that need another configuration define their own ``server``."""
    runner, url = await start_app(create_app(ServerConfig(), runtime))
    yield url, runner.app
    await runner.cleanup()
