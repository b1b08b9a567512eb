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
    # MuseTalk v1.5: the jaw-wide box from the chin (plus MUSETALK_BOTTOM_PAD_PX) up to as far
    # above the nose bridge as the chin is below it, resized to 256 x 256 whatever its aspect.
    # Upstream takes the bridge and chin from 68 landmarks; from our face box and mouth points
    # they are estimates (see streamer.avatar.crops.crop_boxes).
    MUSETALK = "musetalk"


WAV2LIP_BOTTOM_PAD_PX = 10
MUSETALK_BOTTOM_PAD_PX = 10  # v1.5's extra_margin
# The nose bridge (MuseTalk's landmark 29) this far above the upper lip, in mouth widths.
MUSETALK_BRIDGE_ABOVE_LIP = 0.55

# Geometry of a MOUTH crop, as fractions of the crop side. Room below the mouth for the jaw.
MOUTH_CENTER_X = 0.5
MOUTH_CENTER_Y = 0.42
MOUTH_WIDTH = 0.40
