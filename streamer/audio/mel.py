"""Wav2Lip's mel features, offline (:func:`compute_mel`) and streaming (:class:`MelExtractor`).

The feature contract (Wav2Lip's ``hparams.py`` and ``audio.py``): 16 kHz mono; pre-emphasis
0.97; STFT with n_fft 800, hop 200 (80 mel frames per second), a periodic Hann window of 800,
centred with reflect padding; magnitude; Slaney mel filterbank, 80 bins, 55-7600 Hz;
``20*log10(max(1e-5, x)) - 20`` dB; normalised as ``clip(8*(S+100)/100 - 4, -4, 4)``.

Both paths share :meth:`MelParams.columns` so the streaming features are the offline ones,
computed in float64 and stored as float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.audio.stft import ColumnRing, StreamingFrames
from streamer.errors import AudioGoneError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SAMPLE_RATE_HZ = 16_000
N_FFT = 800
HOP_SAMPLES = 200
MEL_FRAMES_PER_S = SAMPLE_RATE_HZ // HOP_SAMPLES  # 80
N_MELS = 80
FMIN_HZ = 55.0
FMAX_HZ = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
WINDOW_COLUMNS = 16  # mel frames per video frame window (200 ms)
SILENCE = -MAX_ABS_VALUE  # the feature value of digital silence


def _hz_to_mel_slaney(f_hz: F64) -> F64:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = f_hz / f_sp
    high = f_hz >= min_log_hz
    mels[high] = min_log_mel + np.log(f_hz[high] / min_log_hz) / logstep
    return mels


def _mel_to_hz_slaney(mels: F64) -> F64:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * mels
    high = mels >= min_log_mel
    freqs[high] = min_log_hz * np.exp(logstep * (mels[high] - min_log_mel))
    return freqs


def slaney_filterbank(
    sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float
) -> F64:
    """Slaney-scale, Slaney-normalised triangular mel filters, float64 ``[n_mels, 1 + n_fft//2]``.

    What ``librosa.filters.mel(htk=False, norm="slaney")`` computes; Wav2Lip and Whisper both
    use it (with different sizes and bands).
    """
    fft_freqs_hz = np.linspace(0.0, sample_rate_hz / 2, 1 + n_fft // 2)
    mel_edges = np.linspace(
        _hz_to_mel_slaney(np.array([fmin_hz]))[0],
        _hz_to_mel_slaney(np.array([fmax_hz]))[0],
        n_mels + 2,
    )
    edges_hz = _mel_to_hz_slaney(mel_edges)
    fdiff = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]
    return weights


@functools.cache
def mel_basis() -> F64:
    """Wav2Lip's mel filterbank, float64 ``[80, 401]`` (read-only)."""
    weights = slaney_filterbank(SAMPLE_RATE_HZ, N_FFT, N_MELS, FMIN_HZ, FMAX_HZ)
    weights.setflags(write=False)
    return weights


@functools.cache
def periodic_hann(length: int) -> F64:
    """Periodic Hann window, as ``scipy.signal.get_window("hann", length, fftbins=True)``
    (read-only: computed once per length)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    w.setflags(write=False)
    return w


def frames_to_columns(frames: F64) -> F32:
    """Feature columns ``[80, n]`` for STFT frames ``[n, 800]`` of pre-emphasised audio."""
    spectrum = np.abs(np.fft.rfft(frames * periodic_hann(N_FFT), axis=1))  # [n, 401]
    mel = mel_basis() @ spectrum.T  # [80, n]
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def _frame_view(padded: F64, n_frames: int) -> F64:
    """Read-only view ``[n_frames, 800]`` of STFT frames hopping by 200 samples."""
    if padded.shape[0] < (n_frames - 1) * HOP_SAMPLES + N_FFT:
        raise ValueError("not enough audio for the frames asked")
    stride = padded.strides[0]
    return np.lib.stride_tricks.as_strided(
        padded, (n_frames, N_FFT), (HOP_SAMPLES * stride, stride), writeable=False
    )


def preemphasis(pcm: F64, previous_sample: float = 0.0) -> F64:
    """``y[n] = x[n] - 0.97 x[n-1]`` with ``x[-1] = previous_sample``."""
    out = np.empty_like(pcm)
    if pcm.shape[0]:
        out[0] = pcm[0] - PREEMPHASIS * previous_sample
        out[1:] = pcm[1:] - PREEMPHASIS * pcm[:-1]
    return out


def compute_mel(pcm_16k: npt.ArrayLike) -> F32:
    """Wav2Lip's offline features of 16 kHz mono audio: float32 ``[80, 1 + len // 200]``.

    Column ``t`` describes the 50 ms of audio centred on sample ``200 t``; the edges are
    reflect-padded as ``librosa.stft(center=True, pad_mode="reflect")`` does.
    """
    x = np.asarray(pcm_16k, dtype=np.float64).reshape(-1)
    if x.shape[0] < 2:
        raise ValueError("compute_mel needs at least 2 samples")
    padded = np.pad(preemphasis(x), N_FFT // 2, mode="reflect")
    n_frames = 1 + x.shape[0] // HOP_SAMPLES
    return frames_to_columns(_frame_view(padded, n_frames))


def window_start_column(frame_index: int, fps: int = 25, frame_offset: int = 2) -> int:
    """First mel column of video frame ``frame_index``'s window.

    ``int(80 * (frame_index - frame_offset) / fps)`` as Wav2Lip computes it (truncating toward
    zero), in exact integer arithmetic. With the training alignment (offset 2) the window of
    frame i reaches 120 ms past the frame's time; offset 0 gives the offline script's 200 ms.
    """
    num = MEL_FRAMES_PER_S * (frame_index - frame_offset)
    q = abs(num) // fps
    return q if num >= 0 else -q


@dataclass(frozen=True)
class MelExtractorStats:
    samples_pushed: int
    columns_computed: int


class MelExtractor:
    """Streaming Wav2Lip features: push 16 kHz audio in any chunk sizes, read frame windows.

    Each mel column is computed once, as soon as the audio it spans has arrived (50 ms after
    its centre), and kept in a ring of ``capacity_s`` seconds of columns; asking for a window
    whose columns were overwritten raises :class:`AudioGoneError`. ``window(i)`` equals
    ``compute_mel(all_audio)[:, s:s+16]`` with ``s = window_start_column(i)``, with columns
    before 0 being silence (-4.0). Synchronous; one owner pushes and reads.
    """

    def __init__(self, fps: int = 25, frame_offset: int = 2, capacity_s: float = 10.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.frame_offset = frame_offset
        cap = round(capacity_s * MEL_FRAMES_PER_S)
        if cap < WINDOW_COLUMNS:
            raise ValueError(f"capacity_s must hold at least one window, got {capacity_s}")
        self._columns = ColumnRing(N_MELS, cap, np.float32, SILENCE)
        # Pre-emphasised audio, framed as compute_mel frames it (reflect-padded at the start).
        self._frames = StreamingFrames(N_FFT, HOP_SAMPLES)
        self._last_sample = 0.0

    @property
    def capacity_columns(self) -> int:
        return self._columns.capacity

    @property
    def columns_computed(self) -> int:
        return self._columns.count

    @property
    def samples_pushed(self) -> int:
        return self._frames.samples_pushed

    def stats(self) -> MelExtractorStats:
        return MelExtractorStats(self.samples_pushed, self.columns_computed)

    def push(self, pcm_16k: npt.ArrayLike) -> int:
        """Append 16 kHz mono samples; returns how many new columns were computed."""
        x = np.asarray(pcm_16k, dtype=np.float64).reshape(-1)
        if x.shape[0] == 0:
            return 0
        y = preemphasis(x, self._last_sample)
        self._last_sample = float(x[-1])
        frames = self._frames.push(y)
        if frames.shape[0]:
            self._columns.append(frames_to_columns(frames))
        return int(frames.shape[0])

    def window_start(self, frame_index: int) -> int:
        return window_start_column(frame_index, self.fps, self.frame_offset)

    def samples_needed(self, frame_index: int) -> int:
        """How many pushed samples complete frame ``frame_index``'s window.

        Column ``t`` spans samples ``[200 t - 400, 200 t + 400)``, so ``c`` columns exist once
        ``200 c + 200`` samples have arrived (and never before 401: the reflect padding of
        column 0 needs samples 1..400).
        """
        return self._frames.samples_needed(self.window_start(frame_index) + WINDOW_COLUMNS)

    def frames_ready(self) -> int:
        """Number of video frames (0, 1, ...) whose window is complete."""
        # window_start is non-decreasing in the frame index: find the first incomplete frame.
        n = max(0, (self.columns_computed - WINDOW_COLUMNS) * self.fps // MEL_FRAMES_PER_S)
        n = max(0, n - 2)
        while self.window_start(n) + WINDOW_COLUMNS <= self.columns_computed:
            n += 1
        return n

    def window(self, frame_index: int) -> F32 | None:
        """Features ``[80, 16]`` for video frame ``frame_index``, or None until complete."""
        start = self.window_start(frame_index)
        stop = start + WINDOW_COLUMNS
        if stop > self.columns_computed:
            return None
        first_real = max(start, 0)
        if first_real < self._columns.oldest:
            raise AudioGoneError(
                f"features of frame {frame_index} are gone: columns {first_real}..{stop} "
                f"were overwritten (holding {self._columns.oldest}..{self.columns_computed})"
            )
        out = np.full((N_MELS, WINDOW_COLUMNS), SILENCE, dtype=np.float32)
        if first_real < stop:  # else the whole window lies before the stream
            out[:, first_real - start :] = self._columns.read(first_real, stop)
        return out
