"""Offline render: an audio file in, a lip-synced MP4 out, as fast as the hardware allows.

Pure and synchronous (no asyncio): the same features, model and compositor as the live path,
run in large batches. The ``render`` command and ``POST /render`` are thin shells over it.
"""

from streamer.offline.audio import DecodedAudio, decode_audio
from streamer.offline.mp4 import Mp4Writer
from streamer.offline.render import (
    FramePlan,
    FrameRenderer,
    Progress,
    RenderOptions,
    plan_frames,
    render_mp4,
)

__all__ = [
    "DecodedAudio",
    "FramePlan",
    "FrameRenderer",
    "Mp4Writer",
    "Progress",
    "RenderOptions",
    "decode_audio",
    "plan_frames",
    "render_mp4",
]
