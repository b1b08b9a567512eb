"""A local microphone as a channel's driver, with PortAudio (sounddevice) behind a typed seam.

:class:`InputDevices` is the seam: :class:`SoundDeviceInputs` is the real one (it needs the
PortAudio library, Debian package ``libportaudio2``); tests pass a fake. An
:class:`AudioInput` calls its callback from PortAudio's own thread; :class:`MicrophoneDriver`
moves each block onto the event loop (bounded: beyond ``max_pending_blocks`` waiting, blocks
are dropped and counted) and hands it to the channel stamped with its place on the sound
card's own sample clock, so the channel's playout buffer absorbs the card's drift against the
server's clock and a dropped block becomes a filled gap, exactly as a call's lost packet.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from streamer.audio.ingest import pcm_to_frame
from streamer.errors import StreamerError

if TYPE_CHECKING:  # aiortc loads only when serving (keeps the command line quick)
    from streamer.server.channels.channel import Channel, DriverClaim

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

# Called from the capture thread with one mono float32 block at the input's sample rate.
BlockCallback = Callable[[F32], None]


class MicrophoneError(StreamerError):
    """No usable microphone: PortAudio missing, no such device, or the device is busy."""

    code = "microphone_error"


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_sample_rate_hz: float
    is_default: bool


class AudioInput(Protocol):
    """An opened capture device. ``start`` begins calling ``on_block``; ``close`` stops it
    (idempotent; no call after it returns)."""

    @property
    def sample_rate_hz(self) -> int: ...

    def start(self, on_block: BlockCallback) -> None: ...

    def close(self) -> None: ...


class InputDevices(Protocol):
    """The capture seam: list devices and open one (raises MicrophoneError)."""

    def list_inputs(self) -> list[InputDevice]: ...

    def open(self, device: int | None, block_s: float = 0.02) -> AudioInput: ...


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # raised at import when libportaudio is missing
        raise MicrophoneError(
            f"PortAudio is not available ({exc}); install it with: apt-get install libportaudio2"
        ) from exc
    return sounddevice


class _SoundDeviceInput:
    def __init__(self, sd: Any, device: int | None, sample_rate_hz: int, block_s: float) -> None:
        self._sd = sd
        self._device = device
        self._rate = sample_rate_hz
        self._block = max(1, int(block_s * sample_rate_hz))
        self._stream: Any = None

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    def start(self, on_block: BlockCallback) -> None:
        def callback(indata: npt.NDArray[np.float32], frames: int, _t: Any, status: Any) -> None:
            if status:
                log.debug("microphone: %s", status)
            on_block(np.array(indata[:, 0], np.float32))

        try:
            self._stream = self._sd.InputStream(
                device=self._device,
                channels=1,
                samplerate=self._rate,
                blocksize=self._block,
                dtype="float32",
                callback=callback,
            )
            self._stream.start()
        except (self._sd.PortAudioError, ValueError) as exc:
            raise MicrophoneError(
                f"Cannot open input device {self._device_name()}: {exc} (is it busy, or unplugged?)"
            ) from exc

    def _device_name(self) -> str:
        return "(default)" if self._device is None else str(self._device)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()


class SoundDeviceInputs:
    """Real capture through sounddevice/PortAudio."""

    def list_inputs(self) -> list[InputDevice]:
        sd = _sounddevice()
        default_in = sd.default.device[0]
        return [
            InputDevice(
                k,
                str(d["name"]),
                int(d["max_input_channels"]),
                float(d["default_samplerate"]),
                k == default_in,
            )
            for k, d in enumerate(sd.query_devices())
            if int(d["max_input_channels"]) > 0
        ]

    def open(self, device: int | None, block_s: float = 0.02) -> AudioInput:
        sd = _sounddevice()
        try:
            info = sd.query_devices(device, kind="input")
            rate = int(info["default_samplerate"])
            sd.check_input_settings(device=device, channels=1, samplerate=rate, dtype="float32")
        except (sd.PortAudioError, ValueError) as exc:
            which = "the default input device" if device is None else f"input device {device}"
            raise MicrophoneError(
                f"No usable microphone: {which} is missing or busy ({exc}). "
                "List devices with: avatar-streamer live --list-devices"
            ) from exc
        return _SoundDeviceInput(sd, device, rate, block_s)


class MicrophoneDriver:
    """Drives ``channel`` from ``source``: holds the channel's driver claim while running.

    ``start()`` raises ChannelBusyError (another driver) or MicrophoneError. ``aclose()``
    stops capture and frees the channel; it is idempotent.
    """

    def __init__(
        self,
        channel: Channel,
        source: AudioInput,
        loop: asyncio.AbstractEventLoop,
        max_pending_blocks: int = 50,
    ) -> None:
        self.channel = channel
        self.source = source
        self._loop = loop
        self._claim: DriverClaim | None = None
        self._captured_samples = 0  # on the card's clock, dropped blocks included
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._max_pending = max_pending_blocks
        self.blocks_dropped = 0
        self.blocks_pushed = 0

    def start(self) -> None:
        self._claim = self.channel.claim("mic", None)
        try:
            self.source.start(self._on_block_in_capture_thread)
        except BaseException:
            self._claim.release()
            raise

    def _on_block_in_capture_thread(self, block: F32) -> None:
        with self._pending_lock:
            start = self._captured_samples
            self._captured_samples += block.shape[0]
            if self._pending >= self._max_pending:
                self.blocks_dropped += 1  # the event loop is stalled: drop, never pile up
                return
            self._pending += 1
        self._loop.call_soon_threadsafe(self._on_block, block, start)

    def _on_block(self, block: F32, start_sample: int) -> None:
        with self._pending_lock:
            self._pending -= 1
        if self._claim is None or self._claim.released:
            return
        rate_hz = self.source.sample_rate_hz
        frame = pcm_to_frame(block, rate_hz)
        frame.pts = start_sample
        frame.time_base = fractions.Fraction(1, rate_hz)
        self.channel.push_live(frame)
        self.blocks_pushed += 1

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.source.close)
        if self._claim is not None:
            self._claim.release()
