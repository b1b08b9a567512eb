"""Where avatar-streamer finds what it ships and where it writes: the one place that decides.

Shipped, read-only resources: the pages (``web/``), the built-in model
(``models/builtin.onnx``) and the default avatar's source (``avatars/default/source.jpg``).
Writable state: prepared avatars (``AVATARS/NAME/cache/``).

How it decides, from the location of the imported ``streamer`` package only (never from the
working directory):

- **A development clone** (an editable install, or ``PYTHONPATH`` pointing at a checkout): the
  folder above the package holds a ``pyproject.toml`` whose ``[project] name`` is
  ``avatar-streamer``. The shipped resources are that repository's top-level ``web/``,
  ``models/`` and ``avatars/default/`` folders, and prepared avatars go to its ``avatars/``
  folder (``avatars/*/cache/`` is git-ignored), as they always have.
- **An installed package** (a wheel, from PyPI or built with ``python -m build``): anything else.
  The shipped resources are read through :mod:`importlib.resources` from ``streamer/_data/``,
  where the build maps the repository's folders (``[tool.hatch.build.targets.wheel]`` in
  ``pyproject.toml``; an editable install maps nothing, it is a development clone); nothing
  is ever written there. Prepared avatars go to the per-user
  data directory, ``platformdirs.user_data_path("avatar-streamer") / "avatars"``
  (``~/.local/share/avatar-streamer/avatars`` on Linux, ``$XDG_DATA_HOME`` honoured).

The avatars folder is overridden by a command's ``--avatars-dir``, then by
:data:`AVATARS_DIR_ENV`; see :func:`avatars_dir`. The default avatar's source is looked for in
``AVATARS/default/source.jpg`` first (a user may replace it) and then in the shipped resources
(:func:`default_avatar_source`).

Pure and synchronous: a few ``stat`` calls and one small TOML read per call, no caching, no
module state.
"""

from __future__ import annotations

import argparse
import enum
import importlib.resources
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from streamer.errors import StreamerError

PROJECT_NAME = "avatar-streamer"
AVATARS_DIR_ENV = "AVATAR_STREAMER_AVATARS_DIR"
# Inside the installed package: the build's mapping of the repository's folders.
PACKAGED_DATA_DIR = "_data"
DEFAULT_AVATAR = "default"
DEFAULT_AVATAR_SOURCE = "source.jpg"


class ResourceError(StreamerError):
    """The package's own files cannot be reached (e.g. it was imported from a zip archive)."""

    code = "resource_error"


class Layout(enum.Enum):
    CHECKOUT = "development clone"
    INSTALLED = "installed package"


@dataclass(frozen=True)
class Resources:
    """Where the shipped files are (all absolute; they may be missing from a broken install:
    see :meth:`missing`) and where avatars go unless overridden."""

    layout: Layout
    package_dir: Path  # the imported ``streamer`` package
    web_dir: Path  # index.html, view.html, their scripts and style
    builtin_model: Path  # models/builtin.onnx
    shipped_avatars_dir: Path  # holds default/source.jpg; read-only when installed
    default_avatars_dir: Path  # writable: prepared avatars when no override is given

    @property
    def shipped_default_source(self) -> Path:
        return self.shipped_avatars_dir / DEFAULT_AVATAR / DEFAULT_AVATAR_SOURCE

    def missing(self) -> list[Path]:
        """The shipped files that are not there (empty for a sound checkout or install)."""
        wanted = (
            self.web_dir / "index.html",
            self.web_dir / "view.html",
            self.builtin_model,
            self.shipped_default_source,
        )
        return [path for path in wanted if not path.is_file()]


