"""Typed errors of the avatar layer; each message is one sentence a user can act on.

Every class carries a stable ``code`` that the HTTP layer returns as its ``error`` field.
"""

from __future__ import annotations

from streamer.errors import StreamerError


class AvatarError(StreamerError):
    """Base of every avatar error."""

    code = "avatar_error"


class InvalidAvatarNameError(AvatarError):
    """A name that is not a plain folder name (path separators, dots, empty, too long)."""

    code = "invalid_avatar_name"


class AvatarNotFoundError(AvatarError):
    """No prepared cache for this name under the avatar root."""

    code = "avatar_not_found"
    status = 404


class AvatarExistsError(AvatarError):
    """``prepare`` would replace an existing cache without ``--force``."""

    code = "avatar_exists"


class AvatarCacheError(AvatarError):
    """A cache of another format version, of a changed source, or damaged: never half-read."""

    code = "avatar_cache_stale"
    status = 409


class UnreadableSourceError(AvatarError):
    """A source that is missing, not an image or video, or a video that cannot be decoded."""

    code = "unreadable_source"


class NoFaceError(AvatarError):
    """No (selectable) face in the source."""

    code = "no_face"


class FaceTooSmallError(AvatarError):
    """The largest face is smaller than :data:`streamer.avatar.detect.MIN_FACE_PX`."""

    code = "face_too_small"
