"""The default avatar: the NASA astronaut portrait shipped with the package.

Its source is ``AVATARS/default/source.jpg`` when an avatars folder has one (the repository's
does), else the shipped copy (:func:`streamer.resources.default_avatar_source`); its cache is
prepared under ``AVATARS/default/cache/`` on first use. The shipped copy is only read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from streamer.avatar.cache import Avatar, load_avatar
from streamer.avatar.errors import AvatarCacheError, AvatarNotFoundError
from streamer.avatar.prepare import PrepareOptions, prepare_avatar
from streamer.resources import DEFAULT_AVATAR, default_avatar_source

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_AVATAR", "ensure_default_avatar", "open_avatar"]


def ensure_default_avatar(root: Path) -> Avatar:
    """Load the default avatar from ``root``, preparing it there first (a few seconds) when its
    cache is missing or stale. Raises :class:`AvatarNotFoundError` when its source is missing
    too (a broken install)."""
    try:
        return load_avatar(DEFAULT_AVATAR, root)
    except (AvatarNotFoundError, AvatarCacheError) as exc:
        source = default_avatar_source(root)
        if not source.is_file():
            raise AvatarNotFoundError(
                f"the default avatar's source {source} is missing: reinstall avatar-streamer "
                "(or restore it from the repository in a development clone)"
            ) from exc
        logger.info(
            "preparing the default avatar in %s from %s (first use, a few seconds)...", root, source
        )
        return prepare_avatar(source, DEFAULT_AVATAR, root, PrepareOptions(force=True))


def open_avatar(name: str, root: Path) -> Avatar:
    """Avatar ``name`` from ``root``: the default one prepared on first use
    (:func:`ensure_default_avatar`), any other loaded as prepared (raises what
    :func:`load_avatar` raises)."""
    if name == DEFAULT_AVATAR:
        return ensure_default_avatar(root)
    return load_avatar(name, root)
