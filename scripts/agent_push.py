#!/usr/bin/env python3
"""Push speech into a channel the way a voice agent does, with ``streamer.client``.

    .venv/bin/python scripts/agent_push.py --channel studio speech.wav
    .venv/bin/python scripts/agent_push.py --channel studio --say "Hello from the agent."
    .venv/bin/python scripts/agent_push.py --channel studio --say "..." --interrupt-after 1.5

A server started with a token wants it: set AVATAR_STREAMER_TOKEN to it here too (the
client sends it from there).
The audio is decoded to 24 kHz s16le mono, pushed as fast as the socket takes it (as TTS
does), and played by the server at real time; the script prints the playback events. Watch
the channel at http://127.0.0.1:8080/view/studio.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from streamer.audio.files import decode_audio_bytes
from streamer.client import ChannelClient, ChannelClientError

RATE_HZ = 24_000
CHUNK_S = 0.2  # TTS engines deliver audio in chunks of this order


def load_pcm(path: Path | None, text: str | None) -> np.ndarray:
    if text is not None:
        if shutil.which("espeak-ng") is None:
            sys.exit("--say needs espeak-ng (apt-get install espeak-ng); pass a file instead")
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "say.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
            data = wav.read_bytes()
    else:
        assert path is not None
        data = path.read_bytes()
    pcm = decode_audio_bytes(data, RATE_HZ)
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2")


async def push(args: argparse.Namespace) -> None:
    pcm = load_pcm(args.file, args.say)
    async with await ChannelClient.connect(args.url, args.channel, RATE_HZ) as avatar:
        step = int(CHUNK_S * RATE_HZ)
        for start in range(0, len(pcm), step):
            await avatar.push(pcm[start : start + step])
        await avatar.end_of_segment()
        print(f"pushed {len(pcm) / RATE_HZ:.2f} s of audio")
        print(await avatar.wait_for("playback_started", 10))
        if args.interrupt_after is not None:
            await asyncio.sleep(args.interrupt_after)
            await avatar.interrupt()
        print(await avatar.wait_for("playback_finished", len(pcm) / RATE_HZ + 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, nargs="?", help="an audio file (wav, mp3, ogg, m4a)")
    parser.add_argument("--say", help="text to synthesise with espeak-ng instead of a file")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--channel", default="live")
    parser.add_argument("--interrupt-after", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    if (args.file is None) == (args.say is None):
        parser.error("give an audio file or --say TEXT")
    try:
        asyncio.run(push(args))
    except ChannelClientError as exc:
        sys.exit(f"agent_push: {exc}")


if __name__ == "__main__":
    main()
