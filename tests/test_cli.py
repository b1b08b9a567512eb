from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.probe.report import write_section


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_the_command_table_says_what_each_module_registers() -> None:
    import argparse
    import importlib

    from streamer.cli import COMMANDS

    registered: dict[str, str | None] = {}
    for module in {m for _, m, _ in COMMANDS}:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        registered |= {a.dest: a.help for a in sub._choices_actions}
    assert registered == {c: h for c, _, h in COMMANDS}


def test_help_starts_without_the_heavy_imports() -> None:
    # `avatar-streamer --help` and a command's own --help import only what that command needs.
    probe = (
        "import sys; from streamer.cli import main\n"
        "try: main(sys.argv[1:])\nexcept SystemExit: pass\n"
        "heavy = {'numpy', 'av', 'aiortc', 'onnx', 'onnxruntime', 'cv2'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    for argv in (["--help"], ["serve", "--help"], ["render", "--help"], ["no-such"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=False
        )
        assert done.stdout.strip().splitlines()[-1] == "[]", (argv, done.stdout, done.stderr)


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from streamer import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"avatar-streamer {__version__}\n"
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"## {__version__} - " in changelog  # every version says what changed


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


def test_the_report_is_the_clones_and_an_installed_package_only_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamer.probe import report
    from streamer.resources import locate

    assert report.default_report() == Path(__file__).resolve().parents[1] / "docs/benchmarks.md"
    installed = locate(tmp_path / "site-packages" / "streamer", tmp_path / "user")
    monkeypatch.setattr(report, "locate", lambda: installed)
    monkeypatch.chdir(tmp_path)
    assert report.default_report() is None
    with caplog.at_level("INFO"):
        write_section("a", "A", "cmd a", "figures")
    assert "not recorded" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_serve_flags_become_the_server_config() -> None:
    from streamer.cli import build_parser
    from streamer.server.commands.serve import server_config
    from streamer.server.http.access import access_from_args

    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--max-channels",
            "3",
            "--max-viewers-per-channel",
            "5",
            "--max-viewers",
            "9",
            "--connect-timeout-s",
            "4.5",
            "--channel-idle-timeout-s",
            "0",
            "--public-viewers",
            "--cors-origin",
            "https://a.example",
        ]
    )
    config = server_config(args, access_from_args(args, {"AVATAR_STREAMER_TOKEN": "t" * 32}))
    assert config.channels.max_channels == 3
    assert config.channels.max_viewers_per_channel == 5
    assert config.channels.max_viewers_total == 9
    assert config.channels.idle_timeout_s is None  # 0: never
    assert config.connect_timeout_s == 4.5
    assert config.access.token == "t" * 32
    assert config.access.public_viewers
    assert config.access.cors_origins == ("https://a.example",)
    defaults = server_config(
        build_parser().parse_args(["serve"]),
        access_from_args(build_parser().parse_args(["serve"]), {}),
    )
    assert defaults.access.token is None
    assert defaults.channels.idle_timeout_s == 600.0
