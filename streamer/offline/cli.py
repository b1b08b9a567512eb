"""``avatar-streamer render AUDIO --avatar NAME [--model PATH] -o out.mp4``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from streamer.errors import StreamerError
from streamer.resources import (
    add_avatars_dir_argument,
    add_model_arguments,
    avatars_dir,
)

if TYPE_CHECKING:
    from streamer.engine import EngineOptions
    from streamer.offline.render import FrameRenderer, Renderer


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("render", help="render an audio file to a lip-synced MP4")
    p.add_argument("audio", type=Path, help="any audio file PyAV (FFmpeg) reads")
    p.add_argument("-o", "--output", type=Path, required=True, help="the MP4 to write")
    p.add_argument("--avatar", default="default")
    add_avatars_dir_argument(p)
    add_model_arguments(p, live=False)
    p.add_argument("--batch", type=int, default=16, help="frames per model call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


class ProgressBar:
    """A one-line progress bar with frames per second and ETA, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, frames_done: int, frames_total: int) -> None:
        now = time.monotonic()
        if frames_done < frames_total and now - self._drawn < 0.1:
            return
        self._drawn = now
        elapsed_s = max(1e-6, now - self._started)
        fps = frames_done / elapsed_s
        eta_s = (frames_total - frames_done) / fps if fps > 0 else float("inf")
        filled = round(self._width * frames_done / max(1, frames_total))
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(
            f"\r[{bar}] {frames_done}/{frames_total} frames  {fps:6.1f} fps  "
            f"{fps / 25:5.1f}x real time  ETA {eta_s:5.1f} s"
        )
        if frames_done >= frames_total:
            self._stream.write("\n")
        self._stream.flush()


def load_frame_renderer(
    model: Path | None, avatar: str, avatars_dir: Path, options: EngineOptions | None = None
) -> FrameRenderer:
    """A Wav2Lip-contract ONNX model (default: the built-in one), loaded and warmed, with the
    avatar's crops for it. Blocking."""
    from streamer.avatar import open_avatar
    from streamer.engine import EngineOptions, LipSyncEngine
    from streamer.offline.render import FrameRenderer

    engine = LipSyncEngine(model, options or EngineOptions())
    loaded = open_avatar(avatar, avatars_dir)
    crops = loaded.crops(engine.info.crop, engine.info.face_size_px)
    return FrameRenderer(engine, loaded, crops)


def load_renderer(
    model: Path | None, avatar: str, avatars_dir: Path, options: EngineOptions | None = None
) -> Renderer:
    """The renderer for ``model``: a MuseTalk model folder (its engine, and the avatar's
    cached latents, computed on first use) or a Wav2Lip-contract ONNX file. Blocking."""
    from streamer.avatar import open_avatar
    from streamer.engine.musetalk.manifest import is_model_folder

    if model is not None and is_model_folder(model):
        from streamer.engine.musetalk.engine import MuseTalkEngine
        from streamer.offline.musetalk import MuseTalkRenderer

        return MuseTalkRenderer(MuseTalkEngine(model, options), open_avatar(avatar, avatars_dir))
    return load_frame_renderer(model, avatar, avatars_dir, options)


def run(args: argparse.Namespace) -> int:
    from streamer.engine import EngineOptions
    from streamer.offline.audio import decode_audio
    from streamer.offline.render import RenderOptions, render_mp4

    if not args.audio.is_file():
        raise StreamerError(f"no such audio file: {args.audio}")
    renderer = load_renderer(
        args.model,
        args.avatar,
        avatars_dir(args.avatars_dir),
        EngineOptions.from_flags(args.providers, args.fp16),
    )
    audio = decode_audio(args.audio)
    started = time.monotonic()
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    plan = render_mp4(
        audio,
        renderer,
        args.output,
        RenderOptions(batch_frames=args.batch),
        progress,
    )
    took_s = time.monotonic() - started
    print(
        f"{args.output}: {len(plan)} frames ({plan.duration_s:.2f} s) in {took_s:.2f} s, "
        f"{plan.duration_s / max(took_s, 1e-9):.1f}x real time",
        file=sys.stderr,
    )
    return 0
