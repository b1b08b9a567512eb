"""Live MuseTalk calls on the tiny random-weight model: each rendered frame carries its encoder
input from the session's own audio, one tick renders every session in one batch, and a real
call through the server (slow on this CPU: served with --allow-slow-model) lip-syncs."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from streamer.avatar import composite, load_avatar
from streamer.engine.musetalk.engine import MuseTalkEngine
from streamer.engine.musetalk.streaming import (
    MEL_FRAME_OFFSET,
    LiveFeatures,
    LiveFeatureSettings,
    frame_span,
)
from streamer.errors import ModelError
from streamer.playout.pipeline import FrameJob, JobKind, PipelineConfig, SessionPipeline
from streamer.playout.queue import ChannelPipeline
from streamer.probe.peer import LoopbackPeer
from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.media.clock import ManualClock
from streamer.server.media.hub import MediaHub
from streamer.server.media.lipsync import AvatarLibrary, LipSyncRenderer, MuseTalkFaces
from streamer.server.media.renderer import RenderRequest
from streamer.server.media.runtime import build_runtime
from tests.media_analysis import mouth_activity
from tests.servers import start_app
from tests.speech import spoken_clip
from tests.speech_path import resample
from tests.test_server_render import form, wav_bytes

TICK_S = 0.04


@pytest.fixture(scope="module")
def engine(musetalk_tiny: Path) -> MuseTalkEngine:
    return MuseTalkEngine(musetalk_tiny)


@pytest.fixture(scope="module")
def avatars(small_avatar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small avatar, its latents cached once for this module."""
    root = tmp_path_factory.mktemp("live-avatars")
    shutil.copytree(small_avatar / "small", root / "small")
    return root


@pytest.fixture(scope="module")
def musetalk_runtime(musetalk_tiny: Path, avatars: Path) -> Runtime:
    """What `serve --model FOLDER --avatar small --allow-slow-model` loads."""
    return build_runtime(avatars, "small", musetalk_tiny, allow_slow_model=True)


@pytest.fixture(scope="module")
def speech_16k() -> np.ndarray:
    return resample(spoken_clip(), 48_000, 16_000).astype(np.float32)


