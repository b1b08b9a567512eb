"""The avatar command line pieces: listing, the progress line, the contact sheet."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from streamer.avatar import PrepareOptions, PrepareProgress, prepare_avatar
from streamer.avatar.cli import ProgressLine
from streamer.avatar.sheet import render_contact_sheet
from streamer.cli import main
from tests.avatar_media import PORTRAIT


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_shows_frames_rate_and_eta() -> None:
    out = _Tty()
    bar = ProgressLine(out, width=10)
    bar(PrepareProgress(done=25, total=100, elapsed_s=1.0))
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r[##--------] 25/100 frames")
    assert "25.0 fps" in text
    assert "ETA   3.0 s" in text
    assert text.endswith("\n")


def test_progress_line_without_total_or_tty() -> None:
    out = io.StringIO()
    bar = ProgressLine(out, every_s=2.0)
    for i in range(1, 6):
        bar(PrepareProgress(done=i, total=None, elapsed_s=i * 1.0))
    assert out.getvalue().splitlines() == [
        "1 frames    1.0 fps",
        "3 frames    1.0 fps",
        "5 frames    1.0 fps",
    ]


def test_avatars_lists_prepared_unprepared_and_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_avatar(PORTRAIT, "ready", tmp_path, PrepareOptions(idle_seconds=0.2))
    (tmp_path / "default").mkdir()
    (tmp_path / ".hidden.prepare-x").mkdir()  # a temporary folder is not an avatar
    (tmp_path / "stale" / "cache").mkdir(parents=True)
    (tmp_path / "stale" / "cache" / "manifest.json").write_text("not json")
    assert main(["avatars", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"avatars in {tmp_path} (from --avatars-dir)"
    assert lines[1].split() == ["NAME", "FRAMES", "SIZE", "FPS", "STATUS", "PATH"]
    default = ["default", "-", "-", "-", "not", "prepared", str(tmp_path / "default")]
    assert lines[2].split() == default
    assert lines[3].startswith("    prepared on first use from ")
    assert lines[4].split() == ["ready", "5", "512x512", "25", "prepared", str(tmp_path / "ready")]
    assert lines[5].split() == ["stale", "-", "-", "-", "stale", str(tmp_path / "stale")]
    assert "unreadable manifest" in lines[6]
    assert len(lines) == 7


def test_avatars_lists_the_default_before_its_first_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVATAR_STREAMER_AVATARS_DIR", str(tmp_path / "nothing-yet"))
    assert main(["avatars"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"avatars in {tmp_path / 'nothing-yet'} (from $AVATAR_STREAMER_AVATARS_DIR)"
    )
    assert lines[2].split()[:6] == ["default", "-", "-", "-", "not", "prepared"]
    assert lines[3].endswith("source.jpg")
    assert not (tmp_path / "nothing-yet").exists()  # listing writes nothing


def test_contact_sheet_renders(tmp_path: Path) -> None:
    avatar = prepare_avatar(PORTRAIT, "s", tmp_path, PrepareOptions(idle_seconds=0))
    sheet = render_contact_sheet(avatar)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (768, 1024, 3)
