"""The soak's impairment flags, playout scrape, summary and plots (no peers, no server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamer.cli import build_parser
from streamer.probe.impairment import Impairment
from streamer.soak.cli import config_from_args, summary
from streamer.soak.plots import write_plots
from streamer.soak.runner import _sample, server_figures
from tests.test_soak_analysis import figures

BASE = """
# TYPE avatar_process_resident_memory_bytes gauge
avatar_process_resident_memory_bytes 3e8
# TYPE avatar_sessions gauge
avatar_sessions 2
"""
PLAYOUT = """
# TYPE avatar_playout_concealed_frames_total counter
avatar_playout_concealed_frames_total {concealed}
# TYPE avatar_playout_level_changes_total counter
avatar_playout_level_changes_total{{change="insert"}} {inserts}
avatar_playout_level_changes_total{{change="skip"}} 2
# TYPE avatar_speech_frames_dropped_total counter
avatar_speech_frames_dropped_total 1
# TYPE avatar_playout_target_delay_seconds gauge
avatar_playout_target_delay_seconds{{sink="s1"}} {s1}
avatar_playout_target_delay_seconds{{sink="s2"}} 0.08
"""


def test_the_impairment_flags_reach_the_config(tmp_path: Path) -> None:
    parser = build_parser()
    base = ["soak", "--url", "http://x", "--out", str(tmp_path)]
    args = parser.parse_args([*base, "--jitter-ms", "30", "--loss-pct", "1", "--seed", "5"])
    assert config_from_args(args).impairment == Impairment(30.0, 1.0, 5)
    assert config_from_args(parser.parse_args(base)).impairment == Impairment()
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--jitter-ms", "10,20"])  # one value for a soak


def samples_with_playout() -> list:  # type: ignore[type-arg]
    texts = [
        BASE + PLAYOUT.format(concealed=0, inserts=0, s1=0.04),
        BASE + PLAYOUT.format(concealed=3, inserts=1, s1=0.12),
        BASE + PLAYOUT.format(concealed=5, inserts=4, s1=0.2),
    ]
    return [_sample(100.0 + 5 * k, text) for k, text in enumerate(texts)]


def test_the_target_delay_of_every_sink_is_scraped_and_its_range_reported() -> None:
    figures_, series = server_figures(samples_with_playout(), 100.0, 100.0)
    assert series["playout_target_delay_ms"] == [
        {"s1": pytest.approx(40.0), "s2": pytest.approx(80.0)},
        {"s1": pytest.approx(120.0), "s2": pytest.approx(80.0)},
        {"s1": pytest.approx(200.0), "s2": pytest.approx(80.0)},
    ]
    assert figures_["playout_target_delay_ms_min"] == pytest.approx(40.0)
    assert figures_["playout_target_delay_ms_max"] == pytest.approx(200.0)
    assert figures_["playout_concealed"] == 5
    assert (figures_["playout_level_inserts"], figures_["playout_level_skips"]) == (4, 0)
    assert figures_["speech_frames_dropped"] == 0
    # A server without a playout buffer: nothing scraped, n/a (None), not 0.
    old, old_series = server_figures([_sample(100.0 + 5 * k, BASE) for k in range(3)], 100, 100)
    assert old_series["playout_target_delay_ms"] == [{}, {}, {}]
    for name in ("playout_target_delay_ms_min", "playout_concealed", "speech_frames_dropped"):
        assert old[name] is None


def report(samples: list, impairment: Impairment) -> dict:  # type: ignore[type-arg]
    server, server_series = server_figures(samples, 100.0, 100.0)
    peer = figures(name="peer1", speech_back_pct=93.5)
    fps_series = {"fps_t_s": [5.0], "fps": [25.0], "gap_t_s": [5.0], "gap_ms": [40.0]}
    return {
        "started_utc": "2026-12-02T00:00:00+00:00",
        "machine": "test",
        "config": {
            "url": "http://x", "peers": 1, "minutes": 0.2, "clip": "synthesised speech",
            "clip_s": 16.5, "clip_onsets": 6,
            "impairment": {**dataclasses.asdict(impairment), "seeds": "seed + peer index"},
        },
        "analysis": {"warmup_s": 0.0},
        "thresholds": {"min_fps": 24.5, "max_av_offset_ms": 40.0, "max_p99_latency_ms": 40.0},
        "passed": True,
        "checks": [],
        "peers": [peer.to_json()],
        "server": server,
        "series": {
            "peers": {"peer1": {**fps_series, "av_t_s": [], "av_offset_ms": [],
                                "mouth_to_lips_t_s": [], "mouth_to_lips_ms": []}},
            "server": server_series,
        },
    }  # fmt: skip


def test_the_summary_names_the_impairment_speech_back_and_the_target_delay() -> None:
    text = summary(report(samples_with_playout(), Impairment(30.0, 1.0, 5)))
    assert "client audio impaired: jitter 0-30 ms, loss 1 %, seed 5 + peer" in text
    assert "speech back" in text
    assert "93.5 %" in text
    assert "playout: target delay 40-200 ms, concealed 5, level inserts/skips 4/0" in text
    plain = summary(report([_sample(100.0 + 5 * k, BASE) for k in range(3)], Impairment()))
    assert "client audio impaired: none" in plain
    assert "playout: target delay n/a, concealed n/a" in plain


@pytest.mark.parametrize("exported", [True, False])
def test_the_target_delay_gets_its_own_plot(tmp_path: Path, exported: bool) -> None:
    samples = samples_with_playout() if exported else [_sample(100.0, BASE)]
    written = write_plots(report(samples, Impairment()), tmp_path)
    path = tmp_path / "playout_target_delay.png"
    assert path in written
    assert path.stat().st_size > 10_000
