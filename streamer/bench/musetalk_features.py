"""``bench musetalk-features``: how far live MuseTalk audio features drift from offline ones.

Offline, MuseTalk encodes 30 s segments; live, each frame's features come from one encoder run
over a shorter window of recent audio (:mod:`streamer.engine.musetalk.streaming`). On a spoken
clip this compares, per video frame, the live UNet input ``[50, 384]`` with the offline one:
relative error ``||live - offline|| / ||offline||`` (mean and p95 over frames) and cosine
similarity, for each context length, lookahead and floor, with the encoder's cost per run.

The encoder is the model folder's ``audio_encoder.onnx``. With random weights (the only ones
this project can build) attention does not behave as the trained encoder's does, so the
figures rank the settings and bound the cost; lip quality needs the real weights.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from streamer.audio.whisper_mel import normalise, whisper_log10_mel
from streamer.engine.musetalk.features import clip_frames, frame_windows, offline_states
from streamer.engine.musetalk.manifest import GRAPH_FILES, read_manifest
from streamer.engine.musetalk.streaming import LiveFeatures, LiveFeatureSettings, replay
from streamer.engine.session import CPU, EngineOptions
from streamer.offline.audio import decode_audio
from streamer.probe.clip import make_clip, wav_bytes
from streamer.probe.report import write_section

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
DEFAULT_CONTEXTS_S = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
DEFAULT_LOOKAHEADS_S = (0.14, 0.16, 0.24, 0.32)


@dataclass(frozen=True)
class Row:
    settings: LiveFeatureSettings
    relative_error: F32  # per frame
    cosine: F32  # per frame
    encoder_ms: F32  # per run


class OrtEncoder:
    """The audio encoder graph on ONNX Runtime's CPU provider, timing each run."""

    def __init__(self, path: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=[CPU])
        self.run_ms: list[float] = []

    def __call__(self, mel: F32, first_position: npt.NDArray[np.int64]) -> F32:
        started = time.perf_counter()
        feeds = {"mel": mel.astype(np.float32), "first_position": first_position}
        states: F32 = self.session.run(["states"], feeds)[0]
        self.run_ms.append((time.perf_counter() - started) * 1e3)
        return states


