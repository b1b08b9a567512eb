"""Typed errors. Every error a user can cause is a :class:`StreamerError` with one clear sentence.

Each class carries what a client is told: a stable ``error`` code (``code``) and the HTTP
status it is answered with (``status``, 400 unless the class says otherwise); the server's one
error middleware reads both, the command line prints the message and exits non-zero. Nothing
here imports the rest of the package.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error this package raises on purpose."""

    code: str = "streamer_error"
    status: int = 400


class AudioGoneError(StreamerError):
    """Audio (or features) that a bounded buffer held once has been overwritten."""

    code = "audio_gone"


class AudioFormatError(StreamerError):
    """Audio that cannot be read or converted."""

    code = "bad_audio"


class ModelError(StreamerError):
    """A lip-sync model that cannot be read, or whose graph breaks the Wav2Lip I/O contract."""

    code = "bad_model"
