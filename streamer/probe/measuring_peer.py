"""A soak client peer: a real aiortc call that measures what it receives as it arrives.

It sends the clip in a loop (real time, 20 ms packets) like :class:`LoopbackPeer` and keeps
only numbers per received frame and packet: arrival time, pts, mouth activity (how far the
mouth region is from the avatar at rest), audio RMS and energy per 1 ms. Hours of video cost
megabytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from streamer.errors import StreamerError
from streamer.probe.analysis import PeerRecord
from streamer.probe.clip import SoakClip
from streamer.probe.impairment import Impairment
from streamer.probe.peer import FRAME_SAMPLES, RATE_HZ, LoopbackPeer
from streamer.probe.speech_back import SUB_SAMPLES, sub_block_energy

U8 = npt.NDArray[np.uint8]


class MouthMeter:
    """Mouth activity of a BGR frame: mean absolute difference, in the mouth box, from the
    closest of the avatar's own frames. About 2 at rest (codec noise), 5-10 when open.

    Every fourth pixel each way is enough for a mean and keeps it to ~0.4 ms a frame: the
    soak client shares the machine with the server it measures."""

    STEP = 4

    def __init__(self, rest_frames: U8, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        k = self.STEP
        self._box = box
        self._rest = np.asarray(rest_frames[:, y0:y1:k, x0:x1:k], np.float32)

    def __call__(self, image: U8) -> float:
        x0, y0, x1, y1 = self._box
        k = self.STEP
        patch = image[y0:y1:k, x0:x1:k].astype(np.float32)[None]
        return float(np.abs(self._rest - patch).mean(axis=(1, 2, 3)).min())


class NoMouthMeter(MouthMeter):
    """For light client peers (:mod:`streamer.probe.light_receiver`), whose frames are blank
    stand-ins: no mouth to read (NaN)."""

    def __init__(self) -> None:
        pass

    def __call__(self, image: U8) -> float:
        return math.nan


def mouth_meter(health: dict[str, Any], avatar: str, avatars_dir: Path) -> MouthMeter:
    """A meter for the avatar the server renders: its mouth box (from the model ``health``
    reports) and its rest frames, from a local cache in ``avatars_dir``. Raises
    :class:`StreamerError` when that cache is missing."""
    from streamer.avatar import AvatarError, open_avatar
    from streamer.crop import CropConvention

    model = health.get("model") or {}
    try:
        loaded = open_avatar(avatar, avatars_dir)
    except AvatarError as exc:
        raise StreamerError(
            f"the mouth is measured against the avatar's own frames, which need its cache here: "
            f"{exc}"
        ) from exc
    crops = loaded.crops(CropConvention(model["crop"]), int(model["face_size_px"]))
    box = crops.boxes.mean(axis=0)
    h, w = loaded.frames.shape[1:3]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(box[2])), min(h, int(box[3]))
    return MouthMeter(np.asarray(loaded.frames), (x0, y0, x1, y1))


class SoakPeer(LoopbackPeer):
    """One looping, measuring client call. ``connect``/``aclose`` as :class:`LoopbackPeer`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        clip: SoakClip,
        meter: MouthMeter,
        avatar: str,
        impairment: Impairment | None = None,
    ) -> None:
        super().__init__(
            base_url, clip.pcm, loop=True, keep_frames=False, avatar=avatar, impairment=impairment
        )
        self.clip = clip
        self.meter = meter
        self.record = PeerRecord(name=name, answered_at_s=0.0)

    def onsets_sent_at_s(self) -> list[float]:
        """Send times of every speech onset played so far (the clip loops on packet bounds)."""
        sent = self.track.sent_at_s
        period = self.clip.pcm.shape[0] // FRAME_SAMPLES
        out = []
        for loop_start in range(0, len(sent), period):
            for onset in self.clip.onset_samples:
                k = loop_start + onset // FRAME_SAMPLES
                if k < len(sent):
                    out.append(sent[k] + (onset % FRAME_SAMPLES) / RATE_HZ)
        return sorted(out)

    def on_video(self, frame: av.VideoFrame, at_s: float) -> None:
        rec = self.record
        rec.video_at_s.append(at_s)
        rec.video_pts.append(int(frame.pts or 0))
        rec.mouth.append(self.meter(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)))

    def on_audio(self, frame: av.AudioFrame, at_s: float) -> None:
        pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        rec = self.record
        rec.audio_at_s.append(at_s)
        rec.audio_rms.append(float(np.sqrt(np.mean((pcm.astype(np.float64) / 32768) ** 2))))
        pts = int(frame.pts or 0)
        energy = sub_block_energy(pcm)
        rec.audio_pts.append(pts)
        rec.audio_sub_pos.extend(range(pts, pts + energy.shape[0] * SUB_SAMPLES, SUB_SAMPLES))
        rec.audio_sub_energy.extend(energy.tolist())

    def finish(self) -> PeerRecord:
        self.record.answered_at_s = self.answered_at_s or 0.0
        self.record.onsets_sent_at_s = self.onsets_sent_at_s()
        self.record.sent_at_s = list(self.track.sent_at_s)
        self.record.clip_speech = self.clip.speech
        return self.record