def spoken_clip_16k() -> F32:
    """The soak's spoken clip (espeak-ng phrases a second apart, or speech-like), at 16 kHz."""
    clip = make_clip(None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        path.write_bytes(wav_bytes(clip.pcm))
        return decode_audio(path).pcm_16k


def offline_features(encoder: OrtEncoder, pcm_16k: F32) -> F32:
    """MuseTalk's offline UNet inputs for every frame of the clip: ``[F, 50, 384]``."""
    states = offline_states(encoder, pcm_16k)
    return frame_windows(states, 0, range(clip_frames(pcm_16k.shape[0])))


def measure(
    encoder: OrtEncoder,
    pcm_16k: F32,
    offline: F32,
    settings: LiveFeatureSettings,
    frame_step: int = 1,
) -> Row:
    """Live against offline features for every ``frame_step``-th frame the clip can give
    (its lookahead inside the clip)."""
    live = LiveFeatures(settings)
    frames = [
        i
        for i in range(0, offline.shape[0], frame_step)
        if live.samples_needed(i) <= pcm_16k.shape[0]
    ]
    encoder.run_ms.clear()
    ours = replay(live, encoder, pcm_16k, frames).astype(np.float64)
    theirs = offline[frames].astype(np.float64)
    ours, theirs = ours.reshape(len(frames), -1), theirs.reshape(len(frames), -1)
    norms = np.linalg.norm(theirs, axis=1)
    error = np.linalg.norm(ours - theirs, axis=1) / np.maximum(norms, 1e-12)
    cosine = (ours * theirs).sum(axis=1) / np.maximum(np.linalg.norm(ours, axis=1) * norms, 1e-12)
    return Row(
        settings,
        error.astype(np.float32),
        cosine.astype(np.float32),
        np.asarray(encoder.run_ms, np.float32),
    )


def _table(rows: list[Row]) -> str:
    lines = [
        "| context | lookahead | floor | rel. error mean | p95 | cosine mean | p5 "
        "| encoder ms/run p50 | p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.settings
        lines.append(
            f"| {s.context_s:g} s | {s.lookahead_s * 1000:.0f} ms | {s.floor} "
            f"| {row.relative_error.mean():.3f} | {np.percentile(row.relative_error, 95):.3f} "
            f"| {row.cosine.mean():.4f} | {np.percentile(row.cosine, 5):.4f} "
            f"| {np.median(row.encoder_ms):.1f} | {np.percentile(row.encoder_ms, 95):.1f} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MelCost:
    """Mean ms per 40 ms frame of one session to get each frame's encoder mel."""

    push_ms: float  # the streaming Whisper mel, fed 20 ms packets
    window_ms: float  # reading, flooring and normalising the frame's window
    stft_ms: float  # the alternative: an STFT of the frame's whole window

    @property
    def streaming_ms(self) -> float:
        return self.push_ms + self.window_ms


def mel_cost(pcm_16k: F32, settings: LiveFeatureSettings, rounds: int = 3) -> MelCost:
    """The live path's mel work per frame against an STFT of each frame's window, in turns on
    the same frames (the median round)."""
    frames = range(round(settings.context_s * 25), pcm_16k.shape[0] // 640 - 10)
    measured = []
    for _ in range(rounds):
        live = LiveFeatures(settings)
        live.push(pcm_16k[: live.samples_needed(frames[0] - 1)])
        push_s = window_s = stft_s = 0.0
        for i in frames:
            need = live.samples_needed(i)
            while live.samples_pushed < need:
                k = live.samples_pushed
                t = time.perf_counter()
                live.push(pcm_16k[k : min(need, k + 320)])
                push_s += time.perf_counter() - t
            t = time.perf_counter()
            live.encoder_input(i)
            window_s += time.perf_counter() - t
            start, end = live.span(i)
            t = time.perf_counter()
            log10_mel = whisper_log10_mel(pcm_16k[start:end])
            normalise(log10_mel, float(log10_mel.max()))
            stft_s += time.perf_counter() - t
        n = len(frames)
        measured.append(MelCost(1e3 * push_s / n, 1e3 * window_s / n, 1e3 * stft_s / n))
    return sorted(measured, key=lambda c: c.streaming_ms)[rounds // 2]


def run(
    model: Path,
    contexts_s: tuple[float, ...],
    lookaheads_s: tuple[float, ...],
    threads: int,
    record: bool,
    frame_step: int = 1,
) -> int:
    manifest = read_manifest(model)
    encoder = OrtEncoder(model / GRAPH_FILES["audio_encoder"], threads)
    pcm_16k = spoken_clip_16k()
    offline = offline_features(encoder, pcm_16k)
    default = LiveFeatureSettings()
    configs = [
        LiveFeatureSettings(context_s=c, lookahead_s=default.lookahead_s) for c in contexts_s
    ]
    configs += [
        LiveFeatureSettings(context_s=default.context_s, lookahead_s=la)
        for la in lookaheads_s
        if la != default.lookahead_s
    ]
    configs.append(LiveFeatureSettings(context_s=default.context_s, floor="window"))
    rows = []
    for settings in configs:
        rows.append(measure(encoder, pcm_16k, offline, settings, frame_step))
        log.info("%s: mean relative error %.3f", settings, rows[-1].relative_error.mean())
    body = (
        f"Model: `{manifest.name}` ({manifest.source}). Clip: the soak's spoken phrases, "
        f"{pcm_16k.shape[0] / 16_000:.1f} s, {offline.shape[0]} frames "
        f"({'all' if frame_step == 1 else f'one in {frame_step}'} measured). Per frame, the live "
        "UNet audio input against MuseTalk's offline one (the clip in one 30 s segment). "
        f"Encoder: ONNX Runtime CPU, {threads} thread(s), batch 1. Default: context "
        f"{default.context_s:g} s, lookahead {default.lookahead_s * 1000:.0f} ms, floor "
        f"{default.floor}.\n\n" + _table(rows) + "\n"
        "Random weights: these figures compare settings and bound cost; how much error the "
        "trained UNet tolerates needs the real weights.\n"
    )
    cost = mel_cost(pcm_16k, default)
    body += (
        f"\nMel work per 40 ms frame of one session (default settings, median of 3 rounds in "
        f"turns): the streaming Whisper mel {cost.streaming_ms:.3f} ms (fed 20 ms packets "
        f"{cost.push_ms:.3f}, the window {cost.window_ms:.3f}), against an STFT of each "
        f"frame's {default.context_s:g} s window {cost.stft_ms:.3f} ms: "
        f"{cost.streaming_ms / cost.stft_ms:.2f}x. The streaming mel runs for every packet, "
        "the window only for rendered frames.\n"
    )
    print(body)
    if record:
        write_section(
            "musetalk-features",
            "MuseTalk live audio features: drift from offline and cost",
            f"avatar-streamer bench musetalk-features --model {model}",
            body,
        )
    return 0


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def register(kinds: Any) -> None:
    parser = kinds.add_parser(
        "musetalk-features", help="live MuseTalk audio features: drift from offline, cost"
    )
    parser.add_argument("--model", type=Path, required=True, help="a MuseTalk model folder")
    parser.add_argument(
        "--contexts",
        type=_floats,
        default=DEFAULT_CONTEXTS_S,
        help="context lengths in seconds, comma-separated",
    )
    parser.add_argument(
        "--lookaheads",
        type=_floats,
        default=DEFAULT_LOOKAHEADS_S,
        help="lookaheads in seconds, comma-separated",
    )
    parser.add_argument("--threads", type=int, default=EngineOptions().intra_op_threads)
    parser.add_argument("--frame-step", type=int, default=1, help="measure every n-th frame")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.set_defaults(
        func=lambda args: run(
            args.model,
            args.contexts,
            args.lookaheads,
            args.threads,
            not args.no_record,
            args.frame_step,
        )
    )
