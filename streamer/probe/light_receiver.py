"""Light client peers for capacity benchmarks: they receive everything and decode almost nothing.

A benchmark's client peers share the machine with the server they measure; an aiortc peer
decodes every VP8 frame and every Opus packet it receives, so fifty viewers would measure the
clients. Inside :func:`light_decoding`, every aiortc receiver created in this process gets a
:class:`LightDecoder` instead of its codec's decoder: each encoded frame still crosses the whole
receive path (ICE, SRTP, RTP, depacketising, the jitter buffer, the decoder thread) and comes out
of ``track.recv()`` as a frame with its RTP timestamp, but only a tiny blank one. Content is
still checked: video keyframes (the first, and every one after) are decoded for real, and the
last one is kept in ``last_keyframe_bgr`` of :data:`DECODED`.

This replaces aiortc's module-level ``get_decoder`` as ``aiortc.rtcrtpreceiver`` imported it
(private, checked against the aiortc version ``pyproject.toml`` pins;
``tests/test_probe_light_receiver.py`` fails loudly if it moves). Benchmark processes only:
never in the server.
"""

from __future__ import annotations

import contextlib
import fractions
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48_000)


@dataclass
class Decoded:
    """What every light decoder in this process saw (updated from decoder threads)."""

    video_frames: int = 0
    keyframes: int = 0
    audio_frames: int = 0
    last_keyframe_bgr: npt.NDArray[np.uint8] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


DECODED = Decoded()


def is_vp8_keyframe(data: bytes) -> bool:
    """A VP8 frame's header: bit 0 of the first byte is 0 on a keyframe (RFC 6386, 9.1)."""
    return bool(data) and not data[0] & 1


class LightDecoder:
    """aiortc's decoder contract (``decode(JitterFrame) -> list[Frame]``), decoding only VP8
    keyframes; everything else becomes a blank 16x16 frame (video) or 20 ms of silence."""

    def __init__(self, mime_type: str) -> None:
        self.kind = mime_type.split("/")[0].lower()
        self.codec = mime_type.split("/")[1].lower()
        self._keyframe_decoder = (
            av.CodecContext.create("libvpx", "r") if self.codec == "vp8" else None
        )

    def decode(self, encoded: JitterFrame) -> list[av.VideoFrame | av.AudioFrame]:
        frame: av.VideoFrame | av.AudioFrame
        if self.kind == "audio":
            audio = av.AudioFrame(format="s16", layout="mono", samples=960)
            for plane in audio.planes:
                plane.update(bytes(plane.buffer_size))
            audio.sample_rate, audio.time_base = 48_000, AUDIO_TIME_BASE
            frame = audio
            with DECODED.lock:
                DECODED.audio_frames += 1
        else:
            frame = av.VideoFrame(16, 16, "yuv420p")
            frame.time_base = VIDEO_TIME_BASE
            keyframe = self._keyframe_decoder is not None and is_vp8_keyframe(encoded.data)
            image = self._decode_keyframe(encoded.data) if keyframe else None
            with DECODED.lock:
                DECODED.video_frames += 1
                if image is not None:
                    DECODED.keyframes += 1
                    DECODED.last_keyframe_bgr = image
        frame.pts = encoded.timestamp
        return [frame]

    def _decode_keyframe(self, data: bytes) -> npt.NDArray[np.uint8] | None:
        assert self._keyframe_decoder is not None
        for decoded in self._keyframe_decoder.decode(av.Packet(data)):
            return np.asarray(decoded.to_ndarray(format="bgr24"), np.uint8)
        return None


@contextlib.contextmanager
def light_decoding() -> Iterator[Decoded]:
    """Receivers created inside use :class:`LightDecoder`; yields the counts."""
    original = getattr(rtcrtpreceiver, "get_decoder", None)
    if original is None:
        raise RuntimeError(
            "aiortc.rtcrtpreceiver no longer imports get_decoder: update "
            "streamer/probe/light_receiver.py"
        )

    def get_decoder(codec: Any) -> LightDecoder:
        return LightDecoder(codec.mimeType)

    setattr(rtcrtpreceiver, "get_decoder", get_decoder)  # noqa: B010 (private, see above)
    try:
        yield DECODED
    finally:
        setattr(rtcrtpreceiver, "get_decoder", original)  # noqa: B010
