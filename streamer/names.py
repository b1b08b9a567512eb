"""The one rule for names that users give things (avatars, channels): plain folder names.

1-64 ASCII letters, digits, ``-`` or ``_``, starting with a letter or digit: no dots, no path
separators, nothing a shell or a URL would read specially. Avatar names become folders and
channel names become URL segments, so both follow it; the pages' inputs and the OpenAPI
description use :data:`NAME_PATTERN`.
"""

from __future__ import annotations

import re

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
NAME_RULE = "1-64 letters, digits, '-' or '_', starting with a letter or digit"

_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a string that follows the rule."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None