def is_checkout(root: Path) -> bool:
    """Whether ``root`` is this project's repository: it has a ``pyproject.toml`` naming it."""
    try:
        with (root / "pyproject.toml").open("rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(project, dict) and project.get("name") == PROJECT_NAME


def _package_dir() -> Path:
    files = importlib.resources.files("streamer")
    if not isinstance(files, Path):
        raise ResourceError(
            f"avatar-streamer is imported from {files}, not from files on disk: install it "
            "from a wheel (pip install) so that its pages, model and avatar can be read"
        )
    return files.resolve()


def locate(package_dir: Path | None = None, user_data_dir: Path | None = None) -> Resources:
    """Where everything is, for the package at ``package_dir`` (default: the imported one).

    ``user_data_dir`` replaces platformdirs' per-user data directory (tests). Raises
    :class:`ResourceError` when the package is not on disk.
    """
    package = _package_dir() if package_dir is None else package_dir
    root = package.parent
    if is_checkout(root):
        return Resources(
            layout=Layout.CHECKOUT,
            package_dir=package,
            web_dir=root / "web",
            builtin_model=root / "models" / "builtin.onnx",
            shipped_avatars_dir=root / "avatars",
            default_avatars_dir=root / "avatars",
        )
    data = package / PACKAGED_DATA_DIR
    user = user_data_dir or platformdirs.user_data_path(PROJECT_NAME, appauthor=False)
    return Resources(
        layout=Layout.INSTALLED,
        package_dir=package,
        web_dir=data / "web",
        builtin_model=data / "models" / "builtin.onnx",
        shipped_avatars_dir=data / "avatars",
        default_avatars_dir=user / "avatars",
    )


def avatars_dir_and_origin(
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    resources: Resources | None = None,
) -> tuple[Path, str]:
    """The folder of prepared avatars and, in words, where that choice came from:
    ``explicit`` (a command's ``--avatars-dir``), else ``$AVATAR_STREAMER_AVATARS_DIR``, else
    the layout's default (see the module docstring)."""
    if explicit is not None:
        return explicit, "from --avatars-dir"
    env = (os.environ if environ is None else environ).get(AVATARS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${AVATARS_DIR_ENV}"
    found = resources or locate()
    if found.layout is Layout.CHECKOUT:
        return found.default_avatars_dir, "the development clone's own avatars/"
    return found.default_avatars_dir, "the per-user data directory"


def avatars_dir(
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    resources: Resources | None = None,
) -> Path:
    """The folder of prepared avatars (see :func:`avatars_dir_and_origin`)."""
    return avatars_dir_and_origin(explicit, environ, resources)[0]


def default_avatar_source(avatars_root: Path, resources: Resources | None = None) -> Path:
    """The photo the default avatar is prepared from: ``avatars_root/default/source.jpg`` when
    there is one, else the shipped portrait (which may be missing from a broken install)."""
    own = avatars_root / DEFAULT_AVATAR / DEFAULT_AVATAR_SOURCE
    if own.is_file():
        return own
    return (resources or locate()).shipped_default_source


def add_avatars_dir_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """The ``--avatars-dir`` option every command that reads or prepares avatars shares; its
    value (None when not given) goes through :func:`avatars_dir`."""
    parser.add_argument(
        "--avatars-dir",
        *aliases,
        dest="avatars_dir",
        type=Path,
        default=None,
        help=f"folder of prepared avatars (default: ${AVATARS_DIR_ENV}, else the repository's "
        "avatars/ in a development clone, else the per-user data directory; "
        "`avatar-streamer avatars` shows it)",
    )


def add_model_arguments(parser: argparse.ArgumentParser, *, live: bool) -> None:
    """The model options every command that runs a model shares (``serve``, ``live``,
    ``render``); ``live`` adds the one only live calls need. Read back with
    ``EngineOptions.from_flags(args.providers, args.fp16)``."""
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="an ONNX model (Wav2Lip contract) or a MuseTalk folder from "
        "scripts/export_musetalk.py (default: the built-in model)",
    )
    parser.add_argument(
        "--providers",
        default=None,
        help="comma-separated ONNX Runtime providers (default: best available)",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="float16 (a GPU speed-up): a model file is converted at load after an accuracy "
        "check, a MuseTalk folder uses the variants its export checked",
    )
    if live:
        parser.add_argument(
            "--allow-slow-model",
            action="store_true",
            help="serve a model measured below 25 frames per second anyway (calls stutter)",
        )


def web_dir() -> Path:
    """The pages' folder (see :func:`locate`)."""
    return locate().web_dir


def builtin_model_path() -> Path:
    """The shipped built-in model (see :func:`locate`)."""
    return locate().builtin_model
