"""``avatar-streamer bench avatar``: default avatar load time and compositor cost per frame.

Load: ``load_avatar("default")`` in fresh processes (imports excluded; the file pages may
still be in the OS cache, hence "cold-ish"), the same in-process once warm, and cutting the
MOUTH and WAV2LIP 96 px crops (what serving does once per avatar and model). Compositor:
:func:`composite` into the default avatar's 512x512 frames with 96 px crops, batch 1 and 8.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.avatar.cache import load_avatar
from streamer.avatar.composite import composite
from streamer.avatar.default import ensure_default_avatar
from streamer.crop import CropConvention
from streamer.probe.report import write_section
from streamer.resources import add_avatars_dir_argument, avatars_dir

LOAD_TARGET_S = 0.5
COMPOSITE_TARGET_MS = 2.0

_CHILD = (
    "import sys, time; from pathlib import Path; from streamer.avatar import load_avatar; "
    "t = time.perf_counter(); load_avatar('default', Path(sys.argv[1])); "
    "print(time.perf_counter() - t)"
)


def register(kinds: Any) -> None:
    parser = kinds.add_parser("avatar", help="default avatar load time, compositor ms/frame")
    add_avatars_dir_argument(parser, "--root")
    parser.add_argument("--iterations", type=int, default=300, help="compositor batches per case")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(func=_run_args)


def _run_args(args: argparse.Namespace) -> int:
    return run(avatars_dir(args.avatars_dir), args.iterations, record=not args.no_record)


def _stats_ms(samples_s: list[float]) -> tuple[float, float, float]:
    arr = np.asarray(samples_s) * 1e3
    return float(arr.mean()), float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def measure_load(root: Path, processes: int = 5, warm: int = 50) -> dict[str, list[float]]:
    """Seconds per load: in fresh processes, warm in this one, and cutting both crop sets."""
    cold = []
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root)], capture_output=True, text=True, check=True
        )
        cold.append(float(out.stdout.strip()))
    warm_s = []
    for _ in range(warm):
        t = time.perf_counter()
        load_avatar("default", root)
        warm_s.append(time.perf_counter() - t)
    crops_s = []
    for _ in range(5):
        avatar = load_avatar("default", root)
        t = time.perf_counter()
        avatar.crops(CropConvention.MOUTH, 96)
        avatar.crops(CropConvention.WAV2LIP, 96)
        crops_s.append(time.perf_counter() - t)
    return {"cold": cold, "warm": warm_s, "crops": crops_s}


def measure_composite(
    root: Path, convention: CropConvention, batch: int, iterations: int
) -> list[float]:
    """Seconds per frame of :func:`composite` over ``iterations`` batches."""
    avatar = load_avatar("default", root)
    crops = avatar.crops(convention, 96)
    rng = np.random.default_rng(0)
    generated: npt.NDArray[np.uint8] = rng.integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)
    strength = np.ones(batch, np.float32)
    per_frame = []
    n = avatar.frame_count
    for it in range(iterations + 10):
        idx = [(it * batch + k) % n for k in range(batch)]
        frames = avatar.frames[idx]  # fancy indexing copies out of the memmap, as serving does
        t = time.perf_counter()
        composite(frames, generated, crops.boxes[idx], crops.masks[idx], strength)
        if it >= 10:  # warm-up
            per_frame.append((time.perf_counter() - t) / batch)
    return per_frame


def run(root: Path, iterations: int, record: bool) -> int:
    avatar = ensure_default_avatar(root)
    load = measure_load(root)
    w, h = avatar.size_wh
    rows = []
    for name, samples in (
        ("load_avatar, fresh process (cold-ish)", load["cold"]),
        ("load_avatar, warm", load["warm"]),
        ("crops MOUTH 96 + WAV2LIP 96 (once per avatar and model)", load["crops"]),
    ):
        mean, p50, p99 = _stats_ms(samples)
        rows.append(f"| {name} | {len(samples)} | {mean:.2f} | {p50:.2f} | {p99:.2f} |")
    load_ok = max(load["cold"]) < LOAD_TARGET_S
    comp_rows = []
    worst_mean = 0.0
    for convention in (CropConvention.MOUTH, CropConvention.WAV2LIP):
        box = avatar.crops(convention, 96).boxes[0]
        for batch in (1, 8):
            mean, p50, p99 = _stats_ms(measure_composite(root, convention, batch, iterations))
            worst_mean = max(worst_mean, mean)
            comp_rows.append(
                f"| {convention.name} 96 px (box {box[2] - box[0]}x{box[3] - box[1]}) | {batch} | "
                f"{mean:.3f} | {p50:.3f} | {p99:.3f} |"
            )
    comp_ok = worst_mean < COMPOSITE_TARGET_MS
    table = (
        f"Default avatar: {avatar.frame_count} frames of {w}x{h} "
        f"({avatar.frames.nbytes / 1e6:.0f} MB memory-mapped).\n\n"
        "| load | runs | mean ms | p50 | p99 |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nTarget: every fresh-process load < {LOAD_TARGET_S * 1e3:.0f} ms: "
        f"{'PASS' if load_ok else 'FAIL'}\n\n"
        f"| compositor into {w}x{h} | batch | mean ms/frame | p50 | p99 |\n|---|---|---|---|---|\n"
        + "\n".join(comp_rows)
        + f"\n\nTarget: mean < {COMPOSITE_TARGET_MS} ms/frame: {'PASS' if comp_ok else 'FAIL'}\n"
    )
    print(table)
    if record:
        write_section(
            "avatar",
            "Avatar: default avatar load time and compositor cost",
            f"avatar-streamer bench avatar --iterations {iterations}",
            table,
        )
    return 0 if load_ok and comp_ok else 1
