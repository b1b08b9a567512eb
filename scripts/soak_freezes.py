"""Count a soak run's freezes the way browsers do, from its stored frame gaps.

Usage: scripts/soak_freezes.py docs/soak/RUN/report.json [--host-pause-at-s T ...]

Prints, per peer, the lowest fps window and the freezes as browsers count them (webrtc-stats
``freezeCount``) beside the soak's stricter count (gaps over min(3 x the mean, 150 ms)), with
each freeze's time (seconds into the run) and length: reports written before the soak counted
freezes the browsers' way hold only the stricter count. ``--host-pause-at-s T`` marks a pause
of the whole machine by its host seen at T (the soak's own ``series.machine_pauses``, or, for
runs before the soak watched for them, the wall-clock gap in ``vmstat -t`` and the logs): a
freeze across it is listed as the machine's, and the fps window it falls in is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from streamer.probe.analysis import (
    MACHINE_PAUSE_SLACK_S,
    AnalysisOptions,
    freeze_limits_s,
    long_gaps,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("--host-pause-at-s", type=float, action="append", default=[])
    args = p.parse_args()
    o = AnalysisOptions()
    report = json.loads(args.report.read_text())
    pauses = np.asarray(args.host_pause_at_s, np.float64)
    for name, peer in report["series"]["peers"].items():
        if "gap_ms" not in peer:
            print(f"{name}: no frame gaps stored")
            continue
        g = np.asarray(peer["gap_ms"], np.float64) / 1e3
        end = np.asarray(peer["gap_t_s"], np.float64)
        limits = freeze_limits_s(g, o.freeze_window_frames, o.freeze_factor, o.freeze_added_s)
        at = np.flatnonzero(g >= limits)
        strict = long_gaps(g, o.long_gap_factor, o.long_gap_s).size
        listed = []
        machine = 0
        for k in at:
            across = np.any(
                (pauses >= end[k] - g[k] - MACHINE_PAUSE_SLACK_S)
                & (pauses <= end[k] + MACHINE_PAUSE_SLACK_S)
            )
            machine += int(across)
            note = " (host pause)" if across else ""
            listed.append(f"t={end[k]:.1f} s {1e3 * g[k]:.0f} ms{note}")
        print(
            f"{name}: {at.size} freezes, {machine} of them across a host pause "
            f"({strict} gaps over 120 ms): {', '.join(listed)}"
        )
        half = report["analysis"]["fps_window_s"] / 2
        fps = [
            f
            for c, f in zip(peer["fps_t_s"], peer["fps"], strict=True)
            if not np.any((pauses >= c - half) & (pauses < c + half))
        ]
        print(
            f"{name}: lowest fps window {min(peer['fps']):.2f}, "
            f"{min(fps):.2f} without the windows of host pauses"
        )


if __name__ == "__main__":
    main()
