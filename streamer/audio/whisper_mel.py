"""Whisper's log-mel features, the input of MuseTalk's audio encoder: :func:`whisper_log_mel`.

The contract is ``WhisperFeatureExtractor`` with whisper-tiny's defaults, as MuseTalk calls it
(``musetalk/utils/audio_processor.py``): 16 kHz mono float; a centred STFT (reflect padding),
n_fft 400 with a periodic Hann window, hop 160 (100 mel frames per second); the power
spectrum; Slaney mel filters, 80 bins, 0-8000 Hz; ``log10(max(x, 1e-10))``; the last frame
dropped; floored at (the segment's maximum - 8); ``(x + 4) / 4``.

Offline, MuseTalk cuts a clip into 30 s segments and zero-pads the last one to 30 s
(:func:`offline_segments`), so the floor is the maximum over a whole 30 s segment. Live,
:class:`StreamingWhisperMel` computes each column of a session's stream once, as its audio
arrives; the floor is applied per encoder window
(:mod:`streamer.engine.musetalk.streaming`).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from streamer.audio.mel import periodic_hann, slaney_filterbank
from streamer.audio.stft import ColumnRing, StreamingFrames, samples_needed

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SAMPLE_RATE_HZ = 16_000
N_FFT = 400
HOP_SAMPLES = 160
MEL_FRAMES_PER_S = SAMPLE_RATE_HZ // HOP_SAMPLES  # 100
N_MELS = 80
FMAX_HZ = 8_000.0
SEGMENT_S = 30
SEGMENT_SAMPLES = SEGMENT_S * SAMPLE_RATE_HZ  # 480_000
SEGMENT_COLUMNS = SEGMENT_SAMPLES // HOP_SAMPLES  # 3_000
LOG_FLOOR_RANGE = 8.0  # decades below the segment's maximum that are kept
LOG_MIN_POWER = 1e-10


@functools.cache
def whisper_mel_filters() -> F64:
    """Whisper's mel filterbank, float64 ``[80, 201]`` (read-only)."""
    weights = slaney_filterbank(SAMPLE_RATE_HZ, N_FFT, N_MELS, 0.0, FMAX_HZ)
    weights.setflags(write=False)
    return weights


def whisper_log10_mel(pcm_16k: npt.ArrayLike) -> F64:
    """``log10`` of Whisper's mel power, before the floor: float64 ``[80, len // 160]``.

    Column ``t`` describes the 25 ms of audio centred on sample ``160 t``. Raises ValueError
    for fewer than 201 samples (the reflect padding needs them).
    """
    x = np.asarray(pcm_16k, dtype=np.float64).reshape(-1)
    if x.shape[0] <= N_FFT // 2:
        raise ValueError(f"whisper_log_mel needs more than {N_FFT // 2} samples")
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_SAMPLES]
    return _log10_mel_of_frames(frames)[:, :-1]  # [80, 1 + len // 160] less the last


def _log10_mel_of_frames(frames: F64) -> F64:
    """``log10`` mel power of STFT frames ``[n, 400]``: ``[80, n]``."""
    power = np.abs(np.fft.rfft(frames * periodic_hann(N_FFT), axis=1)) ** 2
    log10_mel: F64 = np.log10(np.maximum(whisper_mel_filters() @ power.T, LOG_MIN_POWER))
    return log10_mel


class StreamingWhisperMel:
    """:func:`whisper_log10_mel` of a continuous 16 kHz stream, each column computed once.

    Column ``t`` (centred on sample ``160 t``) is computed as soon as the samples it reads have
    arrived (``160 t + 200`` of them): it equals the offline column of any clip that holds
    those samples and starts where the stream does (the first two read the stream's start
    reflected, as offline). Not thread-safe: one owner. Bounded: keeps the last
    ``capacity_columns`` (a read of older ones raises :class:`AudioGoneError`), and the
    samples of the columns not yet computed.
    """

    def __init__(self, capacity_columns: int) -> None:
        self.capacity_columns = capacity_columns
        self._frames = StreamingFrames(N_FFT, HOP_SAMPLES)
        self._columns = ColumnRing(N_MELS, capacity_columns, np.float64)

    @property
    def columns_ready(self) -> int:
        return self._columns.count

    @property
    def samples_pushed(self) -> int:
        return self._frames.samples_pushed

    @staticmethod
    def samples_needed(columns: int) -> int:
        """Samples that complete the first ``columns`` columns."""
        return samples_needed(columns, N_FFT, HOP_SAMPLES)

    def push(self, samples: npt.ArrayLike) -> None:
        """Append the stream's next samples; computes every column they complete."""
        frames = self._frames.push(samples)
        if frames.shape[0]:
            self._columns.append(_log10_mel_of_frames(frames))

    def read(self, start: int, stop: int) -> F64:
        """Columns ``[start, stop)``, float64 ``[80, stop - start]`` (a copy). Raises
        ValueError for columns not computed yet, AudioGoneError for overwritten ones."""
        return np.asarray(self._columns.read(start, stop), np.float64)


def normalise(log10_mel: F64, peak: float) -> F32:
    """Whisper's scaling: floored at ``peak - 8``, then ``(x + 4) / 4``; float32."""
    floored = np.maximum(log10_mel, peak - LOG_FLOOR_RANGE)
    features: F32 = ((floored + 4.0) / 4.0).astype(np.float32)
    return features


def whisper_log_mel(pcm_16k: npt.ArrayLike) -> F32:
    """Whisper's features of 16 kHz mono audio: float32 ``[80, len // 160]``.

    The floor's peak is the maximum over this very input: pass a whole (padded) segment to
    reproduce offline features.
    """
    log10_mel = whisper_log10_mel(pcm_16k)
    return normalise(log10_mel, float(log10_mel.max()))


def offline_segments(pcm_16k: npt.ArrayLike) -> list[F32]:
    """MuseTalk's offline features of a clip: one ``[80, 3000]`` array per 30 s segment.

    Each segment (the last one zero-padded to 30 s) gets its own floor, as MuseTalk's
    ``AudioProcessor.get_audio_feature`` does.
    """
    x = np.asarray(pcm_16k, dtype=np.float64).reshape(-1)
    segments = []
    for start in range(0, max(x.shape[0], 1), SEGMENT_SAMPLES):
        segment = np.zeros(SEGMENT_SAMPLES)
        chunk = x[start : start + SEGMENT_SAMPLES]
        segment[: chunk.shape[0]] = chunk
        segments.append(whisper_log_mel(segment))
    return segments
