"""Plan and render the frames of a whole audio clip: the live path's decisions, in batches.

Frame ``i`` shows time ``i / fps``; its mel window is the one the live path uses for input
frame ``i`` (the model's alignment), and the speech gate, the mouth's fade and the avatar
frame are the live path's own decisions (:mod:`streamer.playout.mouth`), with its settings.
So an offline render of a clip looks like a live call that received it, with its soundtrack in
sync (the live path sends the frame's own 40 ms of audio with it; here the soundtrack starts
at frame 0's time).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

from streamer.audio.mel import (
    N_MELS,
    SILENCE,
    WINDOW_COLUMNS,
    compute_mel,
    window_start_column,
)
from streamer.avatar import Avatar, AvatarCrops, composite
from streamer.engine import LipSyncEngine
from streamer.offline.audio import OUTPUT_RATE_HZ, DecodedAudio
from streamer.offline.mp4 import Mp4Writer
from streamer.playout.mouth import avatar_frame, speech_windows, strengths
from streamer.playout.pipeline import PipelineConfig

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

FEATURE_RATE_HZ = 16_000


@dataclass(frozen=True)
class RenderOptions:
    # The live path's settings: frame rate, speech threshold, mouth fade.
    live: PipelineConfig = field(default_factory=PipelineConfig)
    # Frames per model call: on a CPU, 8-32 render fastest (docs/benchmarks.md, bench render).
    batch_frames: int = 16

    @property
    def fps(self) -> int:
        return self.live.fps


@dataclass(frozen=True)
class FramePlan:
    """What every output frame shows. ``windows`` f32 [N,80,16] (Wav2Lip's mel windows, which
    also gate speech), ``strengths`` f32 [N] in [0, 1] (0: the avatar frame as it is),
    ``avatar_frames`` int64 [N]. ``features``: the model's own audio features when it does not
    read ``windows`` (MuseTalk: its encoder's states f32 [P,5,384], 50 a second), else None."""

    windows: F32
    strengths: F32
    avatar_frames: I64
    fps: int
    features: F32 | None = None

    def __len__(self) -> int:
        return int(self.strengths.shape[0])

    @property
    def duration_s(self) -> float:
        return len(self) / self.fps


def plan_frames(
    pcm_16k: F32, avatar_frame_count: int, mel_frame_offset: int, options: RenderOptions
) -> FramePlan:
    """Windows, mouth strengths and avatar frames for 16 kHz mono ``pcm_16k`` (ceil to frames)."""
    fps = options.fps
    samples_per_frame = FEATURE_RATE_HZ // fps
    n_frames = max(1, -(-int(pcm_16k.shape[0]) // samples_per_frame))
    # Silence after the end, so the last frames' windows (120 ms of lookahead) are real
    # features of silence, as the live path would compute once the speaker stops.
    tail = np.zeros(FEATURE_RATE_HZ // 2, np.float32)
    mel = compute_mel(np.concatenate((np.asarray(pcm_16k, np.float32), tail)))
    # Columns before 0 are silence, as in the streaming extractor.
    pad = WINDOW_COLUMNS * 2
    padded = np.concatenate((np.full((N_MELS, pad), SILENCE, np.float32), mel), axis=1)
    starts = np.array(
        [window_start_column(i, fps, mel_frame_offset) + pad for i in range(n_frames)], np.int64
    )
    idx = starts[:, None] + np.arange(WINDOW_COLUMNS)[None, :]  # [N,16]
    windows = np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2))  # [N,80,16]
    live = options.live
    mouth = strengths(speech_windows(windows, live.speech_threshold), live.blend_frames)
    frames = np.array([avatar_frame(n, avatar_frame_count) for n in range(n_frames)], np.int64)
    return FramePlan(windows=windows, strengths=mouth, avatar_frames=frames, fps=fps)


class Renderer(Protocol):
    """Plans a clip's frames and renders ranges of the plan (one per model family)."""

    @property
    def avatar(self) -> Avatar: ...

    @property
    def frame_size_px(self) -> tuple[int, int]: ...

    def plan(self, pcm_16k: F32, options: RenderOptions) -> FramePlan: ...

    def render(self, plan: FramePlan, start: int, stop: int) -> U8: ...


class FrameRenderer:
    """Renders ranges of a :class:`FramePlan` with one engine call per range (Wav2Lip-contract
    models). Synchronous; thread-safe as far as the engine is (the live path's engine may be
    shared)."""

    def __init__(self, engine: LipSyncEngine, avatar: Avatar, crops: AvatarCrops) -> None:
        self.engine = engine
        self.avatar = avatar
        self.crops = crops

    @property
    def frame_size_px(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        h, w = self.avatar.frames.shape[1:3]
        return int(w), int(h)

    def plan(self, pcm_16k: F32, options: RenderOptions) -> FramePlan:
        return plan_frames(
            pcm_16k, self.avatar.frame_count, self.engine.info.mel_frame_offset, options
        )

    def render(self, plan: FramePlan, start: int, stop: int) -> U8:
        """BGR frames ``[stop - start, H, W, 3]`` uint8 for plan frames ``start..stop-1``."""
        windows = plan.windows[start:stop]

        def generate(active: I64, rows: I64) -> U8:
            return self.engine.generate(windows[active], np.asarray(self.crops.faces[rows]))

        return composite_range(self.avatar, self.crops, plan, start, stop, generate)


def composite_range(
    avatar: Avatar,
    crops: AvatarCrops,
    plan: FramePlan,
    start: int,
    stop: int,
    generate: Callable[[I64, I64], U8],
) -> U8:
    """BGR frames ``[stop - start, H, W, 3]`` uint8 for plan frames ``start..stop-1``: the
    avatar's frames, with generated faces pasted (at the plan's strength) where the mouth is
    active. ``generate(active, rows)`` returns the faces ``[len(active), S, S, 3]`` of plan
    frames ``start + active``, which show avatar frames ``rows``; it is not called when no
    frame of the range is active."""
    avatar_frames = plan.avatar_frames[start:stop]
    strengths = plan.strengths[start:stop]
    # Indexing with an array already copies the frames out of the cache's memory map: no
    # second copy.
    out = np.asarray(avatar.frames[avatar_frames], dtype=np.uint8)
    active = np.flatnonzero(strengths > 0)
    if active.size:
        rows = avatar_frames[active]
        out[active] = composite(
            out[active],
            generate(active, rows),
            crops.boxes[rows],
            crops.masks[rows],
            strengths[active],
        )
    return out


class Progress(Protocol):
    def __call__(self, frames_done: int, frames_total: int) -> None: ...


def render_mp4(
    audio: DecodedAudio,
    renderer: Renderer,
    target: Path | BinaryIO,
    options: RenderOptions | None = None,
    progress: Progress | None = None,
    encoder_threads: int = 0,
) -> FramePlan:
    """Render ``audio`` to an MP4 at ``target`` in batches of ``options.batch_frames``.

    Blocking (seconds to minutes); returns the plan it rendered. ``progress`` is called after
    every batch with frames done and the total."""
    opts = options or RenderOptions()
    plan = renderer.plan(audio.pcm_16k, opts)
    width, height = renderer.frame_size_px
    samples_per_frame = OUTPUT_RATE_HZ // opts.fps
    # The soundtrack fills the last frame with silence, so both tracks last len(plan) frames.
    sound = np.zeros(len(plan) * samples_per_frame, np.float32)
    sound[: audio.pcm_48k.shape[0]] = audio.pcm_48k[: sound.shape[0]]
    writer = Mp4Writer(target, width, height, opts.fps, OUTPUT_RATE_HZ, threads=encoder_threads)
    # The encoder works on batch k in its own thread while the model renders batch k + 1
    # (both release the GIL); at most one batch waits for it, so memory stays bounded.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mp4-encoder") as encoder:
        pending: concurrent.futures.Future[None] | None = None
        try:
            for start in range(0, len(plan), opts.batch_frames):
                stop = min(len(plan), start + opts.batch_frames)
                frames = renderer.render(plan, start, stop)
                if pending is not None:
                    pending.result()
                    if progress is not None:
                        progress(start, len(plan))
                chunk = sound[start * samples_per_frame : stop * samples_per_frame]
                pending = encoder.submit(writer.write, frames, chunk)
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                concurrent.futures.wait([pending])
            writer.close()
    if progress is not None:
        progress(len(plan), len(plan))
    return plan
