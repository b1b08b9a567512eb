"""Spoken test clips: espeak-ng when installed (CI installs it), a synthetic voice otherwise."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np

from tests.audio_signals import speechlike

SENTENCES = (
    "Hello there. [[ ]] This is the avatar streamer speaking. [[ ]] "
    "It moves its lips in time with every word you say, twenty five times a second."
)


def _decode(path: Path, rate_hz: int) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
        parts = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def spoken_clip(rate_hz: int = 48_000, lead_silence_s: float = 1.0) -> np.ndarray:
    """Mono float32: silence, then a few spoken sentences with pauses, then silence."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            subprocess.run(
                ["espeak-ng", "-s", "150", "-w", str(wav), SENTENCES], check=True, timeout=30
            )
            voice = _decode(wav, rate_hz)
        voice *= 0.5 / max(1e-6, float(np.abs(voice).max()))
    else:
        voice = speechlike(8.0, sample_rate_hz=rate_hz)
    pad = np.zeros(int(lead_silence_s * rate_hz), np.float32)
    return np.concatenate((pad, voice, pad))
