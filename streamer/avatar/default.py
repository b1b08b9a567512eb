"""The default avatar: the NASA astronaut portrait committed as ``avatars/default/source.jpg``."""

from __future__ import annotations

import logging
from pathlib import Path

from streamer.avatar.cache import Avatar, load_avatar
from streamer.avatar.errors import AvatarCacheError, AvatarNotFoundError
from streamer.avatar.prepare import PrepareOptions, prepare_avatar

logger = logging.getLogger(__name__)

DEFAULT_AVATAR = "default"
DEFAULT_SOURCE = "source.jpg"


def ensure_default_avatar(root: Path = Path("avatars")) -> Avatar:
    """Load the default avatar, preparing it first (a few seconds) when its cache is missing
    or stale. Raises :class:`AvatarNotFoundError` when its committed source is missing too."""
    try:
        return load_avatar(DEFAULT_AVATAR, root)
    except (AvatarNotFoundError, AvatarCacheError) as exc:
        source = root / DEFAULT_AVATAR / DEFAULT_SOURCE
        if not source.is_file():
            raise AvatarNotFoundError(
                f"the default avatar's source {source} is missing: restore it from the repository"
            ) from exc
        logger.info("preparing the default avatar from %s (first use, a few seconds)...", source)
        return prepare_avatar(source, DEFAULT_AVATAR, root, PrepareOptions(force=True))
