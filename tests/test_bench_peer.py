"""The benchmark client's clip track: what it sends, packet by packet."""

from __future__ import annotations

import numpy as np

from streamer.probe.peer import FRAME_SAMPLES, ClipTrack, clip_packet


def test_a_looped_clip_repeats_every_whole_packet() -> None:
    pcm = np.arange(3 * FRAME_SAMPLES, dtype=np.int16)
    for n in range(9):
        k = n % 3
        assert np.array_equal(clip_packet(pcm, n, loop=True), pcm[k * 960 : (k + 1) * 960]), n
    assert not clip_packet(pcm, 3, loop=False).any()


async def test_the_track_pads_the_clip_to_whole_packets_and_loops_on_them() -> None:
    # 2.5 packets of a ramp: the track plays 3 packets (the last half silent), then again from
    # the start, so a looped clip's period is len // 960 packets, as the soak's onsets assume.
    clip = (np.arange(int(2.5 * FRAME_SAMPLES)) + 1).astype(np.float32) / 32767
    track = ClipTrack(clip, loop=True)
    frames = [await track.recv() for _ in range(7)]  # 140 ms of real-time pacing
    mono = [f.to_ndarray().reshape(-1, 2)[:, 0] for f in frames]
    assert [int(m[0]) for m in mono[:3]] == [1, 961, 1921]
    assert not mono[2][480:].any()
    for n in range(3, 7):
        assert np.array_equal(mono[n], mono[n % 3]), n
    assert [f.pts for f in frames] == [n * FRAME_SAMPLES for n in range(7)]
