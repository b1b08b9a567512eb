"""The access token's contract, shared by the server, its clients and ``doctor``.

The server reads its token from :data:`TOKEN_ENV` (or ``--token``) and refuses one shorter than
:data:`MIN_TOKEN_CHARS`; clients send the same variable's value as a bearer token.
"""

from __future__ import annotations

TOKEN_ENV = "AVATAR_STREAMER_TOKEN"
MIN_TOKEN_CHARS = 16
