"""A contact sheet of one prepared avatar: frame, face box, mouth landmarks, crops, masks.

For eyes, not for the real-time path: ``scripts/avatar_contact_sheet.py`` writes it to
``docs/images/avatar-default.png``. Pure and synchronous.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from streamer.avatar.cache import Avatar
from streamer.crop import CropConvention

_GREEN, _RED, _YELLOW, _CYAN, _WHITE = (
    (0, 200, 0),
    (0, 0, 255),
    (0, 220, 255),
    (255, 200, 0),
    (255, 255, 255),
)
_LANDMARK_NAMES = ("left", "right", "upper", "lower")


def _label(img: npt.NDArray[np.uint8], text: str) -> None:
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _WHITE, 1, cv2.LINE_AA)


def _tint(img: npt.NDArray[np.uint8], mask: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Blend red into ``img`` in proportion to ``mask`` (60 % at mask 1)."""
    a = 0.6 * mask[..., None]
    red = np.array(_RED, np.float32)
    return np.asarray(np.rint(img * (1 - a) + red * a), dtype=np.uint8)


def _zoom(img: npt.NDArray[np.uint8], side_px: int) -> npt.NDArray[np.uint8]:
    return np.asarray(
        cv2.resize(img, (side_px, side_px), interpolation=cv2.INTER_NEAREST), dtype=np.uint8
    )


def _fit_height(img: npt.NDArray[np.uint8], height_px: int) -> npt.NDArray[np.uint8]:
    scale = height_px / img.shape[0]
    size = (round(img.shape[1] * scale), height_px)
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def render_contact_sheet(
    avatar: Avatar, frame_index: int = 0, crop_size_px: int = 96
) -> npt.NDArray[np.uint8]:
    """BGR image: top row the frame (face box green, WAV2LIP crop cyan, MOUTH crop yellow,
    landmarks red) and a zoom on the face with the WAV2LIP blend mask in red; bottom row the
    MOUTH and WAV2LIP reference crops, each plain and with its blend mask."""
    i = frame_index % avatar.frame_count
    frame = np.array(avatar.frames[i])
    mouth_c = avatar.crops(CropConvention.MOUTH, crop_size_px)
    w2l_c = avatar.crops(CropConvention.WAV2LIP, crop_size_px)

    boxes = frame.copy()
    for box, colour in ((w2l_c.boxes[i], _CYAN), (mouth_c.boxes[i], _YELLOW)):
        cv2.rectangle(
            boxes, tuple(int(v) for v in box[:2]), tuple(int(v) - 1 for v in box[2:]), colour, 1
        )
    fb = avatar.face_boxes[i]
    cv2.rectangle(boxes, (int(fb[0]), int(fb[1])), (int(fb[2]) - 1, int(fb[3]) - 1), _GREEN, 2)
    for x, y in avatar.mouth[i]:
        cv2.circle(boxes, (round(float(x)), round(float(y))), 2, _RED, -1)
    boxes = _fit_height(boxes, 512)
    _label(boxes, f"{avatar.name} frame {i}/{avatar.frame_count}: face box, crops, mouth")

    # Zoom on the face region (the WAV2LIP box plus a margin), mask pasted in frame coordinates.
    x0, y0, x1, y1 = (int(v) for v in w2l_c.boxes[i])
    full_mask = np.zeros(frame.shape[:2], np.float32)
    resized = cv2.resize(w2l_c.masks[i], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    full_mask[cy0:cy1, cx0:cx1] = resized[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    margin = (x1 - x0) // 4
    zx0, zy0 = max(0, x0 - margin), max(0, y0 - margin)
    zx1, zy1 = min(w, x1 + margin), min(h, y1 + margin)
    zoom = _tint(frame, full_mask)[zy0:zy1, zx0:zx1]
    scale = 512 / zoom.shape[0]
    zoom = _fit_height(np.ascontiguousarray(zoom), 512)
    for (x, y), name in zip(avatar.mouth[i], _LANDMARK_NAMES, strict=True):
        p = (round((float(x) - zx0 + 0.5) * scale), round((float(y) - zy0 + 0.5) * scale))
        cv2.drawMarker(zoom, p, _GREEN, cv2.MARKER_CROSS, 14, 2)
        cv2.putText(zoom, name, (p[0] + 6, p[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _GREEN, 1)
    _label(zoom, "zoom: mouth landmarks, WAV2LIP blend mask (red)")

    tiles = []
    for crops, name in ((mouth_c, "MOUTH"), (w2l_c, "WAV2LIP")):
        ref = _zoom(crops.faces[i], 256)
        tinted = _zoom(_tint(crops.faces[i], crops.masks[i]), 256)
        _label(ref, f"{name} crop {crop_size_px}px")
        _label(tinted, f"{name} blend mask")
        tiles += [ref, tinted]
    bottom = np.hstack(tiles)
    top = np.hstack([boxes, zoom])
    width = max(top.shape[1], bottom.shape[1])
    sheet: npt.NDArray[np.uint8] = np.vstack(
        [np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0))) for img in (top, bottom)]
    )
    return sheet
