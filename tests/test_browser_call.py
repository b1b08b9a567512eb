"""The call page in real headless Chromium: fake microphone from a WAV file, a real call."""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.jitter import JitterConfig
from streamer.server.app import Runtime, ServerConfig, create_app
from tests.browser import CHROMIUM, Browser
from tests.servers import start_app
from tests.speech import spoken_clip

pytestmark = [
    pytest.mark.realtime,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (scripts/check installs it)"
    ),
]

REPO = Path(__file__).resolve().parents[1]
# Set to 1 to refresh the screenshot committed in docs/images.
UPDATE_IMAGES = os.environ.get("AVATAR_STREAMER_UPDATE_IMAGES") == "1"


@pytest.fixture
async def url(runtime: Runtime) -> AsyncIterator[str]:
    runner, url = await start_app(create_app(ServerConfig(), runtime))
    yield url
    await runner.cleanup()


def write_wav(path: Path, pcm: np.ndarray, rate_hz: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


VIDEO_STATS = """
(async () => {
  const pc = window.avatarPc;
  if (!pc) return null;
  let v = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") v = r;
  });
  return v && { framesDecoded: v.framesDecoded || 0, framesDropped: v.framesDropped || 0,
                freezeCount: v.freezeCount || 0, totalFreezesDuration: v.totalFreezesDuration || 0,
                frameWidth: v.frameWidth || 0, t: performance.now() };
})()
"""


AUDIO_STATS = """
(async () => {
  let a = null;
  (await window.avatarPc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") a = r;
  });
  return a && { samples: a.totalSamplesReceived || 0, concealed: a.concealedSamples || 0,
                t: performance.now() };
})()
"""


async def test_call_page_decodes_25_fps_without_freezes(url: str, tmp_path: Path) -> None:
    wav = tmp_path / "voice.wav"
    write_wav(wav, spoken_clip(48_000), 48_000)
    async with Browser(fake_audio_wav=wav) as page:
        await page.goto(url + "/")
        assert await page.evaluate("document.title") == "avatar-streamer"
        await page.evaluate("document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent === 'live'", 15)
        await page.wait_for("document.getElementById('video').videoWidth > 0", 10)
        await asyncio.sleep(2.0)  # let the decoder and jitter buffer settle
        first, heard0 = await page.evaluate(VIDEO_STATS), await page.evaluate(AUDIO_STATS)
        await asyncio.sleep(10.0)
        last, heard = await page.evaluate(VIDEO_STATS), await page.evaluate(AUDIO_STATS)
        overlay = await page.evaluate("document.getElementById('stats').textContent")
        playout = await page.evaluate("window.avatarPlayout")
        if UPDATE_IMAGES:
            await page.screenshot(REPO / "docs" / "images" / "call-page.png")
        else:
            await page.screenshot(tmp_path / "call-page.png")
        await page.evaluate("document.getElementById('stop').click()")
    fps = (last["framesDecoded"] - first["framesDecoded"]) / ((last["t"] - first["t"]) / 1000)
    assert abs(fps - 25.0) <= 1.0, fps
    assert last["freezeCount"] - first["freezeCount"] == 0
    assert last["frameWidth"] == 512
    # The server's own Opus (mono, as played) decodes in the browser: 48,000 samples a second
    # received, nearly none of them concealed. (Headless Chromium reports totalAudioEnergy 0
    # here, sound or not: it is not checked.)
    samples = heard["samples"] - heard0["samples"]
    seconds = (heard["t"] - heard0["t"]) / 1000
    assert abs(samples / seconds - 48_000) <= 2_400, samples / seconds
    assert heard["concealed"] - heard0["concealed"] <= 0.05 * samples, heard
    assert "fps" in overlay
    # The server's playout buffer, as the overlay shows it (GET /sessions/{id}).
    assert "server delay" in overlay
    assert "target" in overlay
    assert playout["adaptive"] is True
    jitter = JitterConfig()
    assert jitter.min_delay_s * 1000 <= playout["target_delay_ms"] <= jitter.max_delay_s * 1000
    assert playout["dropped_speech_frames"] == 0
