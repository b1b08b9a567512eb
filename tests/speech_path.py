"""A synthetic call for speech-back tests: a voice, what the server does to it, on the way back.

The voice has irregular syllables, pitch, pauses and a few fricatives above 8 kHz; the returned
audio goes through what the server really does to it: Opus, 48 -> 16 -> 48 kHz with FFmpeg's
resampler, -3 dB, Opus again.
"""

from __future__ import annotations

import fractions
import functools

import av
import numpy as np

from streamer.probe.speech_back import ClipSpeech, clip_speech

RATE = 48_000
PACKET = 960
FRAME = 1920  # the server's 40 ms frame
T0_S = 100.0


def synthetic_voice(seconds: float = 12.0, seed: int = 2) -> np.ndarray:
    """Utterances of irregular syllables (80-250 ms, pitch 100-220 Hz, 12 harmonics) with
    short gaps inside and 0.4-0.9 s pauses between them, some with a fricative (noise at
    4-12 kHz); 1 s of silence first; whole 20 ms packets; peak 0.5."""
    rng = np.random.default_rng(seed)
    out = [np.zeros(RATE, np.float32)]
    total = RATE
    while total < (seconds - 1.5) * RATE:
        for _ in range(int(rng.integers(3, 9))):  # syllables of one utterance
            n = int(rng.uniform(0.08, 0.25) * RATE)
            t = np.arange(n) / RATE
            pitch = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
            phase = 2 * np.pi * np.cumsum(pitch) / RATE
            voiced = sum(np.sin(k * phase) / k for k in range(1, 13))
            envelope = np.sin(np.pi * t / t[-1]) ** rng.uniform(0.5, 2) * rng.uniform(0.3, 1)
            syllable = voiced * envelope
            if rng.random() < 0.3:
                hiss = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * _band(n, 4e3, 12e3), n)
                syllable += 0.4 * hiss * envelope
            gap = np.zeros(int(rng.uniform(0.03, 0.15) * RATE))
            out += [syllable.astype(np.float32), gap.astype(np.float32)]
            total += n + gap.size
        pause = np.zeros(int(rng.uniform(0.4, 0.9) * RATE), np.float32)
        out.append(pause)
        total += pause.size
    x = np.concatenate(out)
    x = np.concatenate((x, np.zeros(-x.size % PACKET, np.float32)))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _band(n: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    f = np.fft.rfftfreq(n, 1 / RATE)
    return ((f >= lo_hz) & (f <= hi_hz)).astype(float)


def opus(pcm: np.ndarray) -> np.ndarray:
    """Through libopus and back (20 ms packets, 48 kHz mono), as long as it went in."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = RATE, "mono", "s16", 64_000
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = RATE, "mono"
    s16 = np.clip(pcm * 32767, -32768, 32767).astype(np.int16)
    s16 = np.concatenate((s16, np.zeros(-s16.size % PACKET + 3 * PACKET, np.int16)))
    out = []
    for k in range(s16.size // PACKET):
        frame = av.AudioFrame.from_ndarray(
            s16[k * PACKET : (k + 1) * PACKET].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = (
            RATE,
            k * PACKET,
            fractions.Fraction(1, RATE),
        )
        for packet in enc.encode(frame):
            for decoded in dec.decode(packet):
                out.append(decoded.to_ndarray().reshape(-1).astype(np.float32))
    y = np.concatenate(out)
    if np.abs(y).max() > 2:  # s16 out
        y = y / 32768
    return y[: pcm.size].astype(np.float32)


def resample(pcm: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_hz)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = from_hz, 0, fractions.Fraction(1, from_hz)
    parts = [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


@functools.cache
def call() -> tuple[ClipSpeech, np.ndarray, np.ndarray, np.ndarray]:
    """(clip speech, the clip, send times of 3 loops of it, the audio the server returns)."""
    clip = synthetic_voice()
    sent = np.tile(clip, 3)
    rng = np.random.default_rng(7)
    packets = sent.size // PACKET
    sent_at = T0_S + np.arange(packets) * 0.02 + rng.uniform(0, 0.002, packets)  # paced
    # The server returns speech at about half its energy (-3 dB, measured on the real one).
    back = opus(resample(resample(opus(sent), RATE, 16_000), 16_000, RATE) * np.float32(0.7071))
    return clip_speech(clip), clip, sent_at, back
