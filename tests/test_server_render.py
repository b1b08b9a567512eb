"""POST /render next to live calls: the priority executor, the HTTP contract, live latency.

Real parts: the built-in model in ONNX Runtime, the default avatar, PyAV, aiohttp, and a real
aiortc client peer for the live call.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from streamer.probe import promtext
from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.config import RenderConfig
from streamer.server.media.inference import PriorityExecutor
from tests.servers import start_app


def wav_bytes(seconds: float, rate_hz: int = 16_000) -> bytes:
    pcm = speechlike_48k(seconds)[:: 48_000 // rate_hz]
    buf = io.BytesIO()
    with av.open(buf, "w", "wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate_hz)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate_hz
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def form(audio: bytes | None, avatar: str | None = None) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    if audio is not None:
        data.add_field("audio", audio, filename="clip.wav", content_type="audio/wav")
    if avatar is not None:
        data.add_field("avatar", avatar)
    return data


def test_live_calls_run_before_queued_background_calls() -> None:
    executor = PriorityExecutor("test")
    started, gate = threading.Event(), threading.Event()
    order: list[str] = []

    def first_call() -> None:
        started.set()
        gate.wait(5)
        order.append("bg0")

    first = executor.submit_background(first_call)
    assert started.wait(5)  # the worker is busy with it: everything below queues
    queued = [executor.submit_background(order.append, f"bg{k}") for k in (1, 2)]
    live = [executor.submit(order.append, f"live{k}") for k in (1, 2)]
    gate.set()
    for f in (first, *queued, *live):
        f.result(5)
    executor.shutdown()
    executor.shutdown()  # idempotent
    # The running background call finishes; then live work jumps the queue, in order.
    assert order == ["bg0", "live1", "live2", "bg1", "bg2"]
    with pytest.raises(RuntimeError):
        executor.submit(order.append, "late")


def test_exceptions_reach_the_caller_and_cancelled_calls_never_run() -> None:
    executor = PriorityExecutor("test")
    gate = threading.Event()
    ran: list[int] = []
    blocker = executor.submit(gate.wait, 5)
    doomed = executor.submit_background(ran.append, 1)
    assert doomed.cancel()
    failing = executor.submit(lambda: 1 / 0)
    gate.set()
    blocker.result(5)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    executor.shutdown()
    assert ran == []


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[str]:
    config = RenderConfig(sync_max_duration_s=2.0, max_duration_s=30.0, max_upload_bytes=600_000)
    runner, url = await start_app(create_app(ServerConfig(render=config), runtime))
    yield url
    await runner.cleanup()


async def test_a_short_upload_is_answered_with_the_mp4(server: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server}/render", data=form(wav_bytes(1.5))) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.content_type == "video/mp4"
        body = await r.read()
    with av.open(io.BytesIO(body)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 1.5) <= 0.04
        assert sum(1 for _ in container.decode(video=0)) == 38  # ceil(1.5 s * 25)


async def test_a_long_upload_becomes_a_job_to_poll(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server}/render", data=form(wav_bytes(6.0))) as r:
            assert r.status == 202
            job = await r.json()
        assert job["status"] in ("queued", "running")
        assert job["status_url"] == f"/render/{job['job_id']}"
        async with http.get(f"{server}/render/{job['job_id']}/result") as r:
            assert (r.status, (await r.json())["error"]) == (409, "render_not_ready")
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"{server}{job['status_url']}") as r:
                status = await r.json()
            if status["status"] == "done" or time.monotonic() > deadline:
                break
            assert status["frames_done"] <= status["frames_total"]
            await asyncio.sleep(0.1)
        assert status["status"] == "done", status
        assert status["frames_done"] == status["frames_total"] == 150
        async with http.get(f"{server}{status['result_url']}") as r:
            assert r.status == 200
            body = await r.read()
    with av.open(io.BytesIO(body)) as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 6.0) <= 0.04


async def test_bad_uploads_get_json_errors(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        cases = [
            (dict(json={"audio": "x"}), 415, "unsupported_media_type"),
            (dict(data=form(None, avatar="default")), 400, "missing_audio"),
            (dict(data=form(b"RIFF not really a wav file" * 20)), 400, "bad_audio"),
            (dict(data=form(wav_bytes(1.0), avatar="../x")), 400, "invalid_avatar_name"),
            (dict(data=form(wav_bytes(1.0), avatar="nobody")), 404, "avatar_not_found"),
            (dict(data=form(b"\0" * 700_000)), 413, "body_too_large"),
            (dict(data=form(wav_bytes(31.0, rate_hz=8000))), 413, "audio_too_long"),
        ]
        for kwargs, status, code in cases:
            async with http.post(f"{server}/render", **kwargs) as r:
                assert (r.status, (await r.json())["error"]) == (status, code), kwargs
        async with http.get(f"{server}/render/nope") as r:
            assert (r.status, (await r.json())["error"]) == (404, "render_not_found")
        async with http.get(f"{server}/health") as r:
            assert r.status == 200


async def test_too_many_renders_are_refused_with_retry_after(runtime: Runtime) -> None:
    config = RenderConfig(sync_max_duration_s=1.0, max_jobs=1)
    runner, url = await start_app(create_app(ServerConfig(render=config), runtime))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/render", data=form(wav_bytes(8.0))) as r:
                assert r.status == 202
            async with http.post(f"{url}/render", data=form(wav_bytes(8.0))) as r:
                assert r.status == 503
                assert (await r.json())["error"] == "render_busy"
                assert r.headers["Retry-After"] == "10"
    finally:
        await runner.cleanup()  # cancels the running job: shutdown does not wait for renders


@pytest.mark.realtime
async def test_a_render_does_not_stall_a_live_call(runtime: Runtime) -> None:
    config = RenderConfig(max_duration_s=120.0)
    runner, url = await start_app(create_app(ServerConfig(render=config), runtime))
    upload = wav_bytes(60.0)  # made before measuring: this test shares the server's event loop
    try:
        async with aiohttp.ClientSession() as http:
            peer = LoopbackPeer(url, speechlike_48k(8.0), loop=True, keep_frames=False)
            await peer.connect(http)
            await asyncio.sleep(3.0)  # connected, warm
            idle = promtext.parse(await (await http.get(f"{url}/metrics")).text())
            await asyncio.sleep(4.0)  # the same call without a render, for comparison
            before = promtext.parse(await (await http.get(f"{url}/metrics")).text())
            n0, t0 = len(peer.received.video_at_s), time.monotonic()
            async with http.post(f"{url}/render", data=form(upload)) as r:
                assert r.status == 202
                job = await r.json()
            await asyncio.sleep(6.0)
            after = promtext.parse(await (await http.get(f"{url}/metrics")).text())
            fps = (len(peer.received.video_at_s) - n0) / (time.monotonic() - t0)
            async with http.get(f"{url}/render/{job['job_id']}") as r:
                status = await r.json()
            await peer.aclose(http)
    finally:
        await runner.cleanup()

    def p99_ms(a: dict[str, Any], b: dict[str, Any]) -> float:
        name = "avatar_frame_latency_seconds"
        window = promtext.diff(promtext.buckets(a, name), promtext.buckets(b, name))
        return promtext.quantile(window, 0.99) * 1e3

    alone_ms, rendering_ms = p99_ms(before, idle), p99_ms(after, before)
    late = promtext.value(after, "avatar_ticks_late_total") - promtext.value(
        before, "avatar_ticks_late_total"
    )
    print(
        f"live frame latency p99: {alone_ms:.1f} ms alone, {rendering_ms:.1f} ms while "
        f"rendering ({status['frames_done']} frames in 6 s); {fps:.2f} fps; {late:.0f} late ticks"
    )
    # The render really ran alongside (2x real time or more)...
    assert status["frames_done"] >= 250, status
    # ... and the live call kept its budget: p99 under 40 ms, no skipped ticks, 25 fps
    # (+/- 1 for the receiver's timing on a shared machine).
    assert rendering_ms < 40.0, rendering_ms
    assert late == 0
    assert 24.0 <= fps <= 26.0, fps
