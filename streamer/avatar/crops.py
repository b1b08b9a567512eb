"""Reference crops and blend masks cut from an avatar's frames per a model's crop convention.

Pure numpy/cv2, synchronous. Boxes are ``(x0, y0, x1, y1)`` int32 frame pixels (exclusive ends)
and may extend past the frame edge: the reference crop pads with edge pixels there, and
:func:`streamer.avatar.composite.composite` pastes only the part inside the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from streamer.crop import (
    MOUTH_CENTER_X,
    MOUTH_CENTER_Y,
    MOUTH_WIDTH,
    MUSETALK_BOTTOM_PAD_PX,
    MUSETALK_BRIDGE_ABOVE_LIP,
    WAV2LIP_BOTTOM_PAD_PX,
    CropConvention,
)


@dataclass(frozen=True, eq=False)
class AvatarCrops:
    """Crops of every frame of one avatar for one (convention, size).

    ``boxes`` [N,4] int32: frame region each crop covers (may pass the frame edge).
    ``faces`` [N,S,S,3] uint8 BGR: reference crops resized to S. ``masks`` [N,S,S] float32 in
    [0,1]: blend mask in crop coordinates, feathered and zero on the crop border. Read-only.
    """

    convention: CropConvention
    size_px: int
    boxes: npt.NDArray[np.int32]
    faces: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.float32]


def crop_boxes(
    convention: CropConvention,
    face_boxes: npt.NDArray[np.int32],
    mouth: npt.NDArray[np.float32],
) -> npt.NDArray[np.int32]:
    """[N,4] int32 crop boxes for ``convention`` from face boxes [N,4] and mouth [N,4,2]."""
    if convention is CropConvention.WAV2LIP:
        boxes = face_boxes.astype(np.int32, copy=True)
        boxes[:, 3] += WAV2LIP_BOTTOM_PAD_PX
        return boxes
    if convention is CropConvention.MUSETALK:
        # Upstream: x from the jaw landmarks, y1 the chin + 10 px, and the box centred on the
        # nose bridge. Here the face box gives the jaw width and the chin, and the bridge is
        # estimated above the upper lip from the mouth width.
        mouth_w = np.linalg.norm(mouth[:, 1] - mouth[:, 0], axis=1).astype(np.float64)
        bridge_y = mouth[:, 2, 1].astype(np.float64) - MUSETALK_BRIDGE_ABOVE_LIP * mouth_w
        y1 = face_boxes[:, 3].astype(np.float64) + MUSETALK_BOTTOM_PAD_PX
        y0 = np.maximum(0.0, 2.0 * bridge_y - y1)
        return np.stack(
            [face_boxes[:, 0], np.rint(y0), face_boxes[:, 2], np.rint(y1)], axis=1
        ).astype(np.int32)
    # MOUTH: a square whose side makes the mouth width MOUTH_WIDTH of it. The avatar's median
    # mouth width sets the scale, so it never jitters with per-frame landmark noise; only when
    # the face size really changes (a video that zooms, > 5 %) does it follow the smoothed
    # face box width.
    mouth_w = np.linalg.norm(mouth[:, 1] - mouth[:, 0], axis=1).astype(np.float64)
    face_w = np.maximum(face_boxes[:, 2] - face_boxes[:, 0], 1).astype(np.float64)
    relative = face_w / float(np.median(face_w))
    if float(np.ptp(relative)) < 0.05:
        relative = np.ones_like(relative)
    side = np.maximum(np.rint(float(np.median(mouth_w)) * relative / MOUTH_WIDTH), 8.0)
    centre = 0.5 * (mouth[:, 0] + mouth[:, 1]).astype(np.float64)
    x0 = np.rint(centre[:, 0] - MOUTH_CENTER_X * side)
    y0 = np.rint(centre[:, 1] - MOUTH_CENTER_Y * side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.int32)


def cut_crop(
    frame: npt.NDArray[np.uint8],
    box: npt.NDArray[np.int32],
    size_px: int,
    interpolation: int | None = None,
) -> npt.NDArray[np.uint8]:
    """The box region of ``frame`` [H,W,3] (edge pixels replicated outside) resized to S x S
    (``interpolation``: a cv2 flag; default area when shrinking, cubic when growing)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    region: npt.NDArray[np.uint8] = frame[cy0:cy1, cx0:cx1]
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        padded = cv2.copyMakeBorder(
            np.ascontiguousarray(region),
            cy0 - y0,
            y1 - cy1,
            cx0 - x0,
            x1 - cx1,
            cv2.BORDER_REPLICATE,
        )
        region = np.asarray(padded, dtype=np.uint8)
    interp = interpolation
    if interp is None:
        interp = cv2.INTER_AREA if (x1 - x0) > size_px else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(region, (size_px, size_px), interpolation=interp), dtype=np.uint8)


