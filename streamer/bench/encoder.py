"""``avatar-streamer bench encoder``: what one video frame costs to encode, and how it looks.

The frames are the server's own: the soak's spoken clip rendered on the default avatar with the
built-in model (512x512, the mouth moving with the speech, idle frames between phrases). Each
case takes every frame from a BGR image to RTP payloads, the way a sender gets them:

- ``aiortc``: aiortc's own encoder (``Vp8Encoder`` / ``H264Encoder.encode``, its colour
  conversion and settings): what every sender did before the server encoded itself;
- ``server``: :class:`~streamer.server.media.encoder.VideoEncoder` (OpenCV colour conversion,
  the server's settings), then aiortc's ``pack`` (packetising only), as a sender now does.

Cases run in turns (``--rounds``), each round every case once over all the frames, so the
machine's noise falls on all of them alike; the figures are the median round. Quality: PSNR of
the decoded payloads against the rendered frames, and the bitrate they used.
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from streamer.probe.report import write_section
from streamer.resources import add_avatars_dir_argument, avatars_dir

U8 = npt.NDArray[np.uint8]
FPS = 25
PTS_PER_FRAME = 3600


@dataclass(frozen=True)
class Case:
    name: str
    codec: str
    server: bool  # False: aiortc's own encoder
    vp8_speed: int = 10


CASES = (
    Case("aiortc VP8 (before)", "vp8", server=False),
    Case("server VP8, speed 10 (default)", "vp8", server=True),
    Case("server VP8, speed 6 (aiortc's speed, no noise filter)", "vp8", True, vp8_speed=6),
    Case("server VP8, speed 16", "vp8", server=True, vp8_speed=16),
    Case("aiortc H264 (before)", "h264", server=False),
    Case("server H264, veryfast (default)", "h264", server=True),
)


def register(kinds: Any) -> None:
    parser = kinds.add_parser("encoder", help="video encode ms/frame and PSNR, server vs aiortc")
    add_avatars_dir_argument(parser, "--root")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(func=_run_args)


def _run_args(args: argparse.Namespace) -> int:
    return run(avatars_dir(args.avatars_dir), args.rounds, record=not args.no_record)


def rendered_frames(root: Path) -> U8:
    """The soak clip rendered on the default avatar: BGR [N, H, W, 3]."""
    from streamer.offline.audio import decode_audio
    from streamer.offline.cli import load_frame_renderer
    from streamer.offline.render import RenderOptions, plan_frames
    from streamer.probe.clip import make_clip, wav_bytes

    audio = decode_audio(io.BytesIO(wav_bytes(make_clip(None).pcm)))
    renderer = load_frame_renderer(None, "default", root)
    plan = plan_frames(audio.pcm_16k, renderer.avatar.frame_count, 0, RenderOptions())
    return np.concatenate(
        [renderer.render(plan, s, min(len(plan), s + 32)) for s in range(0, len(plan), 32)]
    )


def encode_all(case: Case, frames: U8) -> tuple[list[float], list[list[bytes]]]:
    """Seconds per frame from image to payloads, and each frame's payloads."""
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from streamer.server.media.encoder import VIDEO_TIME_BASE, VideoEncoder, VideoEncoderSettings

    mime = {"vp8": "video/VP8", "h264": "video/H264"}[case.codec]
    packer = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90_000))
    settings = VideoEncoderSettings(codec=case.codec, vp8_speed=case.vp8_speed)
    ours = VideoEncoder(settings) if case.server else None
    times: list[float] = []
    payloads: list[list[bytes]] = []
    for i, image in enumerate(frames):
        t = time.perf_counter()
        if ours is None:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i * PTS_PER_FRAME, VIDEO_TIME_BASE
            out, _ = packer.encode(frame)
        else:
            out = []
            for packet in ours.encode(image, i * PTS_PER_FRAME):
                out += packer.pack(packet)[0]
        times.append(time.perf_counter() - t)
        payloads.append(out)
    return times, payloads


def quality(case: Case, frames: U8, payloads: list[list[bytes]]) -> tuple[float, float, float]:
    """(mean PSNR dB, lowest frame's PSNR dB, kbps) of the payloads decoded."""
    from aiortc.codecs import depayload
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    mime = {"vp8": "video/VP8", "h264": "video/H264"}[case.codec]
    codec = RTCRtpCodecParameters(mimeType=mime, clockRate=90_000)
    decoder = av.CodecContext.create("libvpx" if case.codec == "vp8" else "h264", "r")
    psnr: list[float] = []
    size = 0
    for image, frame_payloads in zip(frames, payloads, strict=True):
        data = b"".join(depayload(codec, p) for p in frame_payloads)
        size += len(data)
        for decoded in decoder.decode(av.Packet(data)):
            got = decoded.to_ndarray(format="bgr24").astype(np.float64)
            mse = float(((got - image) ** 2).mean())
            psnr.append(10 * np.log10(255**2 / max(mse, 1e-9)))
    kbps = size * 8 / (len(frames) / FPS) / 1e3
    return float(np.mean(psnr)), float(np.min(psnr)), kbps


def run(root: Path, rounds: int, record: bool) -> int:
    frames = rendered_frames(root)
    per_round: dict[str, list[tuple[float, float]]] = {c.name: [] for c in CASES}
    last_payloads: dict[str, list[list[bytes]]] = {}
    for _ in range(rounds):
        for case in CASES:
            times, payloads = encode_all(case, frames)
            ms = np.asarray(times[5:]) * 1e3  # the first frames open the encoder
            per_round[case.name].append((float(ms.mean()), float(np.percentile(ms, 95))))
            last_payloads[case.name] = payloads
    rows = []
    baseline: dict[str, float] = {}
    for case in CASES:
        mean_ms, p95_ms = sorted(per_round[case.name])[len(per_round[case.name]) // 2]
        if not case.server:
            baseline[case.codec] = mean_ms
        psnr_mean, psnr_min, kbps = quality(case, frames, last_payloads[case.name])
        rows.append(
            f"| {case.name} | {mean_ms:.2f} | {p95_ms:.2f} | "
            f"{mean_ms / baseline[case.codec]:.2f} | {psnr_mean:.2f} | {psnr_min:.2f} | "
            f"{kbps:.0f} |"
        )
    h, w = frames.shape[1:3]
    body = (
        f"{len(frames)} frames of {w}x{h} (the soak clip rendered on the default avatar, "
        f"built-in model), {rounds} rounds in turns, median round; one thread per encoder.\n\n"
        "- ms/frame: BGR image to RTP payloads (colour conversion, encode, packetise).\n"
        "- vs aiortc: the mean against aiortc's own encoder of the same codec, same run.\n"
        "- PSNR: the payloads decoded against the rendered frames (BGR, all channels).\n\n"
        "| encoder | mean ms/frame | p95 | vs aiortc | PSNR dB (mean) | PSNR dB (worst frame) "
        "| kbps |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(body)
    if record:
        write_section(
            "encoder",
            "Video encoder: ms per frame and quality, the server's against aiortc's",
            f"avatar-streamer bench encoder --rounds {rounds}",
            body,
        )
    return 0
