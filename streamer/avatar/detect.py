"""Face boxes and mouth landmarks in still BGR images, with no downloads.

Two locators share one small interface (:class:`FaceLocator`):

* :class:`HaarLocator` (default, core dependencies only): OpenCV's frontal-face Haar cascade for
  the box; the mouth from geometry priors, the smile cascade, and a lip map (redness + darkness)
  that gives the corners and the lip extent.
* :class:`MediapipeLocator` (optional, ``pip install mediapipe==0.10.21``): face mesh landmarks,
  more precise; chosen by :func:`default_locator` whenever mediapipe imports.

Conventions: boxes are ``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive. Points use pixel-centre
coordinates (pixel (i, j) is the point x=j, y=i, as in cv2.warpAffine). Mouth landmarks are a
float32 ``[4, 2]`` array of (x, y) pixels: left corner, right corner (left/right as seen in the
image), upper lip centre (top edge of the upper lip), lower lip centre (bottom edge of the lower
lip); face mesh points 61, 291, 0, 17. Pure and synchronous; not thread-safe (cv2 classifiers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# Faces smaller than this (box side, px) carry too little detail for a lip-sync crop.
MIN_FACE_PX = 64

# Mouth geometry priors, as fractions of a Haar face box (measured on the astronaut portrait:
# corner midpoint at 0.80 of the box height, mouth 0.42 of its width).
MOUTH_PRIOR_Y = 0.80
MOUTH_PRIOR_WIDTH = 0.42

# A detection with fewer neighbour votes than this fraction of the best one is a false positive.
FALSE_POSITIVE_VOTE_RATIO = 0.4

MouthPoints = npt.NDArray[np.float32]  # [4, 2] (x, y) px: left, right, upper, lower
LEFT, RIGHT, UPPER, LOWER = 0, 1, 2, 3


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels; ``x1``/``y1`` exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width_px(self) -> float:
        return self.x1 - self.x0

    @property
    def height_px(self) -> float:
        return self.y1 - self.y0

    @property
    def area_px2(self) -> float:
        return self.width_px * self.height_px

    def as_array(self) -> npt.NDArray[np.float64]:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    def iou(self, other: FaceBox) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area_px2 + other.area_px2 - inter
        return inter / union if union > 0 else 0.0


class FaceLocator(Protocol):
    """Finds faces and the mouth inside one of them. Sync; may hold native state."""

    name: str

    def faces(self, bgr: npt.NDArray[np.uint8], near: FaceBox | None = None) -> list[FaceBox]:
        """Faces in ``bgr`` [H,W,3], largest first. With ``near``, may search only around it."""
        ...

    def mouth(self, bgr: npt.NDArray[np.uint8], face: FaceBox) -> MouthPoints:
        """Mouth landmarks [4,2] float32 of the face in ``face``."""
        ...


def _gray(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


class HaarLocator:
    """Haar cascades shipped with opencv-python(-headless) 4.x plus a lip-colour refinement."""

    name = "haar"

    def __init__(self) -> None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if data is None or not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(
                "this OpenCV has no Haar cascades (OpenCV 5 dropped them): "
                "install opencv-python-headless<5"
            )
        self._face = cv2.CascadeClassifier(data + "haarcascade_frontalface_default.xml")
        self._smile = cv2.CascadeClassifier(data + "haarcascade_smile.xml")
        if self._face.empty() or self._smile.empty():
            raise RuntimeError(f"could not load the Haar cascades from {data}")

    def faces(self, bgr: npt.NDArray[np.uint8], near: FaceBox | None = None) -> list[FaceBox]:
        gray = _gray(bgr)
        ox, oy = 0, 0
        if near is not None:
            # Tracking: search a window 1.5 face sizes around the last box (3-5x faster).
            m = 0.5 * max(near.width_px, near.height_px)
            h, w = gray.shape
            ox, oy = max(0, int(near.x0 - m)), max(0, int(near.y0 - m))
            gray = gray[oy : min(h, int(near.y1 + m)), ox : min(w, int(near.x1 + m))]
        found: Any
        votes: Any
        found, votes = self._face.detectMultiScale2(gray, 1.1, 5, minSize=(24, 24))
        rects = np.asarray(found).reshape(-1, 4)
        counts = np.asarray(votes, dtype=np.float64).reshape(-1)
        # Real faces gather 30-40 neighbouring hits at scale 1.1; false positives (a collar, a
        # reflected border) gather 5-8. Drop those far weaker than the strongest detection.
        keep = counts >= FALSE_POSITIVE_VOTE_RATIO * counts.max() if len(counts) else counts > 0
        boxes = [
            FaceBox(float(x + ox), float(y + oy), float(x + ox + w), float(y + oy + h))
            for x, y, w, h in rects[keep]
        ]
        return sorted(boxes, key=lambda b: -b.area_px2)

    def mouth(self, bgr: npt.NDArray[np.uint8], face: FaceBox) -> MouthPoints:
        w, h = face.width_px, face.height_px
        cx, cy = face.x0 + 0.5 * w, face.y0 + MOUTH_PRIOR_Y * h
        cy = self._smile_centre_y(bgr, face, cx, cy)
        refined = _lip_map_mouth(bgr, face, cx, cy)
        if refined is not None:
            return refined
        logger.debug("lip map found no mouth in %s; using the geometry prior", face)
        half = 0.5 * MOUTH_PRIOR_WIDTH * w
        return np.array(
            [[cx - half, cy], [cx + half, cy], [cx, cy - 0.06 * h], [cx, cy + 0.10 * h]],
            dtype=np.float32,
        )

    def _smile_centre_y(
        self, bgr: npt.NDArray[np.uint8], face: FaceBox, cx: float, cy: float
    ) -> float:
        """The prior's centre row, moved halfway to a plausible smile-cascade detection."""
        w, h = face.width_px, face.height_px
        img_h, img_w = bgr.shape[:2]
        x0, y0 = max(0, int(face.x0)), max(0, int(face.y0 + 0.5 * h))
        x1, y1 = min(img_w, int(face.x1)), min(img_h, int(face.y1 + 0.2 * h))
        if x1 - x0 < 16 or y1 - y0 < 8:
            return cy
        found: Any = self._smile.detectMultiScale(
            _gray(bgr[y0:y1, x0:x1]), 1.1, 10, minSize=(max(8, int(w / 5)), max(4, int(h / 10)))
        )
        best: float | None = None
        for sx, sy, sw, sh in np.asarray(found).reshape(-1, 4):
            mx, my = x0 + sx + 0.5 * sw, y0 + sy + 0.5 * sh
            if (
                abs(mx - cx) < 0.15 * w
                and abs(my - cy) < 0.12 * h
                and (best is None or abs(my - cy) < abs(best - cy))
            ):
                best = float(my)
        return cy if best is None else 0.5 * (cy + best)


