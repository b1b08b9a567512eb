"""A real server with faults injected through the renderer seam, for the soak tool's tests.

Run as ``python tests/degraded_server.py --port P [--stall-every-s S --stall-ms MS]
[--video-delay-frames N] [--leak-kb-per-tick KB]``. Everything but the renderer is the
production server; the faults live here, never in the package.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from aiohttp import web

from streamer.server.app import ServerConfig, create_app
from streamer.server.media.renderer import Renderer, RenderRequest
from streamer.server.media.runtime import build_runtime

REPO = Path(__file__).resolve().parents[1]


class DegradedRenderer:
    """Wraps the real renderer: stalls every few ticks (blocking the inference thread, as a
    slow GPU or a swapping host would), shows each session's video ``delay`` ticks late
    (its audio stays on time), and leaks memory every tick."""

    def __init__(
        self,
        inner: Renderer,
        stall_every_ticks: int,
        stall_s: float,
        video_delay_frames: int,
        leak_bytes_per_tick: int,
    ) -> None:
        self._inner = inner
        self._stall_every = stall_every_ticks
        self._stall_s = stall_s
        self._delay = video_delay_frames
        self._leak_bytes = leak_bytes_per_tick
        self._leaked: list[bytes] = []
        self._lines: dict[int, collections.deque[np.ndarray]] = {}
        self._ticks = 0

    def frame_count(self, avatar: str) -> int:
        return self._inner.frame_count(avatar)

    def render(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        images = self._inner.render(requests)
        self._ticks += 1
        if self._leak_bytes:
            self._leaked.append(b"\x01" * self._leak_bytes)  # written, so resident
        if self._stall_every and self._ticks % self._stall_every == 0:
            time.sleep(self._stall_s)
        if self._delay:
            out = []
            for k, image in enumerate(images):  # one delay line per position (session)
                line = self._lines.setdefault(k, collections.deque(maxlen=self._delay + 1))
                line.append(image)
                out.append(line[0])
            images = out
        return images


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stall-every-s", type=float, default=0.0)
    p.add_argument("--stall-ms", type=float, default=0.0)
    p.add_argument("--video-delay-frames", type=int, default=0)
    p.add_argument("--leak-kb-per-tick", type=int, default=0)
    args = p.parse_args()
    runtime = build_runtime(REPO / "avatars")
    renderer = DegradedRenderer(
        runtime.renderer,
        round(args.stall_every_s * 25),
        args.stall_ms / 1e3,
        args.video_delay_frames,
        args.leak_kb_per_tick * 1024,
    )
    app = create_app(ServerConfig(port=args.port), dataclasses.replace(runtime, renderer=renderer))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, shutdown_timeout=1.5)


if __name__ == "__main__":
    main()
