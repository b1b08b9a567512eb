"""``bench pipeline``: its flags, how a row pools its sessions, and one short real run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from streamer.bench.pipeline import (
    HEADER,
    MIN_ONSETS,
    _row,
    client_figures,
    measure,
    record,
    server_counters,
)
from streamer.cli import build_parser
from streamer.probe import promtext
from tests.test_soak_analysis import figures


def test_the_impairment_flags_parse_and_bad_ones_are_refused(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = build_parser()
    args = parser.parse_args(["bench", "pipeline", "--jitter-ms", "0,20,40", "--loss-pct", "1.5"])
    assert (args.jitter_ms, args.loss_pct, args.seed) == ([0.0, 20.0, 40.0], 1.5, 1)
    assert parser.parse_args(["bench", "pipeline"]).jitter_ms == [0.0]
    for bad in (["--jitter-ms", "0,-5"], ["--loss-pct", "100"], ["--jitter-ms", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "pipeline", *bad])
    assert "jitter must be" in capsys.readouterr().err


def series(m2l: list[float | None], av: list[float | None]) -> dict:  # type: ignore[type-arg]
    return {"mouth_to_lips_ms": m2l, "av_offset_ms": av}


def test_a_row_pools_its_sessions() -> None:
    one = figures(speech_blocks_measured=300, speech_blocks_returned=297.0)
    two = figures(speech_blocks_measured=100, speech_blocks_returned=50.0)
    got = client_figures(
        [one, two],
        [series([200.0, None, 220.0], [10.0, None]), series([240.0, 260.0, 280.0], [-30.0, 20.0])],
    )
    assert got["onsets"] == 5
    assert got["mic_to_lips_p50_ms"] == pytest.approx(240.0)
    assert got["mic_to_lips_p95_ms"] == pytest.approx(276.0)
    assert got["speech_back_pct"] == pytest.approx(100 * 347 / 400)  # blocks, not a mean of %
    assert got["av_median_ms"] == pytest.approx(10.0)
    assert got["av_max_abs_ms"] == pytest.approx(30.0)
    # Under MIN_ONSETS onsets, mic-to-lips is n/a; nothing measured at all reads n/a too.
    few = client_figures([one], [series([200.0] * (MIN_ONSETS - 1), [])])
    assert math.isnan(few["mic_to_lips_p50_ms"])
    assert math.isnan(few["av_median_ms"])
    none = client_figures([figures(speech_blocks_measured=0)], [series([], [])])
    assert math.isnan(none["speech_back_pct"])


OLD_SERVER = """
# TYPE avatar_input_frames_dropped_total counter
avatar_input_frames_dropped_total 3.0
# TYPE avatar_ticks_late_total counter
avatar_ticks_late_total 1.0
# TYPE avatar_audio_underruns_total counter
avatar_audio_underruns_total 7.0
"""
NEW_METRICS = """
# TYPE avatar_playout_concealed_frames_total counter
avatar_playout_concealed_frames_total {concealed}
# TYPE avatar_playout_level_changes_total counter
avatar_playout_level_changes_total{{change="insert"}} {inserts}
avatar_playout_level_changes_total{{change="skip"}} 1.0
# TYPE avatar_speech_frames_dropped_total counter
avatar_speech_frames_dropped_total 0.0
# TYPE avatar_playout_target_delay_seconds gauge
avatar_playout_target_delay_seconds{{sink="a"}} {target_a}
avatar_playout_target_delay_seconds{{sink="b"}} 0.1
"""


def test_the_server_counters_of_a_row_and_n_a_for_those_not_exported() -> None:
    before = promtext.parse(OLD_SERVER + NEW_METRICS.format(concealed=2, inserts=1, target_a=0.2))
    after = promtext.parse(
        OLD_SERVER.replace("3.0", "8.0") + NEW_METRICS.format(concealed=6, inserts=4, target_a=0.06)
    )
    got = server_counters(before, after)
    assert got == {
        "dropped": 5.0, "late_ticks": 0.0, "underruns": 0.0, "concealed": 4.0, "inserts": 3.0,
        "skips": 0.0, "speech_dropped": 0.0, "target_delay_ms": pytest.approx(80.0),
    }  # fmt: skip
    # Exported, but no sink yet and no level change yet: prometheus_client writes only the
    # HELP and TYPE lines of a labelled metric before its first label set. Counted 0, and no
    # target delay to average.
    idle = OLD_SERVER + (
        "# TYPE avatar_playout_level_changes_total counter\n"
        "# TYPE avatar_playout_target_delay_seconds gauge\n"
    )
    quiet = server_counters(promtext.parse(idle), promtext.parse(idle))
    assert (quiet["inserts"], quiet["skips"]) == (0.0, 0.0)
    assert math.isnan(quiet["target_delay_ms"])
    old = server_counters(promtext.parse(OLD_SERVER), promtext.parse(OLD_SERVER))
    assert old["dropped"] == 0.0
    for name in ("concealed", "inserts", "skips", "speech_dropped", "target_delay_ms"):
        assert math.isnan(old[name]), name


ROW = {
    "sessions": 2, "jitter_ms": 40.0, "loss_pct": 1.0, "p50_ms": 20.0, "p99_ms": 30.0,
    "fps_min": 25.0, "fps_mean": 25.0, "dropped": 0.0, "late_ticks": 0.0, "underruns": 0.0,
    "concealed": math.nan, "inserts": 3.0, "skips": 1.0, "speech_dropped": math.nan,
    "target_delay_ms": 62.5, "onsets": 4.0, "mic_to_lips_p50_ms": math.nan,
    "mic_to_lips_p95_ms": math.nan, "speech_back_pct": 97.25, "av_median_ms": -12.0,
    "av_max_abs_ms": 20.0, "cpu_pct": 80.0, "client_cpu_pct": 30.0,
}  # fmt: skip


def test_a_row_prints_n_a_for_what_the_server_does_not_export() -> None:
    row = ROW
    text = _row(row)
    assert text.count("|") == HEADER.splitlines()[0].count("|")
    assert "| 2 | 40 | 1 |" in text
    assert "| n/a | 3 / 1 | n/a | 62 | n/a / n/a (4) | 97.2 % | -12 / 20 |" in text
    assert text.endswith("| yes |")


def test_the_recorded_section_states_command_machine_date_and_every_column(
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(
        ["bench", "pipeline", "--sessions", "2", "--jitter-ms", "0,40", "--loss-pct", "1"]
    )
    report = tmp_path / "benchmarks.md"
    record(args, [ROW, {**ROW, "jitter_ms": 0.0}], report)
    text = report.read_text()
    assert (
        "Command: `avatar-streamer bench pipeline --sessions 2 --seconds 20 --jitter-ms 0,40 "
        "--loss-pct 1 --seed 1`" in text
    )
    assert "Machine: " in text
    assert "Date: " in text
    header = HEADER.splitlines()[0]
    assert header in text
    columns = [c.strip() for c in header.strip("|").split("|")]
    definitions = [line for line in text.splitlines() if line.startswith("- ")]
    # Every column is defined in one sentence (some definitions cover two related columns).
    heads = [d[2:].split(":")[0].lower() for d in definitions]
    for column in columns:
        assert any(column.split()[0].lower() in head for head in heads), column
    assert all(d.count(". ") == 0 for d in definitions)
    assert text.count("| 2 | 40 | 1 |") == 1
    assert "with 40 ms of jitter: 2 (of 2 tried)" in text


@pytest.mark.realtime
@pytest.mark.slow
async def test_a_short_run_against_a_real_server_with_lossy_clients() -> None:
    # One session, 5 % of the client's audio packets lost: whatever the server does with the
    # holes (silence, or concealment counted at most 0.37 of a block), that speech cannot all
    # come back: at most 95 % + 5 % x 0.37 = 96.9 %; a clean call reads 99-100 %. The server of
    # December 2026 (no playout buffer yet) returned ~80 % of it.
    (row,) = await measure([1], [0.0], 5.0, 1, seconds=16.0, warmup=2.0, model=None)
    print(HEADER, _row(row), sep="\n")
    assert (row["sessions"], row["jitter_ms"], row["loss_pct"]) == (1, 0.0, 5.0)
    assert abs(row["fps_mean"] - 25.0) <= 1.0
    assert 30.0 <= row["speech_back_pct"] <= 97.5
    # The clip has an onset every ~2.7 s; one whose mouth is still open is skipped.
    assert row["onsets"] >= 3
    assert math.isfinite(row["av_median_ms"])
    for name in ("concealed", "inserts", "skips", "speech_dropped", "target_delay_ms"):
        assert math.isnan(row[name]) or row[name] >= 0, name
