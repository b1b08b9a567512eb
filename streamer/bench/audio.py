"""Cost of the audio front end (ingest + streaming mel) per 40 ms video frame.

Feeds synthetic speech-like audio as aiortc delivers it (s16 stereo 48 kHz, 20 ms frames)
through :class:`AudioIngest` and :class:`MelExtractor`, reading one window per video frame,
and reports the distribution of the cost per 40 ms of audio.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from streamer.audio.ingest import AudioIngest, pcm_to_frame
from streamer.audio.mel import MelExtractor
from streamer.bench.report import write_section

TARGET_MS_PER_FRAME = 0.5


def _speechlike_48k_stereo(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 48_000)
    t = np.arange(n) / 48_000
    pitch_hz = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(pitch_hz) / 48_000) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = 0.3 * voiced + 0.02 * rng.standard_normal(n)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    return np.stack((pcm, pcm), axis=1)


def measure(seconds: float) -> np.ndarray:
    """Milliseconds spent per 40 ms video frame (two 20 ms audio frames + one window read)."""
    pcm = _speechlike_48k_stereo(seconds)
    frames = [pcm_to_frame(pcm[i : i + 960], 48_000) for i in range(0, len(pcm) - 959, 960)]
    ingest = AudioIngest()
    mel = MelExtractor()
    costs_ms = []
    video_frame = 0
    for k in range(0, len(frames) - 1, 2):
        t0 = time.perf_counter()
        for frame in frames[k : k + 2]:
            mel.push(ingest.push(frame).samples)
        while mel.window(video_frame) is not None:
            video_frame += 1
        costs_ms.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(costs_ms)


def register(kinds: Any) -> None:
    parser = kinds.add_parser("audio", help="ingest + mel cost per 40 ms video frame")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to process")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(func=lambda args: run(seconds=args.seconds, record=not args.no_record))


def run(seconds: float, record: bool) -> int:
    measure(2.0)  # warm up numpy's FFT plans and the resampler
    costs = measure(seconds)
    mean, p50, p99, worst = costs.mean(), *np.percentile(costs, [50, 99]), costs.max()
    verdict = "PASS" if mean < TARGET_MS_PER_FRAME else "FAIL"
    table = (
        "| audio | frames | mean ms/frame | p50 | p99 | max | target |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {seconds:.0f} s, s16 stereo 48 kHz, 20 ms packets | {len(costs)} | {mean:.3f} | "
        f"{p50:.3f} | {p99:.3f} | {worst:.3f} | mean < {TARGET_MS_PER_FRAME} ms: {verdict} |\n"
    )
    print(table)
    if record:
        write_section(
            "audio",
            "Audio front end: ingest + streaming mel per 40 ms video frame",
            f"avatar-streamer bench audio --seconds {seconds:g}",
            table,
        )
    return 0 if verdict == "PASS" else 1
