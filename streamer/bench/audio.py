"""Cost of the audio front end (ingest + streaming mel) per 40 ms video frame.

Feeds synthetic speech-like audio as aiortc delivers it (s16 stereo 48 kHz, 20 ms frames)
through :class:`AudioIngest` and :class:`MelExtractor`, reading one window per video frame,
and reports the distribution of the cost per 40 ms of audio.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamer.audio.ingest import AudioIngest, pcm_to_frame
from streamer.audio.mel import MelExtractor
from streamer.probe.report import write_section

TARGET_MS_PER_FRAME = 0.5


def _speechlike_48k_stereo(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 48_000)
    t = np.arange(n) / 48_000
    pitch_hz = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(pitch_hz) / 48_000) * (
        0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    )
    x = 0.3 * voiced + 0.02 * rng.standard_normal(n)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    return np.stack((pcm, pcm), axis=1)


def measure(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU milliseconds per 40 ms video frame (two 20 ms audio frames + window reads).

    The CPU time of this thread is the cost; the wall time adds whatever the scheduler gave
    to other processes meanwhile (this box is shared), so the verdict uses the CPU time.
    """
    pcm = _speechlike_48k_stereo(seconds)
    frames = [pcm_to_frame(pcm[i : i + 960], 48_000) for i in range(0, len(pcm) - 959, 960)]
    ingest = AudioIngest()
    mel = MelExtractor()
    wall_ms = []
    cpu_ms = []
    video_frame = 0
    for k in range(0, len(frames) - 1, 2):
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        for frame in frames[k : k + 2]:
            mel.push(ingest.push(frame).samples)
        while mel.window(video_frame) is not None:
            video_frame += 1
        cpu_ms.append((time.thread_time_ns() - c0) / 1e6)
        wall_ms.append((time.perf_counter_ns() - t0) / 1e6)
    return np.asarray(wall_ms), np.asarray(cpu_ms)


def register(kinds: Any) -> None:
    parser = kinds.add_parser("audio", help="ingest + mel cost per 40 ms video frame")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to process")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(func=lambda args: run(seconds=args.seconds, record=not args.no_record))


def run(seconds: float, record: bool) -> int:
    measure(2.0)  # warm up numpy's FFT plans and the resampler
    wall, cpu = measure(seconds)
    verdict = "PASS" if cpu.mean() < TARGET_MS_PER_FRAME else "FAIL"
    rows = []
    for label, costs in (("CPU time", cpu), ("wall time", wall)):
        p50, p99 = np.percentile(costs, [50, 99])
        rows.append(
            f"| {label} | {len(costs)} | {costs.mean():.3f} | {p50:.3f} | {p99:.3f} | "
            f"{costs.max():.3f} |\n"
        )
    table = (
        f"Input: {seconds:g} s of speech-like audio as aiortc delivers it (s16 stereo 48 kHz, "
        "20 ms packets); per 40 ms video frame: 2 packets ingested, mel columns computed, "
        "the frame's window read.\n\n"
        "| clock | frames | mean ms/frame | p50 | p99 | max |\n"
        "|---|---|---|---|---|---|\n" + "".join(rows) + "\n"
        f"Target: mean CPU time under {TARGET_MS_PER_FRAME} ms per frame: **{verdict}** "
        f"({cpu.mean() / TARGET_MS_PER_FRAME:.0%} of the budget).\n"
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
