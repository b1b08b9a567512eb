"""``avatar-streamer prepare`` and ``avatar-streamer avatars``: the avatar cache from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from streamer.avatar.cache import NOT_PREPARED, list_avatars
from streamer.avatar.prepare import PrepareOptions, PrepareProgress, prepare_avatar
from streamer.resources import (
    DEFAULT_AVATAR,
    add_avatars_dir_argument,
    avatars_dir,
    avatars_dir_and_origin,
    default_avatar_source,
)


class ProgressLine:
    """A one-line progress bar on a terminal (frames done, frames per second, ETA); on a
    non-terminal stream, one line every ``every_s`` seconds instead of carriage returns."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, every_s: float = 2.0) -> None:
        self._stream = stream
        self._width = width
        self._tty = stream.isatty()
        self._every_s = every_s
        self._last_s = -1e9
        self._drawn = False

    def __call__(self, p: PrepareProgress) -> None:
        if not self._tty and p.elapsed_s - self._last_s < self._every_s:
            return
        self._last_s = p.elapsed_s
        rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        if p.total:
            frac = min(1.0, p.done / p.total)
            filled = int(frac * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            eta = f"ETA {max(0, p.total - p.done) / rate:5.1f} s" if rate > 0 else "ETA ?"
            text = f"[{bar}] {p.done}/{p.total} frames  {rate:5.1f} fps  {eta}"
        else:
            text = f"{p.done} frames  {rate:5.1f} fps"
        self._stream.write(("\r" + text) if self._tty else text + "\n")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def register(subparsers: Any) -> None:
    prep = subparsers.add_parser(
        "prepare",
        help="prepare an avatar from a photo or a video (once, before serving)",
        description="Detect the face and mouth in SOURCE once and cache everything the "
        "real-time path needs under ROOT/NAME/cache/.",
    )
    prep.add_argument("source", type=Path, metavar="SOURCE", help="photo (jpg/png/webp) or video")
    prep.add_argument("--name", required=True, help="avatar name (letters, digits, - and _)")
    prep.add_argument("--fps", type=int, default=25, help="frame rate of the avatar (default 25)")
    prep.add_argument(
        "--max-size", type=int, default=720, dest="max_size_px", help="longest side in px (720)"
    )
    prep.add_argument("--force", action="store_true", help="replace an existing cache")
    prep.add_argument(
        "--face-index", type=int, default=None, help="face to use, 0 = largest (default)"
    )
    prep.add_argument(
        "--max-seconds", type=float, default=10.0, help="video seconds to keep (default 10)"
    )
    prep.add_argument(
        "--idle-seconds",
        type=float,
        default=3.2,
        help="photo: length of the breathing loop, 0 for a single still frame (default 3.2)",
    )
    prep.add_argument(
        "--landmarks",
        choices=("auto", "haar"),
        default="auto",
        help="auto: mediapipe face mesh when installed, else Haar cascades",
    )
    add_avatars_dir_argument(prep, "--root")
    prep.set_defaults(func=_prepare)

    lst = subparsers.add_parser("avatars", help="list prepared avatars")
    add_avatars_dir_argument(lst, "--root")
    lst.set_defaults(func=_list)


def _prepare(args: argparse.Namespace) -> int:
    if args.fps < 1 or args.max_size_px < 64:
        print(
            "avatar-streamer: --fps must be at least 1 and --max-size at least 64", file=sys.stderr
        )
        return 2
    options = PrepareOptions(
        fps=args.fps,
        max_size_px=args.max_size_px,
        face_index=args.face_index,
        force=args.force,
        max_seconds=args.max_seconds,
        idle_seconds=args.idle_seconds,
        locator=args.landmarks,
    )
    bar = ProgressLine()
    try:
        avatar = prepare_avatar(
            args.source, args.name, avatars_dir(args.avatars_dir), options, progress=bar
        )
    finally:
        bar.close()
    w, h = avatar.size_wh
    print(
        f"prepared {avatar.name}: {avatar.frame_count} frames, {w}x{h}, {avatar.fps} fps "
        f"in {avatar.cache_path}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    root, origin = avatars_dir_and_origin(args.avatars_dir)
    print(f"avatars in {root} ({origin})")
    rows = list_avatars(root)
    if DEFAULT_AVATAR not in {name for name, _, _ in rows}:  # prepared there on first use
        rows.insert(0, (DEFAULT_AVATAR, None, NOT_PREPARED))
    print(f"{'NAME':<20} {'FRAMES':>6} {'SIZE':>10} {'FPS':>4}  {'STATUS':<12}  PATH")
    for name, manifest, status in rows:
        path = root / name
        if manifest is not None:
            w, h = manifest["frame_size_wh"]
            size, frames, fps = f"{w}x{h}", manifest["frame_count"], manifest["fps"]
            print(f"{name:<20} {frames:>6} {size:>10} {fps:>4}  {'prepared':<12}  {path}")
            continue
        label = "not prepared" if status == NOT_PREPARED else "stale"
        print(f"{name:<20} {'-':>6} {'-':>10} {'-':>4}  {label:<12}  {path}")
        if name == DEFAULT_AVATAR and status == NOT_PREPARED:
            print(f"    prepared on first use from {default_avatar_source(root)}")
        elif status != NOT_PREPARED:
            print(f"    {status}")
    return 0
