"""Decode an audio file (wav, mp3, ogg, m4a, anything FFmpeg reads) to 16 kHz mono float32."""

from __future__ import annotations

import io

import av
import numpy as np
import numpy.typing as npt

from streamer.errors import AudioFormatError

F32 = npt.NDArray[np.float32]


def decode_audio_bytes(data: bytes, sample_rate_hz: int = 16_000, max_s: float = 600.0) -> F32:
    """The first audio stream of ``data`` as mono float32 at ``sample_rate_hz``.

    Synchronous and CPU-bound (run it in an executor). Raises AudioFormatError when the bytes
    are not a readable audio file, hold no audio, or last longer than ``max_s``.
    """
    max_samples = int(max_s * sample_rate_hz)
    parts: list[F32] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioFormatError("The file has no audio stream.")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
            for frame in container.decode(audio=0):
                frame.pts = None
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                    total += parts[-1].shape[0]
                if total > max_samples:
                    raise AudioFormatError(f"The audio is longer than {max_s:g} s.")
            parts.extend(
                out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                for out in resampler.resample(None)
            )
    except AudioFormatError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise AudioFormatError(f"The audio file could not be read: {exc}") from exc
    if not parts or sum(p.shape[0] for p in parts) == 0:
        raise AudioFormatError("The file holds no audio samples.")
    return np.concatenate(parts)
