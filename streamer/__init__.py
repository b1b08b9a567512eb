"""avatar-streamer: live speech in, a lip-synced talking avatar out over WebRTC.

The public names below are a stable interface that other tools call; everything else is
implementation and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamer.errors import AudioFormatError, AudioGoneError, StreamerError

if TYPE_CHECKING:
    from streamer.audio.ingest import AudioChunk, AudioIngest, pcm_to_frame
    from streamer.audio.mel import MelExtractor, compute_mel, window_start_column
    from streamer.audio.ring import SampleRing

# The one version string: the build reads it ([tool.hatch.version]); CHANGELOG.md says what changed.
__version__ = "0.1.0"

__all__ = [
    "AudioChunk",
    "AudioFormatError",
    "AudioGoneError",
    "AudioIngest",
    "MelExtractor",
    "SampleRing",
    "StreamerError",
    "__version__",
    "compute_mel",
    "pcm_to_frame",
    "window_start_column",
]

# Imported on first use (numpy, PyAV): the command line starts without them.
_LAZY = {
    "AudioChunk": "streamer.audio.ingest",
    "AudioIngest": "streamer.audio.ingest",
    "pcm_to_frame": "streamer.audio.ingest",
    "MelExtractor": "streamer.audio.mel",
    "compute_mel": "streamer.audio.mel",
    "window_start_column": "streamer.audio.mel",
    "SampleRing": "streamer.audio.ring",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
