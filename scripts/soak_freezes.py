"""Count a soak run's freezes the way browsers do, from its stored frame gaps.

Usage: scripts/soak_freezes.py docs/soak/RUN/report.json [more reports]

Reports written before the soak counted freezes as browsers do (webrtc-stats
``freezeCount``) hold only the stricter count (gaps over min(3 x the mean, 150 ms)); this reads
their frame gaps and prints, per peer, both counts and each freeze's time and length. It cannot
tell the client's own stalls (those runs did not record them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from streamer.probe.analysis import AnalysisOptions, freeze_limits_s, long_gaps


def main(paths: list[str]) -> None:
    o = AnalysisOptions()
    for path in paths:
        report = json.loads(Path(path).read_text())
        for name, peer in report["series"]["peers"].items():
            if "gap_ms" not in peer:
                print(f"{path} {name}: no frame gaps stored")
                continue
            g = np.asarray(peer["gap_ms"], np.float64) / 1e3
            t = np.asarray(peer["gap_t_s"], np.float64)
            limits = freeze_limits_s(g, o.freeze_window_frames, o.freeze_factor, o.freeze_added_s)
            at = np.flatnonzero(g >= limits)
            strict = long_gaps(g, o.long_gap_factor, o.long_gap_s).size
            listed = ", ".join(f"t={t[k]:.0f} s {1e3 * g[k]:.0f} ms" for k in at)
            print(f"{path} {name}: {at.size} freezes ({strict} gaps over 120 ms): {listed}")


if __name__ == "__main__":
    main(sys.argv[1:])
