"""The microphone driver: through its seam with a fake capture device (a real thread playing a
clip in real time) into a real channel and a real WHEP viewer; the command line's errors; and
the real PortAudio path where this machine has an input device."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web

from streamer.cli import main
from streamer.client import ChannelClient, ChannelClientError
from streamer.probe.viewer import WhepViewer
from streamer.server.app import Runtime, ServerConfig, create_app
from streamer.server.channels.microphone import (
    BlockCallback,
    InputDevice,
    MicrophoneDriver,
    MicrophoneError,
    SoundDeviceInputs,
)
from streamer.server.channels.routes import CHANNELS
from streamer.server.commands.live import attach_microphone
from streamer.server.commands.live import run as live_run
from tests.media_analysis import block_rms
from tests.servers import start_app
from tests.speech import spoken_clip


class FakeInput:
    """A capture device that plays ``clip`` from its own thread in 20 ms blocks, in real time,
    like PortAudio's callback thread."""

    def __init__(self, clip: np.ndarray, sample_rate_hz: int) -> None:
        self.clip = clip
        self._rate = sample_rate_hz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    def start(self, on_block: BlockCallback) -> None:
        def play() -> None:
            block = self._rate // 50
            t0 = time.monotonic()
            for k, start in enumerate(range(0, len(self.clip) - block + 1, block)):
                if self._stop.wait(max(0.0, t0 + k * 0.02 - time.monotonic())):
                    return
                on_block(self.clip[start : start + block])

        self._thread = threading.Thread(target=play, name="fake-capture")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class FakeDevices:
    def __init__(self, source: FakeInput | None = None) -> None:
        self.source = source

    def list_inputs(self) -> list[InputDevice]:
        return [InputDevice(0, "Fake USB mic", 1, 48_000.0, True)]

    def open(self, device: int | None, block_s: float = 0.02) -> FakeInput:
        if self.source is None or device not in (None, 0):
            raise MicrophoneError(f"No usable microphone: input device {device} is missing.")
        return self.source


@pytest.mark.realtime
async def test_microphone_drives_a_channel_through_the_seam(runtime: Runtime) -> None:
    clip = spoken_clip(48_000, lead_silence_s=0.5)
    source = FakeDevices(FakeInput(clip, 48_000)).open(None)
    app = create_app(ServerConfig(), runtime)
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as http:
            viewer = WhepViewer(url, "desk", keep_frames=False)
            await viewer.connect(http)
            channel = await app[CHANNELS].get_or_create("desk")
            driver = MicrophoneDriver(channel, source, asyncio.get_running_loop())
            driver.start()
            assert channel.driver is not None
            assert channel.driver.kind == "mic"
            with pytest.raises(ChannelClientError, match="409"):
                await ChannelClient.connect(url, "desk", http=http)
            await asyncio.sleep(clip.shape[0] / 48_000 + 0.8)
            # Real time in, real time out, through the playout buffer: nothing dropped or
            # concealed, and the delay stayed near its target.
            playout = channel.pipeline.snapshot()
            assert channel.pipeline.live
            assert playout.stats.dropped_input_frames == 0
            assert playout.stats.concealed == 0
            assert playout.playout_delay_s is not None
            assert playout.playout_delay_s <= playout.target_delay_s + 0.06
            await driver.aclose()
            assert not channel.pipeline.live  # back to its queue
            assert channel.driver is None
            await viewer.aclose(http)
    finally:
        await runner.cleanup()
    assert driver.blocks_dropped == 0
    assert driver.blocks_pushed >= 0.95 * clip.shape[0] / 960
    heard = np.concatenate(viewer.received.audio_pcm).astype(np.float32) / 32768
    sent_env, heard_env = block_rms(clip, 960), block_rms(heard, 960)
    corr = np.correlate(heard_env - heard_env.mean(), sent_env - sent_env.mean(), "valid")
    k = int(np.argmax(corr))
    assert np.corrcoef(heard_env[k : k + len(sent_env)], sent_env)[0, 1] > 0.9


class CountingChannel:
    """Stands in for the channel to count what reaches the event loop."""

    def __init__(self) -> None:
        self.pushed = 0
        self.pts: list[int] = []
        self.driver = None

    def claim(self, kind: str, listener: object) -> object:
        class Claim:
            released = False

            def release(self) -> None:
                self.released = True

        return Claim()

    def push_live(self, frame: av.AudioFrame) -> None:
        self.pushed += 1
        self.pts.append(int(frame.pts or 0))


async def test_a_stalled_event_loop_drops_microphone_blocks_instead_of_piling_them_up() -> None:
    channel = CountingChannel()
    source = FakeInput(np.zeros(48_000, np.float32), 48_000)
    driver = MicrophoneDriver(
        channel,  # type: ignore[arg-type]
        source,
        asyncio.get_running_loop(),
        max_pending_blocks=3,
    )
    driver.start()
    source.close()  # the fake thread stops; feed blocks by hand while the loop cannot run
    for _ in range(10):
        driver._on_block_in_capture_thread(np.zeros(960, np.float32))
    assert driver.blocks_dropped >= 7
    await asyncio.sleep(0.05)
    assert channel.pushed == driver.blocks_pushed
    assert driver.blocks_pushed + driver.blocks_dropped >= 10
    # Each block carries its place on the card's clock: dropped ones leave a gap in the pts
    # (the playout buffer fills it), so later audio keeps its time.
    assert channel.pts == sorted(channel.pts)
    driver._on_block_in_capture_thread(np.zeros(960, np.float32))
    await asyncio.sleep(0.05)
    total = driver.blocks_pushed + driver.blocks_dropped
    assert channel.pts[-1] == (total - 1) * 960


def test_list_devices_prints_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(list_devices=True)
    assert live_run(args, FakeDevices()) == 0
    assert "*   0  Fake USB mic  (1 ch, 48000 Hz)" in capsys.readouterr().out


def test_a_missing_device_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    # The real PortAudio path: no machine has input device 99.
    assert main(["live", "--mic", "--device", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "input device 99" in err[0]
    assert "--list-devices" in err[0]


def test_live_needs_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["live"])
    assert exited.value.code == 2
    assert "--mic" in capsys.readouterr().err


def test_real_portaudio_capture() -> None:
    inputs = SoundDeviceInputs()
    if not inputs.list_inputs():
        pytest.skip("no audio input device on this machine (PortAudio found none)")
    source = inputs.open(None)
    blocks: list[np.ndarray] = []
    source.start(blocks.append)
    time.sleep(0.5)
    source.close()
    assert len(blocks) >= 10  # 20 ms blocks for half a second, give or take start-up
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)


@pytest.mark.realtime
async def test_live_attaches_the_microphone_for_the_app_lifetime(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FakeInput(np.zeros(48_000 * 30, np.float32), 48_000)
    app = create_app(ServerConfig(), runtime)
    attach_microphone(app, "stage", source, "http://127.0.0.1:8080")
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        channel = app[CHANNELS].get("stage")
        assert channel.driver is not None
        assert channel.driver.kind == "mic"
        out = capsys.readouterr().out
        assert "OBS Browser Source: http://127.0.0.1:8080/view/stage" in out
        assert "WHEP: http://127.0.0.1:8080/channels/stage/whep" in out
        await asyncio.sleep(0.3)
        assert channel.pipeline.live
        assert channel.pipeline.input_samples > 0
        assert source._thread is not None
        assert source._thread.is_alive()
    finally:
        await runner.cleanup()
    assert not source._thread.is_alive()  # capture stopped with the app
    assert channel.driver is None