def live_jobs(pcm_16k: np.ndarray, settings: LiveFeatureSettings) -> list[tuple[FrameJob, int]]:
    """Every job a MuseTalk-configured pipeline gives while ``pcm_16k`` arrives in 20 ms
    packets, on time, one tick per 40 ms; with the samples pushed when each was given."""
    pipeline = SessionPipeline(4)
    pipeline.set_mel_frame_offset(MEL_FRAME_OFFSET)
    pipeline.set_live_features(LiveFeatures(settings))
    jobs = []
    for k in range(pcm_16k.shape[0] // 320):
        now_s = (k + 1) * 0.02
        pipeline.push_pcm_16k(pcm_16k[k * 320 : (k + 1) * 320], now_s)
        if k % 2:
            jobs.append((pipeline.next_job(now_s), pipeline.input_samples))
    return jobs


def heard_up_to(frame: int, settings: LiveFeatureSettings, pcm_16k: np.ndarray) -> LiveFeatures:
    """A session's live features that have heard ``pcm_16k`` up to what ``frame`` needs."""
    live = LiveFeatures(settings)
    live.push(pcm_16k[: live.samples_needed(frame)])
    return live


def test_rendered_frames_carry_their_encoder_input(speech_16k: np.ndarray) -> None:
    settings = LiveFeatureSettings(floor="window")  # stateless: comparable to a fresh reader
    jobs = live_jobs(speech_16k[: 16_000 * 6], settings)
    rendered = [(job, pushed) for job, pushed in jobs if job.kind is JobKind.RENDER]
    assert len(rendered) > 25, len(rendered)
    reader = LiveFeatures(settings)
    reader.push(speech_16k[: 16_000 * 6])
    for job, pushed in rendered:
        run = job.encoder_input
        assert run is not None
        if job.underrun:  # fading on the last window
            continue
        assert job.input_frame is not None
        assert run.frame_index == job.input_frame
        start, end = frame_span(job.input_frame, settings)
        assert end <= reader.samples_needed(job.input_frame) <= pushed, "played before its audio"
        assert run.start_position * 320 == start
        expected = reader.encoder_input(job.input_frame)
        np.testing.assert_array_equal(run.mel, expected.mel)
        assert run.first_position == expected.first_position
    assert not any(job.encoder_input is not None for job, _ in jobs if job.kind is JobKind.IDLE)


def test_a_mel_window_ending_before_the_lookahead_is_refused() -> None:
    pipeline = SessionPipeline(4)
    pipeline.set_mel_frame_offset(2)  # Wav2Lip's: ends 120 ms past the frame
    with pytest.raises(ValueError, match="past its mel window"):
        pipeline.set_live_features(LiveFeatures(LiveFeatureSettings(lookahead_s=0.16)))


def test_one_tick_renders_every_session_as_each_alone(
    engine: MuseTalkEngine, avatars: Path, speech_16k: np.ndarray
) -> None:
    faces = MuseTalkFaces(engine)
    renderer = LipSyncRenderer(faces, AvatarLibrary(avatars, faces.prepare))
    settings = LiveFeatureSettings()
    # Frame 12's window is shorter (the session's first second), frame 90's whole: two
    # encoder batches in one tick.
    requests = []
    for frame, avatar_frame in ((12, 1), (90, 3)):
        job = FrameJob(
            kind=JobKind.RENDER,
            output_index=frame,
            avatar_frame=avatar_frame,
            audio_16k=np.zeros(640, np.float32),
            input_frame=frame,
            encoder_input=heard_up_to(frame, settings, speech_16k).encoder_input(frame),
            strength=1.0,
        )
        requests.append(RenderRequest(avatar="small", job=job, previous=None))
    assert requests[0].job.encoder_input.positions < requests[1].job.encoder_input.positions  # type: ignore[union-attr]
    together = renderer.render(requests)
    alone = [renderer.render([r])[0] for r in requests]

    prepared = renderer.avatars.get("small")
    avatar = load_avatar("small", avatars)
    for request, image, single in zip(requests, together, alone, strict=True):
        job = request.job
        assert job.input_frame is not None
        np.testing.assert_allclose(image, single, atol=2)  # batch vs alone: float rounding
        # The face is the model's output for this frame's live features, pasted.
        live = heard_up_to(job.input_frame, settings, speech_16k)
        audio = live.features(engine.encode_audio, job.input_frame)
        face = engine.generate(audio[None], prepared.latents[job.avatar_frame][None])
        f = job.avatar_frame
        expected = composite(
            avatar.frames[f : f + 1],
            face,
            prepared.crops.boxes[f : f + 1],
            prepared.crops.masks[f : f + 1],
            np.ones(1, np.float32),
        )[0]
        np.testing.assert_allclose(image, expected, atol=2)
        assert np.abs(image.astype(int) - avatar.frames[f]).max() > 20  # a face was pasted


def test_serve_refuses_the_slow_model_unless_allowed(musetalk_tiny: Path, avatars: Path) -> None:
    with pytest.raises(ModelError, match=r"or pass --allow-slow-model to serve it anyway"):
        build_runtime(avatars, "small", musetalk_tiny)


async def test_channels_get_the_live_features_too(
    musetalk_runtime: Runtime, speech_16k: np.ndarray
) -> None:
    # Calls and channels take their pipelines from the hub: a channel's pushed speech renders
    # with MuseTalk's own audio input.
    hub = MediaHub(musetalk_runtime, ManualClock(), PipelineConfig())
    try:
        pipeline = hub.configure(ChannelPipeline(4, hub.pipeline_config))
        pipeline.playout.push(speech_16k[16_000 : 16_000 * 4])
        pipeline.playout.end_segment()
        jobs = [pipeline.next_job(1000.0 + 0.04 * k) for k in range(75)]
    finally:
        await hub.aclose()
    rendered = [job for job in jobs if job.kind is JobKind.RENDER]
    assert len(rendered) > 10, len(rendered)
    assert all(job.encoder_input is not None for job in rendered)
    request = RenderRequest(avatar="small", job=rendered[-1], previous=None)
    image = musetalk_runtime.renderer.render([request])[0]
    assert image.shape == (512, 512, 3)


@pytest.mark.realtime
@pytest.mark.slow
async def test_a_server_with_a_musetalk_model_serves_calls_and_renders(
    musetalk_runtime: Runtime,
) -> None:
    runtime = musetalk_runtime
    assert runtime.model["family"] == "musetalk"
    clip = spoken_clip()
    runner, url = await start_app(create_app(ServerConfig(avatar="small"), runtime))
    try:
        async with aiohttp.ClientSession() as http:
            peer = LoopbackPeer(url, clip)
            await peer.connect(http)
            # ~3 frames a second on this CPU: 10 s of the call give ~30 frames.
            await asyncio.sleep(10.0)
            health = await (await http.get(f"{url}/health")).json()
            await peer.aclose(http)
            # POST /render with the same model: a 1 s clip answered with the MP4.
            async with http.post(f"{url}/render", data=form(wav_bytes(1.0))) as r:
                assert r.status == 200, await r.text()
                mp4 = await r.read()
    finally:
        await runner.cleanup()
    assert health["model"]["family"] == "musetalk"
    frames = peer.received.video_frames
    assert len(frames) >= 10, len(frames)
    prepared = runtime.renderer.avatars.get("small")  # type: ignore[attr-defined]
    mouth = mouth_activity(frames, np.asarray(prepared.avatar.frames), prepared.crops.boxes.mean(0))
    # Idle frames (the lead silence) show the avatar itself, blurred by VP8 at ~3 frames a
    # second (~6 levels off); rendered ones the model's face, far from it with random weights.
    assert mouth.min() < 10.0, mouth.round(1)
    assert mouth.max() > 2.5 * mouth.min(), mouth.round(1)

    with av.open(io.BytesIO(mp4)) as container:
        rendered = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(rendered) == 25
    mouth = mouth_activity(
        rendered, np.asarray(prepared.avatar.frames), prepared.crops.boxes.mean(0)
    )
    assert mouth.max() > 15.0, mouth.round(1)  # the model's faces (random weights) pasted
