"""Each frame gap over 120 ms of a soak run beside the machine's state (``vmstat -t 1``).

Usage: scripts/soak_freeze_context.py docs/soak/RUN/report.json vmstat.log

Prints, per peer and gap: its time into the run and in UTC, its length, the server's late ticks
in the scrape that followed, and vmstat's run queue, idle and steal (%) for the two seconds
before and after. Steal is CPU the hypervisor gave to someone else.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path


def main(report_path: str, vmstat_path: str) -> None:
    report = json.loads(Path(report_path).read_text())
    machine: dict[int, tuple[int, int, int]] = {}
    for line in Path(vmstat_path).read_text().splitlines():
        f = line.split()
        if len(f) < 19 or not f[0].isdigit():
            continue  # vmstat repeats its header
        at = dt.datetime.fromisoformat(f"{f[17]} {f[18]}").replace(tzinfo=dt.UTC)
        machine[int(at.timestamp())] = (int(f[0]), int(f[14]), int(f[16]))  # r, idle, steal
    steal = [m[2] for m in machine.values()]
    print(
        f"vmstat: {len(machine)} s, steal mean {sum(steal) / max(1, len(steal)):.1f} %, "
        f"seconds with steal >= 10 %: {sum(s >= 10 for s in steal)}"
    )
    start = dt.datetime.fromisoformat(report["started_utc"]).timestamp()
    server = report["series"]["server"]
    for name, peer in report["series"]["peers"].items():
        times = peer.get("gap_t_s") or peer.get("gaps_over_100ms_t_s") or []
        gaps = peer.get("gap_ms") or peer.get("gaps_over_100ms_ms") or []
        for t_s, gap_ms in zip(times, gaps, strict=True):
            if gap_ms <= 120:
                continue
            at = start + t_s
            around = " ".join(
                f"[r{m[0]} id{m[1]} st{m[2]}]" if (m := machine.get(int(at) + d)) else "[-]"
                for d in range(-2, 2)
            )
            late = None
            for k, scraped_s in enumerate(server["t_s"]):
                if scraped_s >= t_s:
                    late = server["late_ticks"][k] - (server["late_ticks"][k - 1] if k else 0)
                    break
            when = dt.datetime.fromtimestamp(at, dt.UTC)
            print(
                f"{name} t={t_s:7.1f} s {when:%H:%M:%S} gap {gap_ms:4.0f} ms, "
                f"late ticks in the next scrape: {late}, vmstat {around}"
            )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
