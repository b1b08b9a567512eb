"""What the parts of an offline render cost, one by one, for the tree at hand or another.

Usage (from the repository root):

    .venv/bin/python scripts/profile_render.py                  # this checkout's code
    git worktree add /tmp/old <commit>
    cp -r avatars/default/cache /tmp/old/avatars/default/
    .venv/bin/python scripts/profile_render.py --tree /tmp/old  # another tree's code

Alternate the two a few times: this machine is noisy. On the default avatar and the built-in
model, with ``--seconds`` of speech-like audio (``streamer.probe.signals.speechlike_48k``), it
prints, each the best of ``--rounds``:

- the engine's input preparation (``face_input``) for a batch of ``--batch`` crops;
- ``LipSyncEngine.generate`` less ``infer`` on the same batch: preparing the input and
  converting the output, the model itself left out;
- the renderer (features, model, compositing) per frame, without encoding;
- ``Mp4Writer`` alone per frame, one encoder thread, for each libx264 preset in ``--preset``,
  with the file's size and its PSNR against the rendered frames.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def best_s(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the tree whose code runs")
    parser.add_argument("--seconds", type=float, default=11.6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--preset", action="append", help="libx264 presets (default veryfast)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.tree.resolve()))
    import av

    import streamer
    from streamer.engine import face_input
    from streamer.offline.audio import decode_audio
    from streamer.offline.cli import load_frame_renderer
    from streamer.offline.mp4 import Mp4Writer
    from streamer.offline.render import RenderOptions
    from streamer.probe.signals import speechlike_48k

    print(f"code: {Path(streamer.__file__).parent}")
    renderer = load_frame_renderer(None, "default", args.tree / "avatars")
    wav = io.BytesIO()
    pcm = np.clip(speechlike_48k(args.seconds) * 32767, -32768, 32767).astype(np.int16)
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm.tobytes())
    wav.seek(0)
    audio = decode_audio(wav)
    options = RenderOptions(batch_frames=args.batch)
    plan = renderer.plan(audio.pcm_16k, options)
    n = len(plan)
    engine = renderer.engine
    crops = np.asarray(renderer.crops.faces[np.arange(args.batch) % renderer.crops.faces.shape[0]])
    windows = np.asarray(plan.windows[: args.batch], np.float32)
    face = face_input(crops)
    per_batch_ms = {
        "face_input": best_s(lambda: face_input(crops), args.rounds) * 1e3,
        "generate": best_s(lambda: engine.generate(windows, crops), args.rounds) * 1e3,
        "infer": best_s(lambda: engine.infer(windows[:, None], face), args.rounds) * 1e3,
    }
    print(f"per batch of {args.batch} crops of {crops.shape[1]} px:")
    print(f"  face_input                  {per_batch_ms['face_input']:.2f} ms")
    print(
        f"  generate less infer         {per_batch_ms['generate'] - per_batch_ms['infer']:.2f} ms"
    )

    def render_all() -> list[Any]:
        return [renderer.render(plan, s, min(n, s + args.batch)) for s in range(0, n, args.batch)]

    frames = np.concatenate(render_all())
    print(
        f"renderer, no encoding:        {best_s(render_all, args.rounds) / n * 1e3:.3f} ms a frame"
    )
    height, width = frames.shape[1:3]
    silence = np.zeros(n * 1920, np.float32)
    for preset in args.preset or ["veryfast"]:
        sink = io.BytesIO()

        def write(preset: str = preset, sink: io.BytesIO = sink) -> None:
            sink.seek(0)
            sink.truncate()
            writer = Mp4Writer(sink, width, height, preset=preset, threads=1)
            for s in range(0, n, args.batch):
                writer.write(
                    frames[s : s + args.batch], silence[s * 1920 : (s + args.batch) * 1920]
                )
            writer.close()

        took_s = best_s(write, args.rounds)
        sink.seek(0)
        with av.open(sink, "r") as container:
            got = np.stack([f.to_ndarray(format="bgr24") for f in container.decode(video=0)])
        mse = float(np.mean((got.astype(np.float64) - frames[: len(got)]) ** 2))
        print(
            f"Mp4Writer {preset:<10} 1 thread: {took_s / n * 1e3:.3f} ms a frame, "
            f"{sink.getbuffer().nbytes / 1e3:.0f} kB, PSNR {10 * np.log10(255**2 / mse):.2f} dB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
