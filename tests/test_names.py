"""One rule for the names users give things: avatars and channels follow it alike."""

from __future__ import annotations

import pytest

from streamer.avatar import InvalidAvatarNameError, validate_name
from streamer.names import NAME_PATTERN, is_valid_name
from streamer.server.channels.channel import InvalidChannelNameError, check_channel_name

GOOD = ["a", "default", "Anna_2", "x-y", "0", "a" * 64]
BAD = ["", "-x", "_x", "a\n", "a.b", "../x", "a/b", "a\\b", "a b", "é", "a" * 65, None, 3]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_everywhere(name: str) -> None:
    assert is_valid_name(name)
    assert validate_name(name) == name
    assert check_channel_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_fail_everywhere(name: object) -> None:
    assert not is_valid_name(name)
    if isinstance(name, str):
        with pytest.raises(InvalidAvatarNameError):
            validate_name(name)
        with pytest.raises(InvalidChannelNameError, match="starting with a letter or digit"):
            check_channel_name(name)


def test_the_pages_and_the_api_description_use_the_same_rule() -> None:
    from streamer.resources import web_dir

    index = (web_dir() / "index.html").read_text()
    assert index.count(f'pattern="{NAME_PATTERN.strip("^$")}"') == 2
