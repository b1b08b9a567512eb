"""Shared test fixtures."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.media.runtime import build_runtime
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _heap_frozen_for_realtime(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test against the wall clock runs with the heap as it stood frozen out of the
    collector. Its server shares this process, where every test module is imported: there a
    full collection scans that whole heap and stopped everything for up to 384 ms (measured
    with a gc.callbacks timer, ``pytest tests/ -k fuzz``), a stall of pytest's, not of the
    server's (``serve``'s own collections stayed under 40 ms through a 2-hour soak)."""
    if request.node.get_closest_marker("realtime") is None:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


@pytest.fixture(scope="session")
def musetalk_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MuseTalk model folder with the tiny random weights (seed 0), exported once per run by
    ``scripts/export_musetalk.py`` (about 30 s). Skips where the export extra is missing."""
    for module in ("torch", "diffusers", "transformers"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("musetalk") / "musetalk-random-tiny"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "export_musetalk.py"),
            "--random-weights",
            "--size",
            "tiny",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def small_avatar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An avatars folder with "small": the default portrait prepared with a 4-frame idle loop
    (the tiny MuseTalk VAE encoder costs ~0.2 s a frame on this CPU). Copy it before caching
    latents into it where a test needs a fresh avatar."""
    from streamer.avatar.prepare import PrepareOptions, prepare_avatar

    root = tmp_path_factory.mktemp("avatars")
    prepare_avatar(
        REPO / "avatars" / "default" / "source.jpg",
        "small",
        root,
        PrepareOptions(idle_seconds=0.16, locator="haar"),
    )
    return root
