"""Where shipped resources and prepared avatars are found: streamer.resources' one rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.resources import (
    AVATARS_DIR_ENV,
    Layout,
    avatars_dir,
    avatars_dir_and_origin,
    default_avatar_source,
    is_checkout,
    locate,
)

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


SHIPPED = ["web/index.html", "web/view.html", "models/builtin.onnx", "avatars/default/source.jpg"]


def test_this_repository_is_a_development_clone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    found = locate()
    assert found.layout is Layout.CHECKOUT
    assert found.package_dir == REPO / "streamer"
    assert found.web_dir == REPO / "web"
    assert found.builtin_model == REPO / "models" / "builtin.onnx"
    assert found.shipped_default_source == REPO / "avatars" / "default" / "source.jpg"
    assert found.default_avatars_dir == REPO / "avatars"
    assert found.missing() == []


def test_a_checkout_is_recognised_by_its_pyproject(tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    _tree(repo, ["streamer/__init__.py", *SHIPPED])
    (repo / "pyproject.toml").write_text('[project]\nname = "avatar-streamer"\n')
    found = locate(repo / "streamer", user_data_dir=tmp_path / "user")
    assert is_checkout(repo)
    assert found.layout is Layout.CHECKOUT
    assert found.web_dir == repo / "web"
    assert found.default_avatars_dir == repo / "avatars"
    assert found.missing() == []


@pytest.mark.parametrize(
    "pyproject",
    [None, '[project]\nname = "something-else"\n', "not [valid toml", "[project]\nname = 3\n"],
)
def test_anything_else_is_an_installed_package(tmp_path: Path, pyproject: str | None) -> None:
    site = tmp_path / "site-packages"
    package = site / "streamer"
    _tree(package, [f"_data/{name}" for name in SHIPPED])
    if pyproject is not None:
        (site / "pyproject.toml").write_text(pyproject)
    found = locate(package, user_data_dir=tmp_path / "user")
    assert found.layout is Layout.INSTALLED
    assert found.web_dir == package / "_data" / "web"
    assert found.builtin_model == package / "_data" / "models" / "builtin.onnx"
    assert found.shipped_default_source == package / "_data/avatars/default/source.jpg"
    assert found.default_avatars_dir == tmp_path / "user" / "avatars"  # never inside the package
    assert found.missing() == []


def test_missing_lists_what_a_broken_install_lacks(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "streamer"
    _tree(package, ["_data/web/index.html"])
    found = locate(package, user_data_dir=tmp_path / "user")
    assert [p.name for p in found.missing()] == ["view.html", "builtin.onnx", "source.jpg"]


def test_installed_default_is_the_platform_user_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    found = locate(tmp_path / "site-packages" / "streamer")
    assert found.default_avatars_dir == tmp_path / "xdg" / "avatar-streamer" / "avatars"


def test_avatars_dir_precedence(tmp_path: Path) -> None:
    installed = locate(tmp_path / "site-packages" / "streamer", user_data_dir=tmp_path / "user")
    env = {AVATARS_DIR_ENV: str(tmp_path / "from-env")}
    assert avatars_dir_and_origin(tmp_path / "flag", env, installed) == (
        tmp_path / "flag",
        "from --avatars-dir",
    )
    assert avatars_dir_and_origin(None, env, installed) == (
        tmp_path / "from-env",
        f"from ${AVATARS_DIR_ENV}",
    )
    assert avatars_dir_and_origin(None, {AVATARS_DIR_ENV: "  "}, installed) == (
        tmp_path / "user" / "avatars",
        "the per-user data directory",
    )
    assert avatars_dir(None, {AVATARS_DIR_ENV: "~/av"}, installed) == Path.home() / "av"
    assert avatars_dir_and_origin(None, {}, locate())[1] == "the development clone's own avatars/"


def test_default_avatar_source_prefers_the_avatars_folders_own(tmp_path: Path) -> None:
    installed = locate(tmp_path / "site-packages" / "streamer", user_data_dir=tmp_path / "user")
    root = tmp_path / "avatars"
    assert default_avatar_source(root, installed) == installed.shipped_default_source
    _tree(root, ["default/source.jpg"])
    assert default_avatar_source(root, installed) == root / "default" / "source.jpg"
