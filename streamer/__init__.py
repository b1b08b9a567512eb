"""avatar-streamer: live speech in, a lip-synced talking avatar out over WebRTC.

The public names below are a stable interface that other tools call; everything else is
implementation and may change.
"""

from streamer.audio.ingest import AudioChunk, AudioIngest, pcm_to_frame
from streamer.audio.mel import MelExtractor, compute_mel, window_start_column
from streamer.audio.ring import SampleRing
from streamer.errors import AudioFormatError, AudioGoneError, StreamerError

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
