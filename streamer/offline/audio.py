"""Decode any audio PyAV reads into 16 kHz mono (features) and 48 kHz mono (the soundtrack)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt

from streamer.audio.ingest import AudioIngest
from streamer.errors import AudioFormatError

F32 = npt.NDArray[np.float32]

FEATURE_RATE_HZ = 16_000
OUTPUT_RATE_HZ = 48_000


class AudioTooLongError(AudioFormatError):
    """Audio that runs past a caller's limit."""

    code = "audio_too_long"
    status = 413


@dataclass(frozen=True)
class DecodedAudio:
    """The first audio stream of a file, from its first sample, as float32 mono."""

    pcm_16k: F32  # [n] 16 kHz, for the mel features
    pcm_48k: F32  # [3n] 48 kHz, for the soundtrack

    @property
    def duration_s(self) -> float:
        return int(self.pcm_16k.shape[0]) / FEATURE_RATE_HZ


def decode_audio(
    source: Path | str | BinaryIO, max_duration_s: float | None = None
) -> DecodedAudio:
    """Decode ``source`` (a path or a binary file object). Raises :class:`AudioFormatError`
    when it holds no readable audio, :class:`AudioTooLongError` when it runs longer than
    ``max_duration_s``."""
    feature = AudioIngest(FEATURE_RATE_HZ)
    output = AudioIngest(OUTPUT_RATE_HZ)
    low: list[F32] = []
    high: list[F32] = []
    try:
        with av.open(source if not isinstance(source, Path) else str(source), "r") as container:
            if not container.streams.audio:
                raise AudioFormatError("the file has no audio stream")
            for frame in container.decode(audio=0):
                low.append(feature.push(frame).samples)
                high.append(output.push(frame).samples)
                if max_duration_s is not None and feature.samples_emitted > (
                    max_duration_s * FEATURE_RATE_HZ
                ):
                    raise AudioTooLongError(
                        f"the audio is longer than the limit of {max_duration_s:g} s"
                    )
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioFormatError(f"cannot read the audio: {exc}") from exc
    low.append(feature.flush().samples)
    high.append(output.flush().samples)
    pcm_16k = np.concatenate(low).astype(np.float32, copy=False)
    if pcm_16k.shape[0] < FEATURE_RATE_HZ // 25:
        raise AudioFormatError("the audio is shorter than one video frame (40 ms)")
    pcm_48k = np.concatenate(high).astype(np.float32, copy=False)
    # Both tracks describe the same time span: trim or pad the 48 kHz one to exactly 3x.
    wanted = pcm_16k.shape[0] * (OUTPUT_RATE_HZ // FEATURE_RATE_HZ)
    if pcm_48k.shape[0] < wanted:
        pcm_48k = np.concatenate((pcm_48k, np.zeros(wanted - pcm_48k.shape[0], np.float32)))
    return DecodedAudio(pcm_16k, np.ascontiguousarray(pcm_48k[:wanted]))
