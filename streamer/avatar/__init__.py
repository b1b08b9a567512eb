"""Avatars: prepared once by ``avatar-streamer prepare``, loaded in well under a second.

The real-time path never detects faces or decodes source video: it loads an :class:`Avatar`
(memory-mapped frames, per-frame face boxes and mouth landmarks), asks it for the reference
crops and blend masks of its model's crop convention, and pastes generated crops back with
:func:`composite`.
"""

from streamer.avatar.cache import Avatar, list_avatars, load_avatar, validate_name
from streamer.avatar.composite import composite
from streamer.avatar.crops import AvatarCrops
from streamer.avatar.default import DEFAULT_AVATAR, ensure_default_avatar, open_avatar
from streamer.avatar.errors import (
    AvatarCacheError,
    AvatarError,
    AvatarExistsError,
    AvatarNotFoundError,
    FaceTooSmallError,
    InvalidAvatarNameError,
    NoFaceError,
    UnreadableSourceError,
)
from streamer.avatar.prepare import PrepareOptions, PrepareProgress, prepare_avatar

__all__ = [
    "DEFAULT_AVATAR",
    "Avatar",
    "AvatarCacheError",
    "AvatarCrops",
    "AvatarError",
    "AvatarExistsError",
    "AvatarNotFoundError",
    "FaceTooSmallError",
    "InvalidAvatarNameError",
    "NoFaceError",
    "PrepareOptions",
    "PrepareProgress",
    "UnreadableSourceError",
    "composite",
    "ensure_default_avatar",
    "list_avatars",
    "load_avatar",
    "open_avatar",
    "prepare_avatar",
    "validate_name",
]
