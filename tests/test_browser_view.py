"""The OBS view page in real headless Chromium (autoplay policy as in OBS's browser): it plays
the channel without a gesture, with sound, on a transparent page, filling the window; the
chroma-key colour; and reconnecting by itself when the server restarts."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import web

from streamer.client import ChannelClient
from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.channels.routes import CHANNELS
from tests.audio_signals import pcm16, vowel
from tests.browser import CHROMIUM, Browser
from tests.media_analysis import mouth_activity
from tests.servers import free_port, start_app
from tests.speech import spoken_clip
from tests.test_browser_call import write_wav

pytestmark = [
    pytest.mark.realtime,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (scripts/check installs it)"
    ),
]

REPO = Path(__file__).resolve().parents[1]
UPDATE_IMAGES = os.environ.get("AVATAR_STREAMER_UPDATE_IMAGES") == "1"

STATS = """
(async () => {
  const v = document.getElementById("video");
  const out = { muted: v.muted, paused: v.paused, videoWidth: v.videoWidth,
                state: window.viewState && { ...window.viewState } };
  return out;
})()
"""

LAYOUT = """
(() => {
  const r = document.getElementById("video").getBoundingClientRect();
  const visible = [...document.body.children].filter(
      (e) => e.tagName !== "SCRIPT" && getComputedStyle(e).display !== "none");
  return { x: r.x, y: r.y, w: r.width, h: r.height, winW: innerWidth, winH: innerHeight,
           bodyBg: getComputedStyle(document.body).backgroundColor,
           htmlBg: getComputedStyle(document.documentElement).backgroundColor,
           visible: visible.map((e) => e.tagName),
           controls: document.getElementById("video").controls };
})()
"""


async def serve(runtime: Runtime, port: int) -> web.AppRunner:
    """On a fixed port: the restart tests start a second server where the first one was."""
    runner, _url = await start_app(create_app(ServerConfig(port=port), runtime), port)
    return runner


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[tuple[str, web.AppRunner]]:
    port = free_port()
    runner = await serve(runtime, port)
    yield f"http://127.0.0.1:{port}", runner
    await runner.cleanup()


AUDIO_ENERGY = """
(async () => {
  let energy = 0;
  (await window.viewPc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") energy = r.totalAudioEnergy || 0;
  });
  return energy;
})()
"""


async def test_view_page_autoplays_with_sound_transparent_and_filling_the_window(
    server, tmp_path: Path
) -> None:
    url, runner = server
    async with Browser() as page:
        # A transparent default background, so the screenshot keeps the page's alpha.
        await page.send(
            "Emulation.setDefaultBackgroundColorOverride", color={"r": 0, "g": 0, "b": 0, "a": 0}
        )
        await page.goto(f"{url}/view/studio")
        # No click, no key: it plays on its own, with sound (as in OBS's browser).
        await page.wait_for("window.viewState.status === 'live'", 15)
        await page.wait_for("document.getElementById('video').videoWidth > 0", 10)
        channel = runner.app[CHANNELS].get("studio")
        assert len(channel.viewers) == 1
        quiet_energy = await page.evaluate(AUDIO_ENERGY)
        async with await ChannelClient.connect(url, "studio", 24_000) as driver:
            await driver.push(pcm16(vowel(4.0, on_s=0.7, off_s=0.3)))
            await driver.end_of_segment()
            await driver.wait_for("playback_started", 5)
            before = await page.evaluate("window.viewState.framesDecoded")
            await asyncio.sleep(2.5)
            if UPDATE_IMAGES:
                await page.screenshot(REPO / "docs" / "images" / "obs-view.png")
            else:
                await page.screenshot(tmp_path / "obs-view.png")
            state = await page.evaluate(STATS)
            layout = await page.evaluate(LAYOUT)
            energy = await page.evaluate(AUDIO_ENERGY) - quiet_energy
            tracks = await page.evaluate(
                "document.getElementById('video').srcObject.getTracks().map((t) => t.kind).sort()"
            )
            await driver.wait_for("playback_finished", 10)
    assert state["muted"] is False
    assert state["paused"] is False
    assert state["videoWidth"] == 512
    assert state["state"]["framesDecoded"] - before >= 40  # ~2 s at 25 fps, sampled each second
    # The sound is part of what the unmuted video element plays, and it is the voice.
    assert tracks == ["audio", "video"]
    assert energy > 0.05, energy
    # Only the video, filling the window, on a transparent page.
    assert (layout["x"], layout["y"]) == (0, 0)
    assert (layout["w"], layout["h"]) == (layout["winW"], layout["winH"])
    assert layout["visible"] == ["VIDEO"]
    assert layout["controls"] is False
    assert layout["bodyBg"] == "rgba(0, 0, 0, 0)"
    assert layout["htmlBg"] == "rgba(0, 0, 0, 0)"


async def test_view_page_takes_a_chroma_key_colour(server) -> None:
    url, _ = server
    async with Browser() as page:
        await page.goto(f"{url}/view/studio?bg=00ff00")
        await page.wait_for("window.viewState.status === 'live'", 15)
        layout = await page.evaluate(LAYOUT)
    assert layout["bodyBg"] == "rgb(0, 255, 0)"


async def test_view_page_reconnects_by_itself_after_a_server_restart(runtime: Runtime) -> None:
    port = free_port()
    runner = await serve(runtime, port)
    try:
        async with Browser() as page:
            await page.goto(f"http://127.0.0.1:{port}/view/studio")
            await page.wait_for("window.viewState.status === 'live'", 15)
            connects = await page.evaluate("window.viewState.connects")
            await runner.cleanup()
            await page.wait_for("window.viewState.status === 'reconnecting'", 10)
            runner = await serve(runtime, port)
            # Stall detection (3 s) + back-off (at most 5 s) + a new WHEP exchange.
            await page.wait_for("window.viewState.status === 'live'", 20)
            frames = await page.evaluate("window.viewState.framesDecoded")
            await asyncio.sleep(2.2)
            assert await page.evaluate("window.viewState.framesDecoded") > frames
            assert await page.evaluate("window.viewState.connects") > connects
            assert len(runner.app[CHANNELS].get("studio").viewers) == 1
    finally:
        await runner.cleanup()


async def mouth_shown(page: Browser, runtime: Runtime) -> float:
    """How far the mouth on screen is from the avatar at rest (mouth_activity), read from a
    screenshot of a 512 x 512 page: what a viewer (or OBS) sees, whatever element shows it."""
    prepared = runtime.renderer.avatars.get("default")  # type: ignore[attr-defined]
    avatar, crops = prepared.avatar, prepared.crops
    shot = await page.send("Page.captureScreenshot", format="png")
    png = np.frombuffer(base64.b64decode(shot["data"]), np.uint8)
    shown = cv2.imdecode(png, cv2.IMREAD_COLOR)
    frames = np.asarray(avatar.frames)
    assert shown.shape == frames.shape[1:], shown.shape
    return float(mouth_activity([shown], frames, crops.boxes.mean(axis=0))[0])


async def test_view_page_is_left_on_the_avatar_at_rest_when_the_server_stops(
    runtime: Runtime,
) -> None:
    port = free_port()
    runner = await serve(runtime, port)
    stopped = False
    try:
        async with Browser() as page:
            # The page at the avatar's size, so a screenshot pixel is a frame pixel.
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=512,
                height=512,
                deviceScaleFactor=1,
                mobile=False,
            )
            await page.goto(f"http://127.0.0.1:{port}/view/studio")
            await page.wait_for("window.viewState.status === 'live'", 15)
            await asyncio.sleep(1.5)
            at_rest = await mouth_shown(page, runtime)
            url = f"http://127.0.0.1:{port}"
            async with await ChannelClient.connect(url, "studio", 24_000) as driver:
                await driver.push(pcm16(vowel(20.0)))
                await driver.wait_for("playback_started", 5)
                await asyncio.sleep(2.0)
                speaking = await mouth_shown(page, runtime)
                stopped = True
                await runner.cleanup()  # mid-vowel, as on SIGTERM
            await page.wait_for("window.viewState.status === 'reconnecting'", 10)
            await asyncio.sleep(0.5)
            last = await mouth_shown(page, runtime)
            still = await page.evaluate("getComputedStyle(still).display")
    finally:
        if not stopped:
            await runner.cleanup()
    print(f"page mouth: rest {at_rest:.1f}, speaking {speaking:.1f}, after the stop {last:.1f}")
    assert speaking > at_rest + 2.0, (at_rest, speaking)
    # Still showing the avatar (not a blank page), with the mouth at rest.
    assert still == "block"
    assert last <= at_rest + 0.25 * (speaking - at_rest), (at_rest, speaking, last)


async def test_the_call_page_publishes_its_microphone_into_a_channel(
    server, tmp_path: Path
) -> None:
    url, runner = server
    wav = tmp_path / "voice.wav"
    write_wav(wav, spoken_clip(48_000), 48_000)
    async with Browser(fake_audio_wav=wav) as page:
        await page.goto(url + "/")
        await page.evaluate("document.getElementById('channel').value = 'stage'")
        await page.evaluate("document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent === 'live'", 15)
        channel = runner.app[CHANNELS].get("stage")
        assert channel.driver is not None
        assert channel.driver.kind == "call"
        await page.wait_for("document.getElementById('video').videoWidth > 0", 10)
        await asyncio.sleep(4.0)
        rendered = channel.pipeline.stats.rendered
        live_packets = channel.pipeline.snapshot().jitter.observations  # since it went live
        await page.evaluate("document.getElementById('stop').click()")
        await asyncio.sleep(1.0)
        assert channel.driver is None  # stopping freed the channel
    assert live_packets > 3 * 50  # the microphone's 20 ms packets went into the channel
    assert rendered > 10  # and moved the avatar's mouth for the channel's viewers


async def test_where_autoplay_with_sound_is_refused_it_plays_muted_until_a_click(server) -> None:
    url, _ = server
    # A browser with the default policy (a gesture needed for sound), unlike OBS's.
    policy = ("--autoplay-policy=document-user-activation-required",)
    async with Browser(extra_args=policy) as page:
        await page.goto(f"{url}/view/studio")
        await page.wait_for("window.viewState.status === 'live'", 15)
        before = await page.evaluate(STATS)
        for kind in ("mousePressed", "mouseReleased"):
            await page.send(
                "Input.dispatchMouseEvent", type=kind, x=100, y=100, button="left", clickCount=1
            )
        await page.wait_for("window.viewState.muted === false", 5)
        after = await page.evaluate(STATS)
    assert before["muted"] is True  # refused with sound: playing muted rather than not at all
    assert before["paused"] is False
    assert before["videoWidth"] == 512
    assert after["muted"] is False
    assert after["paused"] is False
