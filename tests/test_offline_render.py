"""Offline render: a clip with sharp onsets in, an MP4 out whose mouth opens at the onsets.

Real parts: PyAV decoding and encoding (libx264 + AAC), the built-in ONNX model in ONNX
Runtime, the default avatar, the compositor. The MP4 is read back with PyAV, as a player would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.offline.audio import decode_audio
from streamer.offline.cli import load_frame_renderer
from streamer.offline.mp4 import Mp4Writer
from streamer.offline.render import RenderOptions, plan_frames, render_mp4
from streamer.playout.pipeline import PipelineConfig, SessionPipeline
from tests.audio_signals import speechlike
from tests.media_analysis import block_rms
from tests.playout_sim import PACKET_16K, run, send_times

REPO = Path(__file__).resolve().parents[1]
FPS = 25
ONSETS_S = (0.52, 1.73, 2.96)  # deliberately off the 40 ms frame grid
BURST_S = 0.5
CLIP_S = 4.0


def onset_clip(rate_hz: int) -> np.ndarray:
    """Silence with loud voiced bursts starting abruptly at ONSETS_S."""
    voice = speechlike(BURST_S, sample_rate_hz=rate_hz, seed=1)
    t = np.arange(voice.shape[0]) / rate_hz
    # A steady buzz under the syllables: loud from its first sample to its last.
    burst = (0.2 * np.sign(np.sin(2 * np.pi * 140 * t)) + voice).astype(np.float32)
    clip = np.zeros(int(CLIP_S * rate_hz), np.float32)
    for onset in ONSETS_S:
        k = round(onset * rate_hz)
        clip[k : k + burst.shape[0]] = burst
    return clip


def write_wav(path: Path, pcm: np.ndarray, rate_hz: int) -> None:
    with av.open(str(path), "w", "wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate_hz)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (np.clip(pcm, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = rate_hz
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def renderer():  # type: ignore[no-untyped-def]
    return load_frame_renderer(None, "default", REPO / "avatars")


def test_the_offline_plan_makes_the_live_pipelines_decisions() -> None:
    """A live call that received the clip over a clean network and the offline plan of it
    decide the same for every input frame the call played: speech or not, the mouth's
    strength, the avatar frame cycle (one implementation: streamer.playout.mouth)."""
    pcm = onset_clip(16_000)
    offset = 2
    live = SessionPipeline(avatar_frame_count=80, config=PipelineConfig())
    live.set_mel_frame_offset(offset)
    n_packets = pcm.shape[0] // PACKET_16K
    result = run(live, pcm, send_times(n_packets) + 0.005, extra_s=0.5)
    plan = plan_frames(pcm, 80, offset, RenderOptions())
    played = [j for j in result.jobs if j.input_frame is not None]
    assert len(played) >= 0.9 * len(plan)
    assert not any(j.underrun for j in result.jobs if j.strength > 0)
    assert max(j.strength for j in played) == 1.0  # the bursts are speech to both
    for job in played:
        i = job.input_frame
        assert i is not None
        assert job.strength == pytest.approx(float(plan.strengths[i])), i
        assert job.avatar_frame == job.output_index % 80
    assert list(plan.avatar_frames[:100]) == [n % 80 for n in range(100)]


def test_plan_covers_the_audio_and_rests_in_silence() -> None:
    pcm = onset_clip(16_000)
    plan = plan_frames(pcm, 80, 2, RenderOptions())
    assert len(plan) == CLIP_S * FPS
    assert plan.windows.shape == (len(plan), 80, 16)
    assert plan.avatar_frames[81] == 1  # the avatar's frames cycle
    assert plan.strengths[: round(ONSETS_S[0] * FPS) - 4].max() == 0  # silence: at rest
    assert plan.strengths[-5:].max() == 0
    burst = round((ONSETS_S[0] + 0.25) * FPS)
    assert plan.strengths[burst] == 1.0
    # Fades over 3 frames: no jump larger than 1/3 between neighbours.
    assert np.abs(np.diff(plan.strengths)).max() <= 1 / 3 + 1e-6


def test_render_writes_an_mp4_whose_mouth_opens_at_the_onsets(renderer, tmp_path: Path) -> None:
    wav = tmp_path / "onsets.wav"
    write_wav(wav, onset_clip(44_100), 44_100)  # an input rate the pipeline must convert
    out = tmp_path / "out.mp4"
    calls: list[tuple[int, int]] = []
    render_mp4(
        decode_audio(wav),
        renderer,
        out,
        RenderOptions(batch_frames=32),
        lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (100, 100)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    # A standard reader sees H.264 video and AAC audio of the clip's duration.
    with av.open(str(out)) as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - CLIP_S) <= 1 / FPS
        (video,) = container.streams.video
        (audio,) = container.streams.audio
        assert video.codec_context.name == "h264"
        assert audio.codec_context.name == "aac"
        assert (video.width, video.height) == renderer.frame_size_px
        frames = []
        times_s = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            times_s.append(float(frame.pts * frame.time_base))
    with av.open(str(out)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        pcm = np.concatenate(
            [
                o.to_ndarray().reshape(-1)
                for f in container.decode(audio=0)
                for o in resampler.resample(f)
            ]
        )
    assert len(frames) == CLIP_S * FPS
    assert np.allclose(np.diff(times_s), 1 / FPS)

    # The soundtrack's onsets are where the input's were (AAC priming is compensated).
    env = block_rms(pcm, 160)  # 10 ms blocks
    loud = env > 0.25 * env.max()
    audio_onsets_s = [
        k * 0.01 for k in range(1, len(loud)) if loud[k] and not loud[max(0, k - 20) : k].any()
    ]
    assert len(audio_onsets_s) == len(ONSETS_S)
    for got, want in zip(audio_onsets_s, ONSETS_S, strict=True):
        assert abs(got - want) <= 0.015, (got, want)

    # The mouth: difference from the avatar's own frame in the mouth box, per video frame.
    avatar, crops = renderer.avatar, renderer.crops
    x0, y0, x1, y1 = (int(v) for v in crops.boxes.mean(axis=0))
    rest = np.asarray(avatar.frames)
    activity = np.array(
        [
            np.abs(
                f[y0:y1, x0:x1].astype(np.float32)
                - rest[i % rest.shape[0], y0:y1, x0:x1].astype(np.float32)
            ).mean()
            for i, f in enumerate(frames)
        ]
    )
    quiet = np.median(activity[: round(ONSETS_S[0] * FPS) - 5])
    peak = activity.max()
    # The mouth really moves: here H.264 noise reads about 3, an open mouth about 7.
    assert peak > quiet + 2.5, (quiet, peak)
    opening = activity > quiet + 0.25 * (peak - quiet)
    for onset_s, audio_onset_s in zip(ONSETS_S, audio_onsets_s, strict=True):
        first = next(i for i in range(round((onset_s - 0.3) * FPS), len(opening)) if opening[i])
        # Frame i shows time i / fps: the mouth opens within one frame of the sound's onset.
        assert abs(times_s[first] - audio_onset_s) <= 1 / FPS + 1e-6, (onset_s, times_s[first])
        # ... and closes again in the silence after the burst.
        assert not opening[round((onset_s + BURST_S + 0.3) * FPS)]


def test_the_mp4_keeps_the_frames_colours(tmp_path: Path) -> None:
    # Flat patches of blue, green, red, grey and a skin tone: a swapped chroma plane or a
    # wrong range would move them by tens of levels; the codec moves them by a few.
    colours_bgr = [(200, 40, 30), (40, 190, 50), (30, 50, 210), (128, 128, 128), (120, 150, 210)]
    image = np.zeros((128, 128 * len(colours_bgr), 3), np.uint8)
    for k, colour in enumerate(colours_bgr):
        image[:, 128 * k : 128 * (k + 1)] = colour
    path = tmp_path / "colours.mp4"
    writer = Mp4Writer(path, image.shape[1], image.shape[0], FPS)
    writer.write(np.repeat(image[None], 5, axis=0), np.zeros(5 * 1920, np.float32))
    writer.close()
    with av.open(str(path)) as container:
        got = next(iter(container.decode(video=0))).to_ndarray(format="bgr24").astype(float)
    for k, colour in enumerate(colours_bgr):
        patch = got[32:96, 128 * k + 32 : 128 * k + 96].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - colour).max() <= 6, (colour, patch.round(1))


def test_render_command_writes_the_file_and_a_progress_bar(tmp_path: Path) -> None:
    wav = tmp_path / "onsets.wav"
    write_wav(wav, onset_clip(16_000)[:16_000], 16_000)
    out = tmp_path / "cli.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "render", str(wav), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "25/25 frames" in done.stderr
    assert "fps" in done.stderr
    assert "ETA" in done.stderr
    with av.open(str(out)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}


def test_render_command_rejects_a_file_without_audio(tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "render", str(bad), "-o", str(tmp_path / "x.mp4")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot read the audio" in done.stderr


def test_bench_render_reports_multiples_of_real_time(capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli import main

    status = main(
        ["bench", "render", "--seconds", "2", "--batch", "16", "--repeat", "1", "--no-record"]
    )
    out = capsys.readouterr().out
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("| builtin"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    frames, seconds, fps, speed = int(cells[3]), float(cells[4]), float(cells[5]), cells[6]
    assert frames == 50
    assert fps == pytest.approx(frames / seconds, rel=0.02)
    assert float(speed.strip("*x")) == pytest.approx(2.0 / seconds, rel=0.02)
    # The render command as a user runs it, in its own process: the same 50 frames written.
    e2e = next(line for line in out.splitlines() if line.startswith("| render command"))
    cells = [c.strip() for c in e2e.strip("|").split("|")]
    assert int(cells[3]) == 50
    assert float(cells[6].strip("*x")) == pytest.approx(2.0 / float(cells[4]), rel=0.02)
