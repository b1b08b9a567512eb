"""Render the built-in model across a spoken sentence: docs/images/builtin-model.png.

The avatar is the public-domain astronaut portrait (skimage.data.astronaut); the speech comes
from espeak-ng. The mouth is found with OpenCV's Haar cascades (face, then smile inside its
lower half; the lip line is the darkest row in the lower part of the smile box), a MOUTH crop
is cut (streamer.crop), the engine runs on real MelExtractor windows, and the change the model
made is pasted back with a feathered elliptical mask. Top: frames at real size; bottom: the
mouth of some of them enlarged 3x.

Usage: python scripts/builtin_contact_sheet.py [--text "..."] [-o docs/images/builtin-model.png]
Needs espeak-ng, opencv-python-headless (<5) and scikit-image.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.audio.mel import SAMPLE_RATE_HZ, MelExtractor
from streamer.crop import MOUTH_CENTER_X, MOUTH_CENTER_Y, MOUTH_WIDTH
from streamer.engine import EngineOptions, LipSyncEngine

FPS = 25
DEFAULT_TEXT = "Hello there, how are you doing today? I am a talking avatar, made of code."


def locate_mouth(bgr: np.ndarray) -> tuple[float, float, float]:
    """Mouth centre x, lip-line y and mouth width in pixels."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cascades = Path(cv2.data.haarcascades)
    faces = cv2.CascadeClassifier(str(cascades / "haarcascade_frontalface_default.xml"))
    x, y, w, h = max(faces.detectMultiScale(gray, 1.1, 5), key=lambda r: int(r[2] * r[3]))
    top, bottom = y + h // 2, min(gray.shape[0], y + h + h // 5)
    smiles = cv2.CascadeClassifier(str(cascades / "haarcascade_smile.xml"))
    found = smiles.detectMultiScale(gray[top:bottom, x : x + w], 1.1, 10)
    sx, sy, sw, sh = max(found, key=lambda r: int(r[2] * r[3]))
    sx, sy = sx + x, sy + top
    # The lip line: darkest row of the middle third, in the lower two thirds of the smile box
    # (the upper third holds the shadow under the nose).
    band = gray[sy : sy + sh, sx + sw // 3 : sx + 2 * sw // 3].astype(np.float32).mean(axis=1)
    band = np.convolve(band, np.ones(3) / 3, mode="same")
    first = sh // 3
    lip_y = sy + first + int(np.argmin(band[first:-1]))
    # The smile box is wider than the mouth; 0.62 of it matches the corners on portraits.
    return sx + sw / 2.0, float(lip_y) + 1.0, 0.62 * sw


def speech(text: str) -> np.ndarray:
    """16 kHz mono float32 speech from espeak-ng, peak 0.5."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
        chunks = []
        with av.open(str(wav)) as container:
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    pcm = np.concatenate(chunks).astype(np.float32)
    return 0.5 * pcm / np.abs(pcm).max()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/builtin-model.png"))
    args = parser.parse_args()

    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut()[..., ::-1])  # BGR
    cx, cy, mouth_w = locate_mouth(image)
    engine = LipSyncEngine(options=EngineOptions(warmup_batch_sizes=(1,)))
    s_px = engine.info.face_size_px
    side = mouth_w / MOUTH_WIDTH
    x0, y0 = cx - MOUTH_CENTER_X * side, cy - MOUTH_CENTER_Y * side
    to_crop = np.array([[s_px / side, 0, -x0 * s_px / side], [0, s_px / side, -y0 * s_px / side]])
    crop = cv2.warpAffine(image, to_crop, (s_px, s_px), flags=cv2.INTER_AREA)

    pcm = speech(args.text)
    mel = MelExtractor(fps=FPS, frame_offset=engine.info.mel_frame_offset)
    mel.push(np.concatenate((pcm, np.zeros(SAMPLE_RATE_HZ // 2, np.float32))))
    windows = np.stack([w for i in range(mel.frames_ready()) if (w := mel.window(i)) is not None])
    out = engine.generate(windows, np.repeat(crop[None], len(windows), axis=0))

    # Paste back only what the model changed, through a feathered ellipse around mouth and jaw.
    height, width = image.shape[:2]
    to_image = cv2.invertAffineTransform(to_crop)
    mask = np.zeros((height, width), np.float32)
    centre = (round(cx), round(y0 + 0.6 * side))
    cv2.ellipse(mask, centre, (round(0.45 * side), round(0.42 * side)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.08 * side)[..., None]

    def composite(i: int) -> np.ndarray:
        delta = out[i].astype(np.float32) - crop.astype(np.float32)
        back = cv2.warpAffine(delta, to_image, (width, height), flags=cv2.INTER_LINEAR)
        return np.clip(image + mask * back, 0, 255).astype(np.uint8)

    opening = np.abs(out.astype(np.float32) - crop.astype(np.float32)).mean(axis=(1, 2, 3))
    speaking = np.nonzero(opening > 0.5)[0]
    first, last = int(speaking[0]) - 2, int(speaking[-1]) + 3
    picks = np.linspace(first, last, 24).round().astype(int)

    half = 64  # real-size tiles: 128x128 around the mouth
    tiles = []
    for i in picks:
        tile = composite(i)[
            round(cy) - half - 10 : round(cy) + half - 10, round(cx) - half : round(cx) + half
        ]
        tile = tile.copy()
        cv2.putText(
            tile, f"{i / FPS:.2f}s", (3, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1
        )
        tiles.append(tile)
    rows = [np.concatenate(tiles[k : k + 8], axis=1) for k in range(0, 24, 8)]

    zoom_picks = picks[np.argsort(-opening[picks], kind="stable")[:8]]
    zoom_picks.sort()
    zooms = []
    for i in zoom_picks:
        part = composite(i)[round(cy) - 22 : round(cy) + 26, round(cx) - 32 : round(cx) + 32]
        zooms.append(cv2.resize(part, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    zoom_row = np.concatenate(zooms, axis=1)
    pad = np.zeros((zoom_row.shape[0], rows[0].shape[1] - zoom_row.shape[1], 3), np.uint8)
    zoom_row = (
        np.concatenate((zoom_row, pad), axis=1)
        if pad.shape[1] > 0
        else zoom_row[:, : rows[0].shape[1]]
    )
    sheet = np.concatenate((*rows, zoom_row), axis=0)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(
        f"wrote {args.output}: {len(windows)} frames, "
        f"mouth at ({cx:.0f}, {cy:.0f}), {mouth_w:.0f} px wide"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
