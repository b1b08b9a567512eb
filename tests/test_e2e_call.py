"""A real call over loopback: an aiortc client peer sends speech, the real server answers.

Real parts only: the built-in ONNX model in ONNX Runtime, the default avatar, aiortc on both
ends, VP8 and Opus. Wall-clock bounds are generous where the machine is shared, and each is
explained.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from streamer.crop import CropConvention
from streamer.probe.peer import LoopbackPeer
from streamer.server.app import SERVER, Runtime, ServerConfig, create_app
from tests.media_analysis import best_lag_s, block_rms, mouth_activity, speech_back_of
from tests.servers import start_app
from tests.speech import spoken_clip

pytestmark = pytest.mark.realtime


async def test_call_lip_syncs_speech_at_25_fps(server, runtime: Runtime) -> None:
    url, app = server
    clip = spoken_clip()  # 1 s silence, ~8 s of speech with pauses, 1 s silence
    async with aiohttp.ClientSession() as http:
        peer = LoopbackPeer(url, clip)
        await peer.connect(http)
        await asyncio.sleep(12.0)
        metrics = await (await http.get(f"{url}/metrics")).text()
        health = await (await http.get(f"{url}/health")).json()
        await peer.aclose(http)
    got = peer.received
    assert health["sessions"] == 1
    assert health["model"]["name"] == "builtin"

    # First frame within 1 s of the answer (ICE + DTLS + first keyframe on loopback).
    assert peer.answered_at_s is not None
    assert got.video_at_s, "no video arrived"
    assert got.video_at_s[0] - peer.answered_at_s < 1.0

    # 25 +/- 0.5 fps over 10 s, counted after the first second.
    t = np.asarray(got.video_at_s)
    in_window = np.sum((t >= t[0] + 1.0) & (t < t[0] + 11.0))
    assert abs(in_window / 10.0 - 25.0) <= 0.5, in_window

    # The returned audio is the speech that was sent, delayed by the pipeline: server-side
    # lookahead and playout target + tick wait, plus the receiver's jitter buffer. Measured
    # per utterance, placed by RTP position in stretches (the soak's measure): a server stall
    # on this shared machine moves the delay by a tick or two, and one global lag would then
    # read the speech after it as lost.
    returned = np.concatenate(got.audio_pcm).astype(np.float32) / 32768
    returned_env = block_rms(returned, 960)
    assert returned_env.max() > 0.05, "the returned audio is silent"
    back = speech_back_of(clip, peer.track.sent_at_s, got)
    assert back.utterances >= 3, back.utterances
    assert back.fraction >= 0.95, (back.fraction, back.utterance_fraction)
    delay_s = float(np.nanmedian(back.utterance_delay_s))
    assert 0.15 <= delay_s <= 0.45, back.utterance_delay_s

    # The mouth follows the speech: its motion correlates with the returned audio's envelope,
    # at a lag within one frame of zero after correcting for the receiver: an aiortc receiver
    # holds audio ~80 ms in its jitter buffer and video ~40 ms (one frame), so a server that
    # sends lips and sound together reads about -40 ms here.
    prepared = runtime.renderer.avatars.get("default")  # type: ignore[attr-defined]
    avatar, crops = prepared.avatar, prepared.crops
    assert crops.convention is CropConvention.MOUTH
    mouth = mouth_activity(got.video_frames, np.asarray(avatar.frames), crops.boxes.mean(axis=0))
    lag_s, corr = best_lag_s(
        t, mouth, np.asarray(got.audio_at_s), returned_env.astype(np.float64), 0.3
    )
    assert corr > 0.6, corr
    receiver_bias_s = -0.04
    assert abs(lag_s - receiver_bias_s) <= 0.04, lag_s

    # Server-side figures are exported.
    assert "avatar_frame_latency_seconds_bucket" in metrics
    assert 'avatar_frames_total{kind="render"}' in metrics
    assert app[SERVER].sessions == {}  # DELETE ended the session


async def test_bad_offers_get_json_errors_and_the_server_keeps_serving(server) -> None:
    url, app = server
    async with aiohttp.ClientSession() as http:
        cases = [
            (
                dict(data="not json", headers={"Content-Type": "application/json"}),
                400,
                "invalid_json",
            ),
            (dict(data="x", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
            (dict(json=[1, 2]), 400, "invalid_json"),
            (dict(json={"sdp": "v=0", "type": "answer"}), 400, "invalid_offer"),
            (dict(json={"sdp": "v=0\r\nm=video 9 UDP 0\r\n", "type": "offer"}), 400, "no_audio"),
            (dict(json={"sdp": "garbage m=audio", "type": "offer"}), 400, "bad_sdp"),
            (
                dict(json={"sdp": "v=0 m=audio", "type": "offer", "avatar": "../etc"}),
                400,
                "invalid_avatar_name",
            ),
            (
                dict(json={"sdp": "v=0 m=audio", "type": "offer", "avatar": "nobody"}),
                404,
                "avatar_not_found",
            ),
            (
                dict(
                    data=b"{" + b" " * 400_000 + b"}", headers={"Content-Type": "application/json"}
                ),
                413,
                "body_too_large",
            ),
        ]
        for kwargs, status, code in cases:
            async with http.post(f"{url}/offer", **kwargs) as r:
                assert (r.status, (await r.json())["error"]) == (status, code), kwargs
        async with http.delete(f"{url}/sessions/nope") as r:
            assert (r.status, (await r.json())["error"]) == (404, "session_not_found")
        async with http.get(f"{url}/no/such/page") as r:
            assert (r.status, (await r.json())["error"]) == (404, "not_found")
        async with http.put(f"{url}/offer") as r:
            assert (r.status, (await r.json())["error"]) == (405, "method_not_allowed")
        async with http.get(f"{url}/health") as r:
            assert r.status == 200
    assert app[SERVER].sessions == {}


async def test_session_limit_answers_503_with_retry_after(runtime: Runtime) -> None:
    app = create_app(ServerConfig(max_sessions=1), runtime)
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as http:
            first = LoopbackPeer(url, np.zeros(48_000, np.float32), keep_frames=False)
            await first.connect(http)
            second = LoopbackPeer(url, np.zeros(48_000, np.float32), keep_frames=False)
            with pytest.raises(RuntimeError, match="503"):
                await second.connect(http)
            await second.aclose()
            async with http.get(f"{url}/health") as r:
                assert (await r.json())["sessions"] == 1
            await first.aclose(http)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("codec", "absent"), [("vp8", "H264"), ("h264", "VP8")])
async def test_the_video_codec_is_the_configured_one(
    runtime: Runtime, codec: str, absent: str
) -> None:
    app = create_app(ServerConfig(video_codec=codec), runtime)
    runner, url = await start_app(app)
    peer = LoopbackPeer(url, np.zeros(48_000, np.float32), keep_frames=False)
    try:
        async with aiohttp.ClientSession() as http:
            await peer.connect(http)
            answer = peer.pc.remoteDescription.sdp
            video = answer[answer.index("m=video") :]
            assert f"{codec.upper()}/90000" in video
            assert f"{absent}/90000" not in video
            # The server's own encoder of that codec: the client's real decoder reads it.
            await asyncio.sleep(2.0)
            assert len(peer.received.video_at_s) >= 35, len(peer.received.video_at_s)
            await peer.aclose(http)
    finally:
        await runner.cleanup()
