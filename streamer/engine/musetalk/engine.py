"""MuseTalk v1.5 on ONNX Runtime: :class:`MuseTalkEngine`, one per model folder per process.

Loads the folder's graphs (checked by their manifest; with ``EngineOptions(fp16=True)`` the
float16 variants the export checked), picks providers as the Wav2Lip engine does, and warms up
before the constructor returns. A frame is audio features -> UNet (with the
avatar frame's cached latents) -> VAE decoder; the VAE encoder runs only when an avatar's
latents are prepared, and is loaded then. Synchronous; every method is thread-safe
(onnxruntime sessions run concurrently).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from streamer.engine.musetalk.features import D_MODEL, WINDOW_TOKENS
from streamer.engine.musetalk.manifest import (
    FACE_SIZE_PX,
    GRAPH_FILES,
    LATENT_CHANNELS,
    LATENT_SIZE,
    Manifest,
    read_manifest,
)
from streamer.engine.session import EngineOptions, resolve_providers, session_options
from streamer.errors import ModelError

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


class MuseTalkEngine:
    """A loaded, warmed MuseTalk model folder. Raises :class:`ModelError` when the folder or a
    graph cannot be loaded."""

    def __init__(self, folder: Path, options: EngineOptions | None = None) -> None:
        self.folder = folder
        self.options = options or EngineOptions()
        self.manifest: Manifest = read_manifest(folder)
        self.name = self.manifest.name
        self._providers = resolve_providers(self.options.providers)
        self._audio_encoder = self._load("audio_encoder")
        self._unet = self._load("unet")
        self._vae_decoder = self._load("vae_decoder")
        self._vae_encoder: ort.InferenceSession | None = None
        self._vae_encoder_lock = threading.Lock()
        self.providers = tuple(self._unet.get_providers())
        log.info("model %s: running on %s", self.name, self.providers[0])
        self._warm_up()

    def _load(self, graph: str) -> ort.InferenceSession:
        # options.fp16: the folder's checked float16 variant where it has one.
        name = self.manifest.fp16_graphs.get(graph) if self.options.fp16 else None
        path = self.folder / (name or GRAPH_FILES[graph])
        try:
            return ort.InferenceSession(
                str(path), sess_options=session_options(self.options), providers=self._providers
            )
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph...)
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc

    def _warm_up(self) -> None:
        # On a CPU a MuseTalk batch of 8 takes seconds to minutes: warm batch 1 only there.
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        for batch in (1,) if on_cpu else self.options.warmup_batch_sizes:
            for _ in range(2):
                self.generate(
                    np.zeros((batch, WINDOW_TOKENS, D_MODEL), np.float32),
                    np.zeros((batch, 2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), np.float32),
                )
        self.encode_audio(np.zeros((1, 80, 100), np.float32), np.zeros(1, np.int64))

    def encode_audio(self, mel: F32, first_position: I64) -> F32:
        """Audio encoder: mel f32 ``[B, 80, 2T]``, first_position i64 ``[B]`` -> states f32
        ``[B, T, 5, 384]``."""
        feeds = {"mel": np.ascontiguousarray(mel, np.float32), "first_position": first_position}
        states: F32 = self._audio_encoder.run(["states"], feeds)[0]
        return states

    def generate(self, audio: F32, latents: F32) -> U8:
        """Faces uint8 BGR ``[B, 256, 256, 3]`` from audio windows f32 ``[B, 50, 384]`` and
        avatar latents f32 ``[B, 8, 32, 32]`` (masked ‖ reference): :meth:`unet` then
        :meth:`decode`."""
        return self.decode(self.unet(audio, latents))

    def unet(self, audio: F32, latents: F32) -> F32:
        """Predicted latents f32 ``[B, 4, 32, 32]`` (the UNet alone)."""
        if audio.shape[1:] != (WINDOW_TOKENS, D_MODEL) or latents.shape[0] != audio.shape[0]:
            raise ValueError(f"bad shapes: audio {audio.shape}, latents {latents.shape}")
        feeds = {
            "latents": np.ascontiguousarray(latents, np.float32),
            "audio": np.ascontiguousarray(audio, np.float32),
        }
        pred: F32 = self._unet.run(["pred_latents"], feeds)[0]
        return pred

    def decode(self, pred_latents: F32) -> U8:
        """Faces uint8 BGR ``[B, 256, 256, 3]`` from predicted latents (the VAE decoder)."""
        faces: U8 = self._vae_decoder.run(["faces_bgr"], {"pred_latents": pred_latents})[0]
        return faces

    def encode_crops(self, crops_bgr: U8) -> F32:
        """Avatar latents f32 ``[B, 8, 32, 32]`` from 256² BGR crops uint8 ``[B, 256, 256, 3]``
        (avatar preparation; loads the VAE encoder on first use)."""
        if crops_bgr.shape[1:] != (FACE_SIZE_PX, FACE_SIZE_PX, 3):
            raise ValueError(f"crops must be [B, {FACE_SIZE_PX}, {FACE_SIZE_PX}, 3]")
        with self._vae_encoder_lock:
            if self._vae_encoder is None:
                self._vae_encoder = self._load("vae_encoder")
            session = self._vae_encoder
        latents: F32 = session.run(["latents"], {"crops_bgr": np.ascontiguousarray(crops_bgr)})[0]
        return latents

    @functools.cached_property
    def latent_key(self) -> str:
        """Identifies the VAE encoder's weights (sha256 of its files): avatars' cached latents
        are valid for this key only."""
        digest = hashlib.sha256()
        base = self.folder / GRAPH_FILES["vae_encoder"]
        for path in (base, base.with_name(base.name + ".data")):
            if path.is_file():
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()

    def frames_per_s(self, batch: int = 1, runs: int = 3, context_s: float = 2.0) -> float:
        """Measured frames per second of a live frame at ``batch``: one audio encoder run over
        ``context_s`` of audio per frame, then :meth:`generate` (after warm-up)."""
        audio = np.zeros((batch, WINDOW_TOKENS, D_MODEL), np.float32)
        latents = np.zeros((batch, 2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), np.float32)
        mel = np.zeros((batch, 80, round(context_s * 100)), np.float32)
        first = np.zeros(batch, np.int64)
        started = time.perf_counter()
        for _ in range(runs):
            self.encode_audio(mel, first)
            self.generate(audio, latents)
        return batch * runs / (time.perf_counter() - started)
