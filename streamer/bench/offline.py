"""``bench render``: offline render speed as multiples of real time, recorded in benchmarks.md.

The whole path a user runs: decode a WAV, plan the frames, the model and compositor in
batches, H.264 + AAC encoding into an MP4 (in a temporary directory). Each batch size is
rendered ``--repeat`` times; the best run counts (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from streamer.probe.report import write_section
from streamer.probe.signals import speechlike_48k
from streamer.resources import add_avatars_dir_argument, avatars_dir


def register(kinds: Any) -> None:
    p = kinds.add_parser("render", help="offline render speed (x real time)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the rendered clip")
    p.add_argument("--batch", default="8,32,64", help="comma-separated frames per model call")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="builtin (default), wav2lip-random (the Wav2Lip architecture with random weights, "
        "needs torch) or an ONNX path; repeatable",
    )
    add_avatars_dir_argument(p)
    p.add_argument("--no-record", action="store_true", help="print only")
    p.set_defaults(func=_run)


def _write_wav(path: Path, pcm_48k: np.ndarray) -> None:
    with av.open(str(path), "w", "wav") as container:
        stream = container.add_stream("pcm_s16le", rate=48_000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (np.clip(pcm_48k, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = 48_000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _model_path(name: str, tmp: Path) -> Path | None:
    if name == "builtin":
        return None
    if name == "wav2lip-random":
        from streamer.engine.wav2lip import export_onnx, random_wav2lip

        path = tmp / "wav2lip-random.onnx"
        path.write_bytes(export_onnx(random_wav2lip()).SerializeToString())
        return path
    return Path(name)


def _run(args: argparse.Namespace) -> int:
    from streamer.offline.audio import decode_audio
    from streamer.offline.cli import load_frame_renderer
    from streamer.offline.render import RenderOptions, render_mp4

    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    models = args.model or ["builtin"]
    rows = []
    providers: set[str] = set()
    avatars = avatars_dir(args.avatars_dir)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        _write_wav(wav, speechlike_48k(args.seconds))
        for model in models:
            renderer = load_frame_renderer(_model_path(model, Path(tmp)), "default", avatars)
            info = renderer.engine.info
            providers.update(info.providers)
            label = "wav2lip (random weights)" if model == "wav2lip-random" else info.name
            for batch in batches:
                best_s = float("inf")
                frames = 0
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    plan = render_mp4(
                        decode_audio(wav),
                        renderer,
                        Path(tmp) / "out.mp4",
                        RenderOptions(batch_frames=batch),
                    )
                    best_s = min(best_s, time.perf_counter() - started)
                    frames = len(plan)
                active = float((plan.strengths > 0).mean())
                row = (
                    f"| {label} | {info.providers[0]} | {batch} | {frames} | {best_s:.3f} | "
                    f"{frames / best_s:.1f} | **{args.seconds / best_s:.2f}x** | "
                    f"{100 * active:.0f} % |"
                )
                rows.append(row)
                print(row, flush=True)
        if "builtin" in models:
            rows.append(_end_to_end_row(wav, Path(tmp) / "cli.mp4", avatars, args))
            print(rows[-1], flush=True)
    header = (
        "| model | provider | batch | frames | seconds | frames/s | x real time | "
        "frames with a generated mouth |\n|---|---|---|---|---|---|---|---|"
    )
    load = os.getloadavg()
    notes = (
        f"- Input: {args.seconds:g} s of speech-like audio (WAV, 48 kHz); output 512x512 H.264 "
        "(libx264 veryfast, crf 20) + AAC MP4 of the default avatar; decode, features, model, "
        "compositor and encoding included; best of "
        f"{args.repeat} run(s).\n"
        "- The encoder runs in its own thread while the model renders the next batch.\n"
        "- `render command, end to end`: `avatar-streamer render clip.wav -o out.mp4 "
        "--no-progress` in a fresh process (`python -m streamer`), wall time from its start to "
        "its exit: interpreter, imports, model and avatar loading and warm-up included; the "
        "command's own batch (16).\n"
        f"- Load average at the end: {load[0]:.1f} (1 min) on {os.cpu_count()} cores.\n"
    )
    if "CUDAExecutionProvider" not in providers:
        notes += (
            "- No GPU here: Wav2Lip on GPU is not measured (run `bench render --model "
            "wav2lip-random` or `--model models/wav2lip.onnx` on a GPU machine to add it).\n"
        )
    print(notes)
    if not args.no_record:
        cmd = (
            f"avatar-streamer bench render --seconds {args.seconds:g} --batch {args.batch} "
            f"--repeat {args.repeat}"
        )
        cmd += "".join(f" --model {m}" for m in args.model or [])
        write_section(
            "render",
            "Offline render: speed as multiples of real time",
            cmd,
            header + "\n" + "\n".join(rows) + "\n\n" + notes,
        )
    return 0


def _end_to_end_row(wav: Path, out: Path, avatars: Path, args: argparse.Namespace) -> str:
    """The render command as a user runs it: a fresh process, start-up included (best run)."""
    cmd = [sys.executable, "-m", "streamer", "render", str(wav), "-o", str(out)]
    cmd += ["--avatars-dir", str(avatars), "--no-progress"]
    best_s = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        best_s = min(best_s, time.perf_counter() - started)
    with av.open(str(out)) as container:
        frames = container.streams.video[0].frames
    return (
        f"| render command, end to end | (its default) | 16 | {frames} | {best_s:.3f} | "
        f"{frames / best_s:.1f} | **{args.seconds / best_s:.2f}x** | |"
    )
