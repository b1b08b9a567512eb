"""``avatar-streamer bench model``: lip-sync model cost per frame, by runtime, batch and precision.

Models: a path, ``builtin`` (the default model) or ``wav2lip-random`` (the Wav2Lip architecture
with random weights: its speed does not depend on the weights; needs torch). Each configuration
runs ``--iters`` batches after two warm-up runs; the table gives mean / std / min / p99 / max
milliseconds per frame (batch time / batch size), frames per second and the speed-up against a
named baseline (per model: PyTorch eager at the first batch size if measured, else onnxruntime
float32 at the first batch size).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.engine.session import CPU, EngineOptions, LipSyncEngine, resolve_providers
from streamer.probe.report import write_section

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
BUILTIN = "builtin"
WAV2LIP_RANDOM = "wav2lip-random"
DEFAULT_BATCHES = {BUILTIN: (1, 8, 32), WAV2LIP_RANDOM: (1, 4)}
DEFAULT_ITERS = {BUILTIN: 200, WAV2LIP_RANDOM: 5}
BUILTIN_TARGET_MS = 3.0


@dataclass(frozen=True)
class Row:
    model: str
    runtime: str
    batch: int
    threads: int
    ms_per_frame: F32  # one value per timed batch
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.runtime} b{self.batch} {self.threads}t"


def time_per_frame(run: Callable[[], object], batch: int, iters: int) -> F32:
    for _ in range(2):
        run()
    samples = np.empty(iters, dtype=np.float32)
    for i in range(iters):
        t0 = time.perf_counter()
        run()
        samples[i] = (time.perf_counter() - t0) * 1e3 / batch
    return samples


def _inputs(batch: int, face_px: int, seed: int = 0) -> tuple[F32, F32]:
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 1, (batch, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (batch, 6, face_px, face_px)).astype(np.float32)
    return mel, face


def _runtime_name(providers: tuple[str, ...], fp16: bool) -> str:
    short = providers[0].removesuffix("ExecutionProvider")
    return f"ORT {short} {'fp16' if fp16 else 'fp32'}"


def _onnx_rows(
    name: str, path: Path | None, args: argparse.Namespace, batches: tuple[int, ...], iters: int
) -> list[Row]:
    rows = []
    for threads in args.threads:
        for fp16 in (False, True) if args.fp16 else (False,):
            options = EngineOptions(
                providers=args.providers, intra_op_threads=threads, warmup_batch_sizes=(1,)
            )
            note = ""
            if fp16:
                from streamer.engine.fp16 import convert_to_fp16, fp16_max_abs_error
                from streamer.engine.metadata import read_contract, view_of_proto
                from streamer.engine.session import load_model_proto

                proto, _ = load_model_proto(path)
                contract = read_contract(view_of_proto(proto), name)
                half = convert_to_fp16(proto)
                error = fp16_max_abs_error(proto, half, contract)
                note = f"fp16 max abs err {error:.4f}"
                with tempfile.TemporaryDirectory() as tmp:
                    half_path = Path(tmp) / "fp16.onnx"
                    half_path.write_bytes(half.SerializeToString())
                    engine = LipSyncEngine(half_path, options)
            else:
                engine = LipSyncEngine(path, options)
            runtime = _runtime_name(engine.info.providers, fp16)
            for batch in batches:
                mel, face = _inputs(batch, engine.info.face_size_px)
                samples = time_per_frame(partial(engine.infer, mel, face), batch, iters)
                rows.append(Row(name, runtime, batch, threads, samples, note))
                log.info("%s %s: %.2f ms/frame", name, rows[-1].label, float(samples.mean()))
    return rows


def _torch_rows(
    model: Any, args: argparse.Namespace, batches: tuple[int, ...], iters: int
) -> list[Row]:
    import torch

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in batches:
            mel, face = _inputs(batch, 96)
            tm, tf = torch.from_numpy(mel), torch.from_numpy(face)

            def run(tm: Any = tm, tf: Any = tf) -> object:
                with torch.inference_mode():
                    return model(tm, tf)

            samples = time_per_frame(run, batch, iters)
            rows.append(Row(WAV2LIP_RANDOM, "PyTorch eager fp32", batch, threads, samples))
            log.info("%s %s: %.2f ms/frame", WAV2LIP_RANDOM, rows[-1].label, float(samples.mean()))
    return rows


def measure(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for name in args.model:
        batches = tuple(args.batch) if args.batch else DEFAULT_BATCHES.get(name, (1, 4))
        iters = args.iters or DEFAULT_ITERS.get(name, 5)
        from streamer.bench import musetalk_model

        if musetalk_model.is_musetalk(name):
            rows += musetalk_model.rows(name, args, tuple(args.batch or ()), args.iters)
            continue
        if name == WAV2LIP_RANDOM:
            from streamer.engine.wav2lip import export_onnx, random_wav2lip

            model = random_wav2lip()
            if args.torch:
                rows += _torch_rows(model, args, batches, iters)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "wav2lip-random.onnx"
                path.write_bytes(export_onnx(model).SerializeToString())
                rows += _onnx_rows(name, path, args, batches, iters)
        else:
            rows += _onnx_rows(name, None if name == BUILTIN else Path(name), args, batches, iters)
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| model | runtime | batch | threads | runs | mean ms/frame | std | min | p99 | max "
        "| frames/s | speed-up | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baselines: dict[str, Row] = {}
    for row in rows:
        base = baselines.setdefault(row.model, row)
        x = row.ms_per_frame
        mean = float(x.mean())
        speedup = float(base.ms_per_frame.mean()) / mean
        lines.append(
            f"| {row.model} | {row.runtime} | {row.batch} | {row.threads} | {len(x)} "
            f"| {mean:.2f} | {float(x.std()):.2f} | {float(x.min()):.2f} "
            f"| {float(np.percentile(x, 99)):.2f} | {float(x.max()):.2f} | {1e3 / mean:.1f} "
            f"| {speedup:.2f}x vs {base.label} | {row.note} |"
        )
    return "\n".join(lines) + "\n"


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def register(kinds: Any) -> None:
    parser = kinds.add_parser("model", help="lip-sync model cost per frame (runtimes, batch, fp16)")
    parser.add_argument(
        "--model",
        action="append",
        help=f"ONNX path, {BUILTIN!r}, {WAV2LIP_RANDOM!r}, a MuseTalk folder, "
        "musetalk-random-tiny or musetalk-random-full (random ones need the export extra); "
        f"repeatable (default: {BUILTIN})",
    )
    parser.add_argument(
        "--providers",
        type=lambda s: tuple(p for p in s.split(",") if p),
        default=None,
        help="comma-separated onnxruntime providers (default: TensorRT, CUDA, CPU as available)",
    )
    parser.add_argument("--batch", type=_int_list, default=None, help="e.g. 1,4,8,16")
    parser.add_argument("--threads", type=_int_list, default=[EngineOptions().intra_op_threads])
    parser.add_argument("--iters", type=int, default=None, help="timed batches per configuration")
    parser.add_argument("--fp16", action="store_true", help="add float16 rows")
    parser.add_argument(
        "--torch", action="store_true", help="add PyTorch eager rows (random-weight models)"
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(func=run)


def _command_line(args: argparse.Namespace) -> str:
    parts = ["avatar-streamer bench model"]
    parts += [f"--model {m}" for m in args.model]
    if args.providers:
        parts.append("--providers " + ",".join(args.providers))
    if args.batch:
        parts.append("--batch " + ",".join(map(str, args.batch)))
    parts.append("--threads " + ",".join(map(str, args.threads)))
    if args.iters:
        parts.append(f"--iters {args.iters}")
    parts += [flag for flag, on in (("--fp16", args.fp16), ("--torch", args.torch)) if on]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    args.model = args.model or [BUILTIN]
    rows = measure(args)
    table = format_table(rows)
    gpu_wanted = [p for p in resolve_providers(args.providers) if p != CPU]
    gpu_used = any(not r.runtime.startswith(("ORT CPU", "PyTorch")) for r in rows)
    notes = []
    if not gpu_used:
        notes.append(
            "No GPU was available on this machine"
            + (
                f" (onnxruntime lists {', '.join(gpu_wanted)} but cannot load them)"
                if gpu_wanted
                else ""
            )
            + ": CUDA, TensorRT and GPU fp16 rows are left out."
        )
    builtin_b1 = [r for r in rows if r.model == BUILTIN and r.batch == 1 and "fp32" in r.runtime]
    verdict = 0
    for r in builtin_b1:
        mean = float(r.ms_per_frame.mean())
        ok = mean <= BUILTIN_TARGET_MS
        verdict |= 0 if ok else 1
        notes.append(
            f"Built-in model, batch 1, {r.threads} thread(s), {r.runtime}: {mean:.2f} ms/frame, "
            f"target <= {BUILTIN_TARGET_MS:g} ms: {'PASS' if ok else 'FAIL'}."
        )
    load_1m, _, load_15m = os.getloadavg()
    notes.append(
        "Milliseconds per frame are batch time / batch size; p99 of a handful of runs is close "
        f"to the max. Load average at the end of the run: {load_1m:.1f} (1 min), "
        f"{load_15m:.1f} (15 min) on {os.cpu_count()} cores: other work shared the CPU, so "
        "compare rows loosely."
    )
    body = table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(body)
    if not args.no_record:
        from streamer.bench.musetalk_model import is_musetalk

        if all(is_musetalk(m) for m in args.model):  # its own table: rows per graph
            section = ("model-musetalk", "MuseTalk v1.5: ms per frame by graph, runtime, batch")
        else:
            section = ("model", "Lip-sync models: ms per frame by runtime, batch, precision")
        write_section(*section, _command_line(args), body)
    return verdict
