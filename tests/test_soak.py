"""The soak tool end to end: real aiortc peers against a real server in its own process.

A short healthy soak (2 peers, 1 minute, the CI soak) must pass every threshold; a
server with an injected stall, A/V delay and leak (tests/degraded_server.py, faults behind
the renderer seam) must be caught on each, with figures that match what was injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.cli import main
from tests.servers import free_port

pytestmark = [pytest.mark.realtime, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def server_process(cmd: list[str], port: int, log: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-2000:]
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/health", timeout=1) as r,
                ):
                    if r.status == 200:
                        break
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
            yield url
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# The default thresholds are for a quiet machine and a long run (the 30-minute soak). CI shares
# its two cores with other jobs, where a healthy server shows a p99 of up to ~80 ms and a rare
# 150 ms gap; and in one minute the server's RSS still swings by +/-20 MB (arenas, encoder
# buffers), far more than any rate fit can see through. These CI thresholds leave that margin,
# and every fault injected below still crosses them by far.
CI_THRESHOLDS = (
    *("--max-p99-ms", "100", "--max-freezes", "3", "--min-fps", "24"),
    *("--rss-noise-mb", "64"),
)


def soak(url: str, out: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status = main(["soak", "--url", url, "--out", str(out), *CI_THRESHOLDS, *extra])
    return status, json.loads((out / "report.json").read_text())


def test_a_short_soak_of_a_healthy_server_passes(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "streamer", "serve", "--port", str(port)]
    with server_process(cmd, port, tmp_path / "server.log") as url:
        status, report = soak(
            url, tmp_path / "soak", "--peers", "2", "--minutes", "1", "--warmup-s", "20",
            "--av-window-s", "10",
        )  # fmt: skip
    summary = (tmp_path / "soak" / "summary.txt").read_text()
    print(summary)
    assert status == 0, summary
    assert report["passed"]
    assert {c["name"] for c in report["checks"]} == {
        "fps",
        "p99_frame_latency_ms",
        "freezes",
        "av_offset_ms",
        "rss_growth_pct_per_h",
    }
    assert len(report["peers"]) == 2
    for peer in report["peers"]:
        assert peer["time_to_first_frame_s"] < 1.0
        assert abs(peer["fps_mean"] - 25.0) <= 0.5
        assert peer["frames_lost"] <= 5
        # Mouth-to-lips: the server's ~150 ms plus the peer's buffers; measured on most onsets.
        assert peer["onsets_measured"] >= 5
        assert 50 <= peer["mouth_to_lips_p50_ms"] <= 500
        # The returned audio is the speech sent (a healthy server loses none of it: 99-100 %
        # on a quiet machine; on a busy CI machine a few underruns cost some) about 0.2-0.5 s
        # later.
        assert peer["utterances_measured"] >= 5
        assert peer["utterances_found"] >= peer["utterances_measured"] - 1
        assert peer["speech_back_pct"] >= 85
        assert 100 <= peer["audio_delay_p50_ms"] <= 700
    assert report["config"]["impairment"] == {
        "jitter_ms": 0.0, "loss_pct": 0.0, "seed": 1, "seeds": "seed + peer index"
    }  # fmt: skip
    assert report["client_network"] == {}
    server = report["server"]
    assert server["rss_mb_end"] > 50
    assert server["open_fds_max"] > 0
    assert server["threads_max"] > 1
    assert server["asyncio_tasks_max"] > 1
    series = report["series"]["server"]
    assert len(series["t_s"]) >= 10  # a scrape every 5 s
    assert max(series["sessions"]) == 2
    assert len(series["playout_target_delay_ms"]) == len(series["t_s"])  # {} until exported
    plots = ("fps", "frame_gaps", "av_offset", "mouth_to_lips", "server", "playout_target_delay")
    for name in plots:
        assert (tmp_path / "soak" / f"{name}.png").stat().st_size > 10_000


def test_the_soak_catches_a_stall_an_av_delay_and_a_leak(tmp_path: Path) -> None:
    port = free_port()
    cmd = [
        sys.executable, str(REPO / "tests" / "degraded_server.py"), "--port", str(port),
        "--stall-every-s", "5", "--stall-ms", "400", "--video-delay-frames", "3",
        "--leak-kb-per-tick", "256",
    ]  # fmt: skip
    with server_process(cmd, port, tmp_path / "server.log") as url:
        status, report = soak(
            url, tmp_path / "soak", "--peers", "1", "--minutes", "0.6", "--warmup-s", "6",
            "--av-window-s", "10", "--no-plots",
        )  # fmt: skip
    summary = (tmp_path / "soak" / "summary.txt").read_text()
    print(summary)
    assert status == 1, summary
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert {"freezes", "av_offset_ms", "rss_growth_pct_per_h"} <= failed, summary
    (peer,) = report["peers"]
    # The stall: a freeze about as long as the injected 400 ms every 5 s.
    assert peer["freezes"] >= 4, summary
    assert 300 <= peer["longest_freeze_ms"] <= 1000, summary
    # The delay: video 3 frames (120 ms) late.
    assert 80 <= peer["av_offset_median_ms"] <= 160, summary
    # The leak: 256 KB x 25 ticks/s = 6.6 MB/s for about 30 s after warm-up.
    assert report["server"]["rss_growth_mb"] >= 100, summary
    assert os.path.exists(tmp_path / "soak" / "report.json")
