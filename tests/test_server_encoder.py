"""The server's video encoder: real libvpx and libx264 through PyAV, decoded back and compared."""

from __future__ import annotations

import av
import numpy as np
import pytest

from streamer.server.media.encoder import VIDEO_TIME_BASE, VideoEncoder, VideoEncoderSettings
from streamer.server.media.tracks import PacketTrack
from streamer.yuv import bgr_to_yuv420

DECODER = {"vp8": "libvpx", "h264": "h264"}


def moving_face(n: int, size: int = 256) -> list[np.ndarray]:
    """A smooth picture with a 'mouth' that opens and closes: what the encoder sees live."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([80 + 0.3 * x, 120 + 0.2 * y, 160 - 0.1 * (x + y)], axis=-1)
    frames = []
    for k in range(n):
        img = base.copy()
        opening = 6 + 10 * abs(np.sin(k / 4))
        mouth = ((x - size / 2) / 30) ** 2 + ((y - 0.7 * size) / opening) ** 2 < 1
        img[mouth] = (40, 30, 90)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-9))


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_packets_decode_back_to_the_frames_at_their_pts(codec: str) -> None:
    frames = moving_face(50)
    encoder = VideoEncoder(VideoEncoderSettings(codec=codec))
    decoder = av.CodecContext.create(DECODER[codec], "r")
    got = []
    for i, image in enumerate(frames):
        packets = encoder.encode(image, 3600 * i)
        assert len(packets) == 1  # one per frame: the sender takes one item per recv()
        assert packets[0].pts == 3600 * i
        assert packets[0].time_base == VIDEO_TIME_BASE
        got += [f.to_ndarray(format="bgr24") for f in decoder.decode(packets[0])]
    assert len(got) == len(frames)
    quality = [psnr_db(a, b) for a, b in zip(got, frames, strict=True)]
    # Colours survive (BT.601 limited range both ways): a range or matrix mix-up reads < 25 dB.
    assert min(quality[5:]) > 32, quality
    assert encoder.frames == 50
    assert encoder.keyframes == 1  # the first only


def test_a_requested_keyframe_and_the_safety_interval() -> None:
    encoder = VideoEncoder(VideoEncoderSettings(keyframe_interval_frames=20))
    keys = [
        i
        for i, image in enumerate(moving_face(45))
        if encoder.encode(image, 3600 * i, keyframe=(i == 7))[0].is_keyframe
    ]
    assert keys == [0, 7, 27]  # first, asked for, then every 20 frames from the last one


def test_a_bitrate_change_past_the_deadband_restarts_with_a_keyframe() -> None:
    encoder = VideoEncoder(VideoEncoderSettings())
    frames = moving_face(6)
    encoder.encode(frames[0], 0)
    assert not encoder.set_bitrate(520_000)  # within 10 % of 500 kbps: ignored
    assert not encoder.encode(frames[1], 3600)[0].is_keyframe
    assert encoder.set_bitrate(1_000_000)
    assert encoder.encode(frames[2], 7200)[0].is_keyframe
    assert (encoder.bitrate_bps, encoder.reopens) == (1_000_000, 2)


def test_the_bitrate_is_followed() -> None:
    # Fresh noise every frame: more detail than either rate can carry, so each must ration.
    rng = np.random.default_rng(0)
    frames = [
        np.clip(f.astype(np.int16) + rng.integers(-40, 40, f.shape), 0, 255).astype(np.uint8)
        for f in moving_face(75)
    ]
    sizes = {}
    for bps in (250_000, 1_000_000):
        encoder = VideoEncoder(VideoEncoderSettings(bitrate_bps=bps))
        total = sum(encoder.encode(f, 3600 * i)[0].size for i, f in enumerate(frames))
        sizes[bps] = total * 8 / 3.0  # bits per second over 3 s
    assert sizes[1_000_000] > 1.5 * sizes[250_000], sizes


def test_bad_settings_and_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="codec"):
        VideoEncoderSettings(codec="av1")
    with pytest.raises(ValueError, match="cpu-used"):
        VideoEncoderSettings(vp8_speed=17)
    with pytest.raises(ValueError, match="even"):
        bgr_to_yuv420(np.zeros((5, 8, 3), np.uint8), 0, VIDEO_TIME_BASE)


async def test_a_viewer_track_starts_at_a_keyframe_and_overflows_to_the_next() -> None:
    encoder = VideoEncoder(VideoEncoderSettings())
    frames = moving_face(12)
    packets = [encoder.encode(f, 3600 * i, keyframe=i in (0, 9))[0] for i, f in enumerate(frames)]
    asked: list[int] = []
    track = PacketTrack(lambda: asked.append(len(asked)), maxsize=4)
    for p in packets[1:5]:  # joined between keyframes: nothing it could decode
        track.put(p)
    assert (track.withheld, track._queue.qsize()) == (4, 0)
    track.put(packets[9])  # a keyframe: from here on
    track.put(packets[10])
    assert [(await track.recv()).pts for _ in range(2)] == [9 * 3600, 10 * 3600]
    for p in packets[:5]:  # nobody reads: the fifth overflows the four queued
        track.put(p)
    assert track.dropped == 4
    assert track.waiting_for_keyframe
    assert asked == [0]
    assert track._queue.qsize() == 0  # packets[4] is no keyframe: withheld too
    track.stop()


def test_estimates_are_followed_at_most_every_hold() -> None:
    encoder = VideoEncoder(VideoEncoderSettings())
    assert not encoder.follow(None, 0.0)  # no estimate yet: nothing, and no hold started
    assert encoder.follow(1_000_000, 0.1)
    assert not encoder.follow(250_000, 3.0)  # within the 5 s hold: ignored
    assert encoder.bitrate_bps == 1_000_000
    assert encoder.follow(250_000, 5.2)
    assert encoder.bitrate_bps == 250_000
