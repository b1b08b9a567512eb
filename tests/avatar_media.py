"""Test media for the avatar tests, made from the committed default portrait."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "avatars" / "default" / "source.jpg"

# Hand-checked on the portrait at 12x zoom (pixel-centre coordinates): left and right mouth
# corners, top of the upper lip and bottom of the lower lip on the mouth's midline.
PORTRAIT_MOUTH = np.array([[204, 141], [243, 142], [224, 140], [224, 154]], dtype=np.float32)
# frontalface_default, scale 1.1, 5 neighbours, on the committed JPEG (x0, y0, x1, y1).
PORTRAIT_FACE = np.array([177, 66, 271, 160])


def portrait() -> np.ndarray:
    image = cv2.imread(str(PORTRAIT))
    assert image is not None
    return image


def shifted(
    image: np.ndarray, dx: float, dy: float, size_wh: tuple[int, int] | None = None
) -> np.ndarray:
    w, h = size_wh or (image.shape[1], image.shape[0])
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )


def write_image(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "mpeg4") -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_portrait_frames(n: int, step_px: float = 2.0, size: int = 384) -> list[np.ndarray]:
    """n frames (size x size) of the portrait panning right by ``step_px`` per frame."""
    image = portrait()
    return [shifted(image, -64 + step_px * i, -20, (size, size)) for i in range(n)]
