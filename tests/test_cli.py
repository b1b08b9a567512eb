from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer.bench.report import write_section
from streamer.cli import main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_python_dash_m_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "avatar-streamer" in done.stdout


def test_bench_audio_prints_a_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["bench", "audio", "--seconds", "2", "--no-record"])
    out = capsys.readouterr().out
    assert "CPU time" in out
    assert ("PASS" in out) == (status == 0)


def test_report_sections_are_replaced_in_place(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    write_section("a", "A", "cmd a", "first", report)
    write_section("b", "B", "cmd b", "second", report)
    write_section("a", "A", "cmd a", "third", report)
    text = report.read_text()
    assert "first" not in text
    assert text.index("third") < text.index("second")
    assert text.count("<!-- bench:a -->") == 1
    assert "Machine:" in text
    assert "Date:" in text
