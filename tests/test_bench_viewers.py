"""``bench viewers`` with its viewers in worker processes: a short real run against a server."""

from __future__ import annotations

import pytest

from streamer.bench.viewer_clients import split
from streamer.bench.viewers import measure


def test_viewers_are_split_evenly_over_at_most_that_many_processes() -> None:
    assert split(50, 2) == [25, 25]
    assert split(10, 3) == [4, 3, 3]
    assert split(1, 4) == [1]
    assert sum(split(7, 7)) == 7


@pytest.mark.realtime
@pytest.mark.slow
async def test_viewers_in_two_client_processes_watch_one_channel() -> None:
    # Three viewers over two worker processes: every one of them counted, each at ~25 fps,
    # their keyframes decoded to the avatar's 512x512 picture, the workers' CPU measured.
    (row,) = await measure([3], seconds=4.0, warmup=1.5, codec="vp8", processes=2)
    print(row)
    assert row["viewers"] == 3
    assert row["fps_min"] >= 20.0, row
    assert row["fps_mean"] <= 26.0, row
    assert row["keyframes"] >= 0
    assert row["picture"].startswith("512x512"), row
    assert 0 < row["client_cpu_pct"] < 200, row
    assert row["cpu_pct"] > 0, row
