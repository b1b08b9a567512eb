"""Write BGR frames and mono audio to an MP4 (H.264 + AAC) with PyAV, no ffmpeg subprocess."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt

from streamer.yuv import bgr_to_yuv420

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


class Mp4Writer:
    """H.264 (libx264, yuv420p) video at ``fps`` and AAC mono audio, both from time 0.

    Video frame ``i`` has pts ``i`` in a 1/fps time base; audio pts count samples, so the two
    tracks cannot drift. Call :meth:`write` with frames and the audio of the same span, in
    order, then :meth:`close` (idempotent). Synchronous; one owner. ``threads`` bounds the
    encoder's threads (a server keeps it small so renders leave the live path its CPU).

    Frames go to the encoder as yuv420p made by :func:`streamer.yuv.bgr_to_yuv420`, as the
    live encoder's do.
    """

    def __init__(
        self,
        target: Path | BinaryIO,
        width_px: int,
        height_px: int,
        fps: int = 25,
        audio_rate_hz: int = 48_000,
        crf: int = 20,
        preset: str = "veryfast",
        threads: int = 0,
        audio_bitrate_bps: int = 128_000,
    ) -> None:
        if width_px % 2 or height_px % 2:
            raise ValueError(f"H.264 (yuv420p) needs even sizes, got {width_px}x{height_px}")
        self._container = av.open(str(target) if isinstance(target, Path) else target, "w", "mp4")
        video = self._container.add_stream("libx264", rate=fps)
        video.width = width_px
        video.height = height_px
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": preset}
        video.codec_context.thread_count = threads
        video.codec_context.time_base = fractions.Fraction(1, fps)
        audio = self._container.add_stream("aac", rate=audio_rate_hz)
        audio.layout = "mono"
        audio.bit_rate = audio_bitrate_bps
        self._video = video
        self._audio = audio
        self._audio_rate_hz = audio_rate_hz
        self._fps = fps
        self._frames = 0
        self._samples = 0
        self._closed = False

    @property
    def frames_written(self) -> int:
        return self._frames

    def write(self, frames_bgr: U8, audio: F32) -> None:
        """Append frames ``[B,H,W,3]`` uint8 BGR and mono float32 audio at the audio rate."""
        if audio.shape[0]:
            sound = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, np.float32).reshape(1, -1), format="fltp", layout="mono"
            )
            sound.sample_rate = self._audio_rate_hz
            sound.pts = self._samples
            sound.time_base = fractions.Fraction(1, self._audio_rate_hz)
            self._samples += int(audio.shape[0])
            self._container.mux(self._audio.encode(sound))
        for image in frames_bgr:
            frame = bgr_to_yuv420(
                np.ascontiguousarray(image), self._frames, fractions.Fraction(1, self._fps)
            )
            self._frames += 1
            self._container.mux(self._video.encode(frame))

    def close(self) -> None:
        """Flush both encoders and finish the file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._video.encode(None))
            self._container.mux(self._audio.encode(None))
        finally:
            self._container.close()
