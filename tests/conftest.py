"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.server.app import Runtime
from streamer.server.runtime import build_runtime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """The served model (built-in) and the default avatar, loaded and warmed once per run."""
    return build_runtime(REPO / "avatars")
