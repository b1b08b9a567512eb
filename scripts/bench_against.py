"""A server benchmark (``bench pipeline``, ``bench viewers``) with this checkout's clients
against the server of another tree.

Usage (from the repository root):

    git worktree add /tmp/old a65a522
    cp -r avatars/default/cache /tmp/old/avatars/default/
    .venv/bin/python scripts/bench_against.py /tmp/old pipeline \
        --sessions 1 --jitter-ms 0 --loss-pct 1 --seconds 60 --no-record

The benchmarks start their server as ``python -m streamer serve`` in the working directory
(:mod:`streamer.bench.served`), so running from TREE serves TREE's code (an older tree finds its
avatars under its own ``avatars/``, hence the copy), while the clients, their impairment and
their measures are this checkout's: the two servers are compared by one client.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not Path(argv[0]).is_dir():
        print(__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from streamer.cli import main as cli_main  # this checkout's client

    os.chdir(argv[0])  # the server subprocess runs from here: TREE's streamer package
    return cli_main(["bench", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
