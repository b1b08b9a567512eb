"""Where a running server's CPU goes, per stage and per video frame, from a py-spy profile.

Usage (py-spy is a development tool, not a dependency: ``pip install py-spy``):

    avatar-streamer serve --port 8090 &
    avatar-streamer bench pipeline --sessions 1 --seconds 60 --no-record &   # or viewers
    py-spy record --nonblocking --rate 200 --duration 30 -f raw -o /tmp/server.txt \\
        --pid "$(pgrep -f 'streamer serve')"
    python scripts/profile_stages.py /tmp/server.txt --rate 200 --seconds 30 --frames-per-s 25

Each sampled stack is given to the first stage whose pattern it contains, innermost frames
first (so time in libvpx called from the server's encoder is "video encode", not "asyncio");
stacks that wait (a selector, a condition, an idle pool worker) are left out. Prints a markdown
table: CPU ms per second of wall time (= thousandths of a core), and per video frame.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

# (stage, substrings of a frame's "function (file:line)"), tried innermost frame first.
STAGES = (
    ("colour conversion", ("bgr_to_yuv420", "reformat")),
    ("video encode (VP8/H.264)", ("VideoEncoder.encode", "Vp8Encoder.encode", "H264Encoder")),
    ("video packetise", ("_packetize", "Vp8Encoder.pack", "H264Encoder.pack")),
    ("Opus encode", ("OpusEncoder.encode",)),
    ("Opus decode", ("OpusDecoder.decode",)),
    ("SRTP", ("pylibsrtp",)),
    ("model (ONNX Runtime)", ("Session.run", "LipSyncEngine.infer")),
    ("compositor", ("composite (streamer/avatar",)),
    ("audio features (mel)", ("streamer/audio/mel.py",)),
    ("audio in (resample, ring)", ("streamer/audio/ingest.py", "AudioIngest")),
    ("playout decisions", ("streamer/playout/",)),
    ("audio out (resample)", ("OutputAudio",)),
    ("RTP/RTCP, DTLS, ICE (aiortc, aioice)", ("aiortc/", "aioice/")),
    ("HTTP (aiohttp)", ("aiohttp/",)),
    ("scheduler, tracks, metrics", ("streamer/server/",)),
    ("asyncio loop", ("asyncio/",)),
)
IDLE = (
    "EpollSelector.select",
    "Condition.wait",
    "thread.py:81)",  # a thread pool worker waiting for work
    "Queue.get (queue.py",
    "Event.wait",
)


def stage_of(frames: list[str]) -> str | None:
    if any(p in frames[-1] for p in IDLE):
        return None
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    return "other"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", type=Path, help="py-spy record -f raw output")
    p.add_argument("--rate", type=float, required=True, help="py-spy's samples per second")
    p.add_argument("--seconds", type=float, required=True, help="its --duration")
    p.add_argument("--frames-per-s", type=float, default=25.0, help="video frames per second")
    args = p.parse_args(argv)
    by_stage: collections.Counter[str] = collections.Counter()
    for line in args.raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stage = stage_of(stack.split(";"))
        if stage is not None:
            by_stage[stage] += int(count)
    total = sum(by_stage.values())
    frames = args.frames_per_s * args.seconds
    print("| stage | CPU ms per s | ms per frame | share |\n|---|---|---|---|")
    for stage, n in by_stage.most_common():
        cpu_s = n / args.rate
        print(
            f"| {stage} | {cpu_s / args.seconds * 1e3:.1f} | {cpu_s / frames * 1e3:.2f} | "
            f"{100 * n / total:.0f} % |"
        )
    cpu_s = total / args.rate
    print(f"| all | {cpu_s / args.seconds * 1e3:.1f} | {cpu_s / frames * 1e3:.2f} | 100 % |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
