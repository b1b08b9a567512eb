"""The clip each soak peer loops: speech with silences, 48 kHz mono, and its speech onsets."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.offline.audio import decode_audio
from streamer.probe.signals import speechlike_48k
from streamer.probe.speech_back import ClipSpeech, clip_speech

F32 = npt.NDArray[np.float32]

RATE_HZ = 48_000
PACKET_SAMPLES = 960  # 20 ms, what the client track sends
# Short phrases a second apart: each starts with the mouth at rest even when the mouth follows
# the voice a few hundred ms late (a jittery network, a deep playout buffer), so each gives a
# mouth-to-lips figure: six per loop of about 15 s.
PHRASES = (
    "Hello there.",
    "This is the avatar streamer.",
    "It moves its lips with every word.",
    "Twenty five frames a second.",
    "Can you see my mouth?",
    "Goodbye for now.",
)
PAUSE_MS = 1000


@dataclass(frozen=True)
class SoakClip:
    """``pcm`` float32 mono 48 kHz, a whole number of 20 ms packets long (the loop period);
    ``onset_samples``: where speech starts after at least ``min_silence_s`` of quiet."""

    pcm: F32
    onset_samples: tuple[int, ...]

    @property
    def duration_s(self) -> float:
        return int(self.pcm.shape[0]) / RATE_HZ

    @functools.cached_property
    def speech(self) -> ClipSpeech:
        """Its speech blocks and utterances, as speech back measures them (computed once)."""
        return clip_speech(self.pcm)


def synthesise() -> F32:
    """Spoken phrases a second apart from espeak-ng when installed, else a speech-like
    signal."""
    if shutil.which("espeak-ng") is None:
        return speechlike_48k(10.0)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        pause = f'<break time="{PAUSE_MS}ms"/>'
        ssml = "<speak>" + pause.join(PHRASES) + "</speak>"
        subprocess.run(
            ["espeak-ng", "-m", "-s", "150", "-w", str(wav), ssml], check=True, timeout=60
        )
        return decode_audio(wav).pcm_48k


def find_onsets(pcm: F32, min_silence_s: float = 0.25, block_s: float = 0.01) -> tuple[int, ...]:
    """Sample indices where the 10 ms RMS rises above 10 % of its peak after a quiet stretch."""
    block = int(block_s * RATE_HZ)
    n = pcm.shape[0] // block
    rms = np.sqrt((pcm[: n * block].astype(np.float64).reshape(n, block) ** 2).mean(axis=1))
    loud = rms > 0.1 * float(rms.max(initial=0.0))
    quiet_blocks = round(min_silence_s / block_s)
    onsets = [
        k * block
        for k in range(quiet_blocks, n)
        if loud[k] and not loud[k - quiet_blocks : k].any()
    ]
    return tuple(onsets)


def make_clip(source: Path | None, lead_s: float = 1.0, tail_s: float = 1.5) -> SoakClip:
    """The clip from ``source`` (any audio file) or synthesised, between silences, normalised
    to a peak of 0.5 and padded to whole 20 ms packets."""
    voice = decode_audio(source).pcm_48k if source is not None else synthesise()
    voice = voice * np.float32(0.5 / max(1e-6, float(np.abs(voice).max())))
    pcm = np.concatenate(
        (
            np.zeros(int(lead_s * RATE_HZ), np.float32),
            voice,
            np.zeros(int(tail_s * RATE_HZ), np.float32),
        )
    )
    pcm = np.concatenate((pcm, np.zeros(-pcm.shape[0] % PACKET_SAMPLES, np.float32)))
    return SoakClip(pcm.astype(np.float32), find_onsets(pcm))


def wav_bytes(pcm_48k: F32) -> bytes:
    """``pcm_48k`` (mono float in [-1, 1]) as a 48 kHz 16-bit WAV file: what a benchmark
    uploads, or decodes again as any caller's file would be."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes((np.clip(pcm_48k, -1, 1) * 32767).astype(np.int16).tobytes())
    return out.getvalue()