def _lip_map_mouth(
    bgr: npt.NDArray[np.uint8], face: FaceBox, cx: float, cy: float
) -> MouthPoints | None:
    """Corners and lip centres refined around the estimated mouth centre, or None.

    Corners: the darkest point (blurred Lab L, lightly biased towards the prior) near each
    prior corner, since the lips meet in a shadow there. Lip centres: on the corners' midline,
    the outer ends of the red run (Lab a* above the skin's) above and below the lip line.
    Returns None when the result is implausible (then the caller keeps the prior).
    """
    w, h = face.width_px, face.height_px
    img_h, img_w = bgr.shape[:2]
    rx0, rx1 = max(0, int(cx - 0.36 * w)), min(img_w, int(cx + 0.36 * w) + 1)
    ry0, ry1 = max(0, int(cy - 0.10 * h)), min(img_h, int(cy + 0.18 * h) + 1)
    if rx1 - rx0 < 16 or ry1 - ry0 < 8:
        return None
    lab = cv2.cvtColor(bgr[ry0:ry1, rx0:rx1], cv2.COLOR_BGR2LAB).astype(np.float32)
    sigma = max(0.6, 0.01 * w)
    light = cv2.GaussianBlur(lab[..., 0], (0, 0), sigma)
    red = cv2.GaussianBlur(lab[..., 1], (0, 0), sigma)
    yy, xx = np.mgrid[ry0:ry1, rx0:rx1].astype(np.float32)
    half = 0.5 * MOUTH_PRIOR_WIDTH * w
    corners = []
    for px in (cx - half, cx + half):
        # Darkness minus a gentle quadratic pull towards the prior corner (~10 L units at
        # 0.1 face widths), searched within 0.12 widths / 0.06 heights of it.
        dist2 = ((xx - px) / (0.1 * w)) ** 2 + ((yy - cy) / (0.06 * h)) ** 2
        cost = light + 10.0 * dist2
        cost[(np.abs(xx - px) > 0.12 * w) | (np.abs(yy - cy) > 0.06 * h)] = np.inf
        iy, ix = np.unravel_index(int(np.argmin(cost)), cost.shape)
        corners.append((float(xx[iy, ix]), float(yy[iy, ix])))
    (lx, ly), (rx, ry) = corners
    if not 0.25 * w <= rx - lx <= 0.65 * w:
        return None
    mid_x, mid_y = 0.5 * (lx + rx), 0.5 * (ly + ry)
    band = (np.abs(xx[0] - mid_x) <= max(1.0, 0.04 * w)).nonzero()[0]
    skin_a = float(np.median(red))
    profile = red[:, band].mean(axis=1) - skin_a  # redness per row on the midline
    rows = yy[:, 0]
    lipred = profile > max(2.0, 0.35 * float(profile.max()))
    # Contiguous red runs on the midline: the upper lip is the run nearest the corners' line
    # (smiling lips curve below it, so it may start there), the lower lip the last run below.
    edges = np.diff(np.concatenate([[0], lipred.astype(np.int8), [0]]))
    runs = list(zip((edges == 1).nonzero()[0], (edges == -1).nonzero()[0] - 1, strict=True))
    upper = [r for r in runs if mid_y - 0.08 * h <= rows[r[1]] and rows[r[0]] <= mid_y + 0.04 * h]
    lower = [r for r in runs if mid_y - 0.02 * h <= rows[r[1]] <= mid_y + 0.16 * h]
    if upper:
        run = min(upper, key=lambda r: min(abs(rows[r[0]] - mid_y), abs(rows[r[1]] - mid_y)))
        top = float(rows[run[0]])
    else:
        top = mid_y - 0.04 * h
    bottom = float(rows[lower[-1][1]]) if lower else mid_y + 0.10 * h
    return np.array([[lx, ly], [rx, ry], [mid_x, top], [mid_x, bottom]], dtype=np.float32)


