"""Crop conventions shared by avatars (which cut crops) and models (which consume them).

A model declares its convention in its ONNX metadata (``avatar_streamer.crop``); the avatar
cuts its reference crops that way at load time, and the compositor pastes the model's output
back into the same box.
"""

from __future__ import annotations

import enum


class CropConvention(enum.Enum):
    # Wav2Lip: the face box with 10 px extra at the bottom, resized to the model's face size.
    WAV2LIP = "wav2lip"
    # Mouth-centred square (the built-in model): the midpoint of the mouth corners sits at
    # (MOUTH_CENTER_X, MOUTH_CENTER_Y) of the crop and the mouth width spans MOUTH_WIDTH of it.
    MOUTH = "mouth"


WAV2LIP_BOTTOM_PAD_PX = 10

# Geometry of a MOUTH crop, as fractions of the crop side. Room below the mouth for the jaw.
MOUTH_CENTER_X = 0.5
MOUTH_CENTER_Y = 0.42
MOUTH_WIDTH = 0.40
