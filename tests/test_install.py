"""Installed with pip, run from anywhere: the wheel as a new user gets it.

Builds the sdist and, from it, the wheel (``python -m build``), installs the wheel into a fresh
virtual environment under a temporary folder outside the checkout, and runs the installed
``avatar-streamer`` from another temporary folder, with its own ``HOME`` (so the per-user data
directory is a fresh one) and without ``PYTHONPATH`` (so nothing comes from the checkout):
``serve`` answers ``/health``, serves the pages and a real aiortc call at 25 fps with audio;
``render`` writes an MP4. Every file of the virtual environment is fingerprinted (path, size,
mtime) after the install and again after those runs: the installed package writes nothing
inside its install location (chmod would not show it: the tests may run as root).

Cost: building takes seconds; installing the dependencies into the fresh environment is most of
it (onnxruntime-gpu alone is a 256 MB wheel), fast once pip's cache holds them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

import streamer
from streamer.probe import promtext
from streamer.probe.peer import LoopbackPeer
from streamer.probe.signals import speechlike_48k
from tests.servers import ServedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.realtime, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (
    "web/index.html",
    "web/view.html",
    "web/call.js",
    "web/view.js",
    "web/common.js",
    "web/style.css",
    "models/builtin.onnx",
    "avatars/default/source.jpg",
)

Snapshot = dict[str, tuple[int, int]]  # relative path -> (size in bytes, mtime in ns)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    sdist: Path
    venv: Path
    work: Path  # the working directory of every installed command: empty but for its output
    home: Path  # HOME of the installed commands: the per-user data directory is under it
    env: dict[str, str]
    after_install: Snapshot
    seconds: dict[str, float]  # build, install

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "avatar-streamer"

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.command), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def snapshot(root: Path) -> Snapshot:
    """Every file under ``root``: size and mtime (symlinks as links, not followed)."""
    found: Snapshot = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert (added, removed, changed) == ([], [], []), "the install location was written to"


async def _late_ticks(http: aiohttp.ClientSession, url: str) -> float:
    """The server's count of scheduler ticks it skipped because it was late."""
    async with http.get(f"{url}/metrics") as r:
        return promtext.value(promtext.parse(await r.text()), "avatar_ticks_late_total")


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would import from the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("AVATAR_STREAMER_AVATARS_DIR", None)
    env.pop("AVATAR_STREAMER_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("install")
    assert not root.resolve().is_relative_to(REPO)
    dist, env_dir, work, home = root / "dist", root / "venv", root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    seconds = {}

    started = time.monotonic()
    built = subprocess.run(  # the sdist, then the wheel from the sdist
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    seconds["build"] = time.monotonic() - started
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    started = time.monotonic()
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    seconds["install"] = time.monotonic() - started

    env = _clean_env()
    env.pop("XDG_DATA_HOME", None)
    env |= {"HOME": str(home), "PYTHONUNBUFFERED": "1"}
    yield Installed(wheel, sdist, env_dir, work, home, env, snapshot(env_dir), seconds)
    print(f"\ntest_install: build {seconds['build']:.0f} s, install {seconds['install']:.0f} s")


def test_wheel_and_sdist_carry_pages_model_and_default_avatar(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for shipped in SHIPPED:
        assert f"streamer/_data/{shipped}" in names, shipped
    assert not [n for n in names if "/cache/" in n or "__pycache__" in n]
    assert f"avatar_streamer-{streamer.__version__}.dist-info/METADATA" in names
    with tarfile.open(installed.sdist) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    for shipped in (*SHIPPED, "pyproject.toml", "CHANGELOG.md", "streamer/resources.py"):
        assert shipped in members, shipped
    assert not [m for m in members if "/cache/" in m]


def test_installed_commands_find_everything_from_another_directory(installed: Installed) -> None:
    version = installed.run("--version")
    assert version.stdout == f"avatar-streamer {streamer.__version__}\n"
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import streamer; print(streamer.__file__)"],
        cwd=installed.work,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)
    doctor = installed.run("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"installed package at {installed.venv}" in doctor.stdout
    listed = installed.run("avatars")
    user_avatars = installed.home / ".local" / "share" / "avatar-streamer" / "avatars"
    assert f"avatars in {user_avatars} (the per-user data directory)" in listed.stdout
    assert "default" in listed.stdout
    assert_unchanged(installed.after_install, snapshot(installed.venv))


async def test_installed_serve_answers_pages_and_a_call(installed: Installed) -> None:
    work_before = sorted(installed.work.iterdir())
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(installed.command),
        "serve",
        "--port",
        str(port),
        cwd=installed.work,
        env=installed.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    server = ServedProcess(f"http://127.0.0.1:{port}", proc)
    url = server.url
    try:
        # The first start loads the model and prepares the default avatar in the new per-user
        # data directory (a few seconds; generous for a shared, niced machine).
        await server.wait_ready(timeout_s=120)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/health") as r:
                health = await r.json()
            assert health["status"] == "ok"
            assert health["model"]["name"] == "builtin"
            for path, page in (("/", "index.html"), ("/view/studio", "view.html")):
                async with http.get(f"{url}{path}") as r:
                    assert r.status == 200, path
                    assert r.content_type == "text/html"
                    assert await r.text() == (REPO / "web" / page).read_text()
            async with http.get(f"{url}/static/call.js") as r:
                assert r.status == 200

            late_before = await _late_ticks(http, url)
            peer = LoopbackPeer(url, speechlike_48k(8.0), keep_frames=False)
            await peer.connect(http)
            await asyncio.sleep(7.0)
            late_ticks = await _late_ticks(http, url) - late_before
            await peer.aclose(http)
        stopped = await server.stop(signal.SIGINT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stopped.assert_clean(within_s=5.0)
    log = stopped.output
    assert f"preparing the default avatar in {installed.home}" in log

    # 25 fps: the stream's timestamps step by one 25 fps frame (3600 at 90 kHz), and 125 +- 2
    # frames arrive in the 5 s from the first second after the first one, less the ticks the
    # server itself reported skipping (avatar_ticks_late_total): a server starved of CPU skips
    # ticks rather than bursting, and that is the machine, not the package. (Run niced beside
    # a soak on 2 cores, one run here got 81 frames with 59 ticks skipped; test_e2e_call's
    # in-process server got 18.3 fps at the same time.) Audio comes with each frame: two 20 ms
    # frames per video frame, and not silence.
    got = peer.received
    assert got.video_at_s, "no video arrived"
    assert np.median(np.diff(got.video_pts)) == 3600
    t = np.asarray(got.video_at_s)
    window = (t[0] + 1.0, t[0] + 6.0)
    frames = int(np.sum((t >= window[0]) & (t < window[1])))
    a = np.asarray(got.audio_at_s)
    audio_frames = int(np.sum((a >= window[0]) & (a < window[1])))
    print(
        f"\ninstalled serve: {frames} video and {audio_frames} audio frames in 5 s, "
        f"{late_ticks:.0f} ticks skipped in the call"
    )
    assert 125 - 2 - late_ticks <= frames <= 125 + 2, (frames, late_ticks, log[-3000:])
    assert audio_frames >= 2 * (125 - 5 - late_ticks), (audio_frames, late_ticks)
    returned = np.concatenate(got.audio_pcm).astype(np.float32) / 32768
    assert float(np.sqrt(np.mean(returned**2))) > 0.01

    prepared = installed.home / ".local/share/avatar-streamer/avatars/default/cache"
    assert (prepared / "manifest.json").is_file()
    assert sorted(installed.work.iterdir()) == work_before  # nothing in the working directory
    assert_unchanged(installed.after_install, snapshot(installed.venv))


def test_installed_render_writes_an_mp4(installed: Installed) -> None:
    speech = installed.work / "speech.wav"
    pcm = speechlike_48k(2.0)
    with av.open(str(speech), "w", "wav") as container:
        stream = container.add_stream("pcm_s16le", rate=48_000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 48_000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    done = installed.run("render", "speech.wav", "-o", "speech.mp4", "--no-progress")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with av.open(str(installed.work / "speech.mp4")) as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 2.0) <= 0.05
        (video,) = container.streams.video
        assert video.codec_context.name == "h264"
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert sum(1 for _ in container.decode(video=0)) == 50
    assert sorted(p.name for p in installed.work.iterdir()) == ["speech.mp4", "speech.wav"]
    assert_unchanged(installed.after_install, snapshot(installed.venv))


def test_the_snapshot_sees_files_added_removed_or_rewritten(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"3")  # same size: the mtime tells
    os.utime(tmp_path / "a", ns=(0, before["a"][1] + 1))
    (tmp_path / "b").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(b"")
    with pytest.raises(AssertionError, match="install location"):
        assert_unchanged(before, snapshot(tmp_path))
    after = snapshot(tmp_path)
    assert sorted(after) == ["a", "sub/c"]
    assert after["a"] != before["a"]
