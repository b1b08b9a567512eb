"""The server's own video encoder: frames in, compressed packets out, settings it chooses.

aiortc encodes each sender's frames itself, with settings nobody can change (libvpx at speed 6
with temporal noise filtering, meant for camera video; libx264 at FFmpeg's default preset) and
one encoder per sender, so every viewer of one picture pays for its own encode. A sender given
:class:`av.Packet` instead of frames only packetises them (``../shared/notes/media-clock.md``,
section 2). So the server encodes here, once per picture:

- a call's video track encodes its own frames (:class:`~streamer.server.media.tracks.
  EncodingVideoTrack`);
- a channel encodes each frame once and fans the packets out to all its viewers
  (:class:`~streamer.server.media.tracks.ChannelVideo`).

Settings for a synthetic face rather than a camera: no noise filter (there is no sensor noise;
the filter cost 0.6 ms a frame here and blurred the mouth), libvpx at realtime speed 10, the
colour conversion by OpenCV (:mod:`streamer.yuv`). ``bench encoder`` measures speed and
quality (PSNR) against aiortc's settings.

Synchronous and not thread-safe: one caller at a time (the tracks run it in an executor).
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import av
import numpy as np
import numpy.typing as npt

from streamer.yuv import bgr_to_yuv420

if TYPE_CHECKING:
    Packet: TypeAlias = av.Packet[Any]  # generic in PyAV's stubs only

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
CODECS = ("vp8", "h264")
# aiortc's starting targets (its Vp8Encoder / H264Encoder): a sender's REMB moves them later.
DEFAULT_BITRATE_BPS = {"vp8": 500_000, "h264": 1_000_000}
# A new target within this share of the current one is ignored: every change reopens the
# encoder, and so costs a keyframe (aiortc's rule too).
BITRATE_DEADBAND = 0.1
# Viewers' estimates are followed at most this often, for the same reason: an estimate that
# swings under load would otherwise send one keyframe after another.
BITRATE_HOLD_S = 5.0


@dataclass(frozen=True, kw_only=True)
class VideoEncoderSettings:
    """How the server encodes video. ``vp8_speed``: libvpx ``cpu-used`` in realtime mode,
    0 (best) to 16 (fastest); aiortc uses 6. ``keyframe_interval_frames``: a keyframe at least
    this often even when no one asks (a safety net; viewers ask with PLI when they need one).
    """

    codec: str = "vp8"
    bitrate_bps: int | None = None  # None: the codec's default above
    vp8_speed: int = 10
    h264_preset: str = "veryfast"
    threads: int = 1
    # 2 min at 25 fps, as aiortc: a keyframe costs a visible dip under the constant bitrate
    # (27.9 dB against 31-34 around it, `bench encoder`), and viewers ask with PLI anyway.
    keyframe_interval_frames: int = 3000

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"video codec must be one of {CODECS}, not {self.codec!r}")
        if not 0 <= self.vp8_speed <= 16:
            raise ValueError("vp8_speed is libvpx cpu-used: 0..16")

    @property
    def start_bitrate_bps(self) -> int:
        return self.bitrate_bps or DEFAULT_BITRATE_BPS[self.codec]


class VideoEncoder:
    """One encoder: BGR frames in, packets (pts in 90 kHz units) out, one per frame."""

    def __init__(self, settings: VideoEncoderSettings) -> None:
        self.settings = settings
        self.bitrate_bps = settings.start_bitrate_bps
        self._context: av.VideoCodecContext | None = None
        self._since_keyframe = 0
        self._followed_at_s = -float("inf")
        self.bitrate_hold_s = BITRATE_HOLD_S
        self.frames = 0
        self.keyframes = 0
        self.reopens = 0

    def close(self) -> None:
        """Free the codec's buffers now (a later ``encode`` would open a new one). Its owner
        calls this when it stops: peers live in reference cycles, so waiting for the owner to
        be collected would hold several MB per ended call until a full collection."""
        self._context = None

    def follow(self, estimate_bps: int | None, now_s: float) -> bool:
        """Follow a viewer's estimate (None: none yet) at most every ``bitrate_hold_s``, via
        :meth:`set_bitrate`; True if the bitrate changed."""
        if estimate_bps is None or now_s - self._followed_at_s < self.bitrate_hold_s:
            return False
        self._followed_at_s = now_s
        return self.set_bitrate(estimate_bps)

    def set_bitrate(self, bitrate_bps: int) -> bool:
        """Follow a new target; True if it changed (the next frame is then a keyframe)."""
        if abs(bitrate_bps - self.bitrate_bps) <= BITRATE_DEADBAND * self.bitrate_bps:
            return False
        self.bitrate_bps = bitrate_bps
        self._context = None
        return True

    def encode(
        self, image_bgr: npt.NDArray[np.uint8], pts_90khz: int, keyframe: bool = False
    ) -> list[Packet]:
        frame = bgr_to_yuv420(image_bgr, pts_90khz, VIDEO_TIME_BASE)
        if self._context is not None and (
            frame.width != self._context.width or frame.height != self._context.height
        ):
            self._context = None
        if self._context is None:
            self._context = self._open(frame.width, frame.height)
            keyframe = True
            self.reopens += 1
        if keyframe or self._since_keyframe >= self.settings.keyframe_interval_frames - 1:
            frame.pict_type = av.video.frame.PictureType.I
        packets = list(self._context.encode(frame))
        self.frames += 1
        self._since_keyframe += 1
        for packet in packets:
            packet.pts, packet.time_base = pts_90khz, VIDEO_TIME_BASE
            if packet.is_keyframe:
                self.keyframes += 1
                self._since_keyframe = 0
        return packets

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        s = self.settings
        bitrate = self.bitrate_bps
        if s.codec == "vp8":
            context = av.CodecContext.create("libvpx", "w")
            # aiortc's realtime CBR (its Vp8Encoder), without the noise filter, at our speed.
            context.options = {
                "bufsize": str(bitrate),
                "cpu-used": str(-s.vp8_speed),  # negative: exactly this speed
                "deadline": "realtime",
                "lag-in-frames": "0",
                "minrate": str(bitrate),
                "maxrate": str(bitrate),
                "noise-sensitivity": "0",
                "overshoot-pct": "15",
                "partitions": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
            }
            context.qmin, context.qmax = 2, 56
        else:
            context = av.CodecContext.create("libx264", "w")
            # What aiortc offers (42e01f: Constrained Baseline, level 3.1), Annex B in-band.
            context.options = {
                "level": "31",
                "tune": "zerolatency",
                "preset": s.h264_preset,
            }
            context.profile = "Baseline"
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.bit_rate = bitrate
        context.time_base = VIDEO_TIME_BASE
        context.framerate = fractions.Fraction(25, 1)
        context.gop_size = s.keyframe_interval_frames
        context.thread_count = s.threads
        context.open()
        return context


OPUS_RATE_HZ = 48_000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE_HZ)


class OpusEncoder:
    """Opus as WebRTC sends it, from the playout's 48 kHz mono s16 frames: one packet per
    20 ms frame, its pts continuous in RTP time (as aiortc's own encoder keeps it).

    aiortc's sender, handed frames, resamples each to stereo and encodes both channels of the
    same mono voice; handed these packets it only packetises them. Packets go without the
    audio-level header extension (aiortc computes it only from frames).
    """

    def __init__(self, bitrate_bps: int = 64_000) -> None:
        self._bitrate_bps = bitrate_bps
        self._context: av.AudioCodecContext | None = None
        self._next_pts = 0
        self.frames = 0

    def encode(self, frame: av.AudioFrame) -> list[Packet]:
        if self._context is None:
            self._context = self._open()
        self.frames += 1
        packets = self._context.encode(frame)
        for packet in packets:
            packet.pts, packet.time_base = self._next_pts, OPUS_TIME_BASE
            self._next_pts += frame.samples
        return packets

    def close(self) -> None:
        self._context = None

    def _open(self) -> av.AudioCodecContext:
        context = av.CodecContext.create("libopus", "w")
        context.bit_rate = self._bitrate_bps
        context.format = "s16"
        context.layout = "mono"
        context.sample_rate = OPUS_RATE_HZ
        context.time_base = OPUS_TIME_BASE
        context.options = {"application": "voip", "frame_duration": "20"}
        context.open()
        return context