def feathered_ellipse(
    size_px: int,
    centre_xy: tuple[float, float],
    axes_xy: tuple[float, float],
    feather: float,
) -> npt.NDArray[np.float32]:
    """[S,S] float32: 1 inside the ellipse shrunk by ``feather`` (fraction of the axes), 0
    outside it, smooth (smoothstep) in between, and forced to 0 on a 1-px crop border."""
    coords = np.arange(size_px, dtype=np.float32)
    dx = (coords[None, :] - centre_xy[0]) / max(axes_xy[0], 1e-3)
    dy = (coords[:, None] - centre_xy[1]) / max(axes_xy[1], 1e-3)
    r = np.sqrt(dx * dx + dy * dy)
    t = np.clip((1.0 - r) / max(feather, 1e-3), 0.0, 1.0)
    mask: npt.NDArray[np.float32] = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    # Never a seam: the outermost pixels of a crop never take generated content.
    ramp = np.minimum(coords, coords[::-1])
    taper = np.clip(ramp / max(3.0, 0.08 * size_px), 0.0, 1.0)
    mask *= np.minimum(taper[None, :], taper[:, None])
    return mask


def blend_masks(
    convention: CropConvention,
    size_px: int,
    boxes: npt.NDArray[np.int32],
    mouth: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """[N,S,S] float32 blend masks in crop coordinates for crops ``boxes`` of mouths ``mouth``.

    WAV2LIP: a feathered ellipse from cheek to cheek and from just under the nose to the chin,
    around each frame's mouth, kept to the lower half of the crop (what Wav2Lip regenerates).
    MOUTH: the mouth sits at a fixed place in every crop, so one feathered ellipse around the
    mouth and jaw is shared by all frames (a read-only broadcast view, no copies).
    MUSETALK: the lower face below the nose bridge (the crop's middle row), cheek to cheek and
    down to the chin, feathered: upstream's parsed jaw-and-mouth mask without the face parser
    (BiSeNet's weights are for non-commercial use only).
    """
    n = len(boxes)
    s = float(size_px)
    if convention is CropConvention.MUSETALK:
        rows = np.arange(size_px, dtype=np.float32)
        below_bridge = np.clip((rows - 0.5 * s) / (0.10 * s), 0.0, 1.0)[:, None]
        lower_face = feathered_ellipse(size_px, (0.5 * s, 0.62 * s), (0.46 * s, 0.40 * s), 0.35)
        musetalk: npt.NDArray[np.float32] = np.broadcast_to(
            (lower_face * below_bridge).astype(np.float32), (n, size_px, size_px)
        )
        return musetalk
    if convention is CropConvention.MOUTH:
        one = feathered_ellipse(
            size_px, (MOUTH_CENTER_X * s, (MOUTH_CENTER_Y + 0.12) * s), (0.40 * s, 0.32 * s), 0.45
        )
        view: npt.NDArray[np.float32] = np.broadcast_to(one, (n, size_px, size_px))
        return view
    rows = np.arange(size_px, dtype=np.float32)
    half = np.clip((rows - 0.5 * s) / (0.08 * s), 0.0, 1.0)[:, None]
    masks = np.empty((n, size_px, size_px), dtype=np.float32)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        sx, sy = s / max(x1 - x0, 1.0), s / max(y1 - y0, 1.0)
        left, right = mouth[i, 0], mouth[i, 1]
        mw = float(np.hypot(*(right - left))) * sx
        mx = (0.5 * (left[0] + right[0]) - x0) * sx
        my = (0.5 * (left[1] + right[1]) - y0) * sy
        masks[i] = feathered_ellipse(size_px, (mx, my + 0.15 * mw), (1.05 * mw, 0.85 * mw), 0.4)
        masks[i] *= half
    return masks


def compute_crops(
    convention: CropConvention,
    size_px: int,
    frames: npt.NDArray[np.uint8],
    face_boxes: npt.NDArray[np.int32],
    mouth: npt.NDArray[np.float32],
) -> AvatarCrops:
    """Cut every frame's reference crop and blend mask (frames [N,H,W,3] may be a memmap)."""
    if size_px < 8:
        raise ValueError(f"crop size must be at least 8 px, got {size_px}")
    boxes = crop_boxes(convention, face_boxes, mouth)
    faces = np.empty((len(boxes), size_px, size_px, 3), dtype=np.uint8)
    # MuseTalk crops as upstream resizes them; the others as they always were.
    interpolation = cv2.INTER_LANCZOS4 if convention is CropConvention.MUSETALK else None
    for i, box in enumerate(boxes):
        faces[i] = cut_crop(frames[i], box, size_px, interpolation)
    masks = blend_masks(convention, size_px, boxes, mouth)
    for arr in (boxes, faces, masks):
        if arr.flags.writeable:
            arr.flags.writeable = False
    return AvatarCrops(convention, size_px, boxes, faces, masks)
