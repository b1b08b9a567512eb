"""``avatar-streamer live --mic`` with a silent fake microphone, for subprocess tests:
``python -m tests.live_with_fake_mic --port 8123 [more live flags]``."""

from __future__ import annotations

import sys

import numpy as np

from streamer.cli import build_parser
from streamer.server.commands.live import run
from tests.test_channels_microphone import FakeDevices, FakeInput

if __name__ == "__main__":
    args = build_parser().parse_args(["live", "--mic", *sys.argv[1:]])
    silence = np.zeros(48_000, np.float32)
    sys.exit(run(args, FakeDevices(FakeInput(silence, 48_000))))