# Face mesh indices (see docs): outer lip corners and outer lip centres.
_MESH_MOUTH = (61, 291, 0, 17)


class MediapipeLocator:
    """Face mesh landmarks from mediapipe 0.10.x (optional extra; runs offline)."""

    name = "mediapipe"

    def __init__(self) -> None:
        import mediapipe as mp  # optional dependency: imported only when chosen

        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=4, refine_landmarks=False
        )
        self._points: dict[FaceBox, npt.NDArray[np.float32]] = {}

    def faces(self, bgr: npt.NDArray[np.uint8], near: FaceBox | None = None) -> list[FaceBox]:
        h, w = bgr.shape[:2]
        result: Any = self._mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self._points = {}
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h) for p in face.landmark], dtype=np.float32)
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            # Mesh extent runs from the brow to the chin; Haar-like boxes start mid-forehead.
            box = FaceBox(float(x0), float(y0), float(x1), float(y1))
            self._points[box] = pts
        return sorted(self._points, key=lambda b: -b.area_px2)

    def mouth(self, bgr: npt.NDArray[np.uint8], face: FaceBox) -> MouthPoints:
        pts = self._points.get(face)
        if pts is None:
            found = self.faces(bgr)
            if not found:
                return HaarLocator().mouth(bgr, face)
            pts = self._points[max(found, key=face.iou)]
        return np.ascontiguousarray(pts[list(_MESH_MOUTH)], dtype=np.float32)


def default_locator(kind: str = "auto") -> FaceLocator:
    """``"auto"``: mediapipe face mesh when importable, else Haar; or force ``"haar"``."""
    if kind in ("auto", "mediapipe"):
        try:
            return MediapipeLocator()
        except (ImportError, AttributeError) as exc:
            if kind == "mediapipe":
                raise
            logger.debug("mediapipe face mesh unavailable (%s); using Haar cascades", exc)
    return HaarLocator()
