"""One ONNX Runtime session per lip-sync model per process: :class:`LipSyncEngine`.

The engine loads a Wav2Lip-family model (the built-in one by default), validates its graph,
picks the best execution provider available (TensorRT -> CUDA -> CPU unless told otherwise),
logs which one really loaded, and warms up before the constructor returns, so the first user
never pays for lazy initialisation. Every live session shares it: the frame producer hands it
one batch per 40 ms tick from an executor thread. Synchronous; :meth:`LipSyncEngine.infer` and
:meth:`LipSyncEngine.generate` are thread-safe.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

from streamer.audio.mel import N_MELS, WINDOW_COLUMNS
from streamer.engine.metadata import (
    BUILTIN_MODEL_NAME,
    ModelInfo,
    read_contract,
    view_of_proto,
    view_of_session,
)
from streamer.errors import ModelError
from streamer.resources import builtin_model_path

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_PREFERENCE = (TENSORRT, CUDA, CPU)
_GPU_PROVIDERS = (TENSORRT, CUDA)


class GraphOptimization(enum.Enum):
    """onnxruntime graph optimisation levels, by name."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"

    def to_ort(self) -> ort.GraphOptimizationLevel:
        return {
            GraphOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            GraphOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            GraphOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            GraphOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self]


def _default_threads() -> int:
    # The built-in model needs one core; on the 2-core boxes this project targets the other
    # runs the event loop and the video encoder. Big CPU models (Wav2Lip) want more: raise it.
    return 1 if (os.cpu_count() or 1) <= 2 else 2


@dataclass(frozen=True)
class EngineOptions:
    """How to run a model. ``providers=None`` means TensorRT, CUDA, CPU among those available.

    ``intra_op_threads`` defaults to 1 on machines with 2 cores or fewer and 2 otherwise (spin
    waiting is off, so idle threads give the core back). ``gpu_mem_limit_bytes`` caps the CUDA
    arena (None: no cap). ``trt_cache_dir`` keeps built TensorRT engines across restarts.
    ``warmup_batch_sizes`` are run twice each before the engine is returned. ``fp16`` converts
    the model to float16 at load (GPU speed-up) after checking its accuracy.
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = _default_threads()
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    enable_mem_arena: bool = True
    gpu_mem_limit_bytes: int | None = None
    trt_cache_dir: Path | None = None
    trt_fp16: bool = False
    fp16: bool = False
    warmup_batch_sizes: tuple[int, ...] = (1, 8)

    @classmethod
    def from_flags(cls, providers: str | None, fp16: bool) -> EngineOptions:
        """What the commands' model flags ask for: ``--providers A,B`` (None: the best
        available) and ``--fp16`` (``streamer.resources.add_model_arguments``)."""
        return cls(providers=tuple(providers.split(",")) if providers else None, fp16=fp16)


@functools.cache
def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver's CUDA library loads: without it no GPU provider can run."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def resolve_providers(
    requested: tuple[str, ...] | None, *, nvidia_driver: bool | None = None
) -> list[str]:
    """Providers to try, best first, always ending with CPU; unavailable ones are logged.

    In automatic mode (``requested=None``) the GPU providers are skipped when no NVIDIA driver
    is present (``nvidia_driver=None`` detects it), so a CPU-only machine is not asked to load
    CUDA libraries it lacks (onnxruntime prints a screenful of errors when it tries).
    """
    available = set(ort.get_available_providers())
    wanted = list(requested) if requested is not None else list(PROVIDER_PREFERENCE)
    driver = nvidia_driver_present() if nvidia_driver is None else nvidia_driver
    if requested is None and available & {TENSORRT, CUDA} and not driver:
        log.info("no NVIDIA driver found: skipping TensorRT and CUDA, running on CPU")
        wanted = [CPU]
    chosen: list[str] = []
    for name in wanted:
        if name in available:
            if name not in chosen:
                chosen.append(name)
        elif requested is not None:
            log.warning("execution provider %s is not in this onnxruntime build; skipping it", name)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def _provider_options(name: str, options: EngineOptions) -> dict[str, Any]:
    if name == TENSORRT:
        trt: dict[str, Any] = {"trt_fp16_enable": options.trt_fp16}
        if options.trt_cache_dir is not None:
            options.trt_cache_dir.mkdir(parents=True, exist_ok=True)
            trt["trt_engine_cache_enable"] = True
            trt["trt_engine_cache_path"] = str(options.trt_cache_dir)
        return trt
    if name == CUDA:
        cuda: dict[str, Any] = {"arena_extend_strategy": "kSameAsRequested"}
        if options.gpu_mem_limit_bytes is not None:
            cuda["gpu_mem_limit"] = options.gpu_mem_limit_bytes
        return cuda
    return {}


def session_options(options: EngineOptions) -> ort.SessionOptions:
    """Explicit onnxruntime session options (nothing left to library defaults that matter)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = options.graph_optimization.to_ort()
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = options.enable_mem_arena
    # Spinning threads would steal the core the encoder and event loop need between ticks.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def read_model_bytes(model: Path | None) -> tuple[bytes, str]:
    """The model's serialised graph and its source ("builtin" or the path). The built-in
    model is ``models/builtin.onnx``, or built in memory where that file is missing. Raises
    :class:`ModelError` for a file that cannot be read."""
    if model is None:
        path = builtin_model_path()
        if path.is_file():
            return path.read_bytes(), BUILTIN_MODEL_NAME
        from streamer.engine.builtin import builtin_model_bytes

        return builtin_model_bytes(), BUILTIN_MODEL_NAME
    try:
        return model.read_bytes(), str(model)
    except OSError as exc:
        raise ModelError(f"cannot read model {str(model)!r}: {exc.strerror or exc}") from exc


def parse_model(data: bytes, source: str) -> onnx.ModelProto:
    """``data`` as an ``onnx.ModelProto`` (imports onnx). Raises :class:`ModelError`."""
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{source!r} is not an ONNX model") from exc
    if not proto.graph.node:
        raise ModelError(f"{source!r} is not an ONNX model (no graph)")
    return proto


def load_model_proto(model: Path | None) -> tuple[onnx.ModelProto, str]:
    """The model's graph and its source ("builtin" or the path). Raises :class:`ModelError`."""
    data, source = read_model_bytes(model)
    return parse_model(data, source), source


def face_input(crops: U8) -> F32:
    """Wav2Lip's face input from BGR crops: uint8 ``[B,S,S,3]`` -> float32 ``[B,6,S,S]``.

    Channels 0-2 are the crop with its lower half (rows >= S//2) zeroed, channels 3-5 the crop
    itself (the reference), in [0, 1].
    """
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"crops must be uint8 [B,S,S,3], got {crops.dtype} {crops.shape}")
    batch, s_px = crops.shape[0], crops.shape[1]
    # One pass over the crops into the reference half, one copy of its upper half: 4x faster
    # than converting, scaling and concatenating in turn (16 crops of 128 px: 1.2 ms instead
    # of 4.6-5.8 ms, scripts/profile_render.py), and the same values to the bit.
    out = np.empty((batch, 6, s_px, s_px), np.float32)
    np.multiply(crops.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=out[:, 3:])
    out[:, :3, : s_px // 2] = out[:, 3:, : s_px // 2]
    out[:, :3, s_px // 2 :] = 0.0
    return out


class LipSyncEngine:
    """A loaded, validated, warmed-up lip-sync model; one per model per process.

    ``model=None`` loads the built-in model (``models/builtin.onnx`` if present, else built
    in memory from the same generator). Raises :class:`ModelError` for unreadable, non-ONNX or
    wrong-shaped models. Owns one ``onnxruntime.InferenceSession``; thread-safe.
    """

    def __init__(self, model: Path | None = None, options: EngineOptions = EngineOptions()) -> None:
        self.options = options
        data, source = read_model_bytes(model)
        default_name = BUILTIN_MODEL_NAME if model is None else model.stem
        if options.fp16:
            from streamer.engine.fp16 import convert_checked

            proto = parse_model(data, source)
            contract = read_contract(view_of_proto(proto), default_name)
            proto = convert_checked(proto, contract, providers=resolve_providers(options.providers))
            data = proto.SerializeToString()
        # The contract is read from the loaded session: serving never imports onnx.
        self._session = self._create_session(data, options, source)
        contract = read_contract(view_of_session(self._session), default_name)
        loaded = tuple(self._session.get_providers())
        self.info = ModelInfo(
            name=contract.name,
            source=source,
            face_size_px=contract.face_size_px,
            crop=contract.crop,
            mel_frame_offset=contract.mel_frame_offset,
            mel_input=contract.mel_input,
            face_input=contract.face_input,
            output=contract.output,
            providers=loaded,
        )
        self._lock = threading.Lock()
        self._use_io_binding = loaded[0] == CUDA
        self._device_outputs: dict[int, ort.OrtValue] = {}
        self._warm_up()

    @staticmethod
    def _create_session(data: bytes, options: EngineOptions, source: str) -> ort.InferenceSession:
        wanted = resolve_providers(options.providers)
        providers = [(name, _provider_options(name, options)) for name in wanted]
        try:
            session = ort.InferenceSession(
                data, sess_options=session_options(options), providers=providers
            )
        except InvalidProtobuf as exc:
            raise ModelError(f"{source!r} is not an ONNX model") from exc
        except (
            Exception
        ) as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
            raise ModelError(f"onnxruntime cannot load model {source!r}: {exc}") from exc
        loaded = session.get_providers()
        if loaded[0] != wanted[0]:
            log.warning(
                "model %s: wanted %s but onnxruntime loaded %s; running on %s (slower)",
                source,
                wanted[0],
                loaded,
                loaded[0],
            )
        else:
            log.info("model %s: running on %s", source, loaded[0])
        return session

    def _warm_up(self) -> None:
        s_px = self.info.face_size_px
        for batch in self.options.warmup_batch_sizes:
            mel = np.full((batch, 1, N_MELS, WINDOW_COLUMNS), -4.0, dtype=np.float32)
            face = np.zeros((batch, 6, s_px, s_px), dtype=np.float32)
            for _ in range(2):
                self.infer(mel, face)

    def infer(self, mel: F32, face: F32) -> F32:
        """Run the model: mel f32 ``[B,1,80,16]``, face f32 ``[B,6,S,S]`` -> f32 ``[B,3,S,S]``."""
        s_px = self.info.face_size_px
        batch = mel.shape[0]
        if mel.shape[1:] != (1, N_MELS, WINDOW_COLUMNS) or face.shape != (batch, 6, s_px, s_px):
            raise ValueError(
                f"expected mel [B,1,80,16] and face [B,6,{s_px},{s_px}], "
                f"got {mel.shape} and {face.shape}"
            )
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        face = np.ascontiguousarray(face, dtype=np.float32)
        with self._lock:
            if self._use_io_binding:
                return self._infer_bound(mel, face)
            out = self._session.run(
                [self.info.output], {self.info.mel_input: mel, self.info.face_input: face}
            )[0]
        return np.asarray(out, dtype=np.float32)

    def _infer_bound(self, mel: F32, face: F32) -> F32:
        # Inputs are copied to the device once each; the output lives in a device buffer kept
        # per batch size, so nothing is reallocated tick after tick. Caller holds the lock.
        batch = mel.shape[0]
        s_px = self.info.face_size_px
        out = self._device_outputs.get(batch)
        if out is None:
            out = ort.OrtValue.ortvalue_from_shape_and_type(
                (batch, 3, s_px, s_px), np.float32, "cuda", 0
            )
            self._device_outputs[batch] = out
        binding = self._session.io_binding()
        binding.bind_cpu_input(self.info.mel_input, mel)
        binding.bind_cpu_input(self.info.face_input, face)
        binding.bind_ortvalue_output(self.info.output, out)
        self._session.run_with_iobinding(binding)
        return np.asarray(out.numpy(), dtype=np.float32)

    def generate(self, mel_windows: F32, crops: U8) -> U8:
        """Lip-synced crops: mel f32 ``[B,80,16]`` + BGR uint8 ``[B,S,S,3]`` -> ``[B,S,S,3]``."""
        if mel_windows.ndim != 3 or crops.shape[0] != mel_windows.shape[0]:
            raise ValueError(
                f"expected mel [B,80,16] and crops [B,S,S,3] with one B, got {mel_windows.shape} "
                f"and {crops.shape}"
            )
        pixels = self.infer(mel_windows[:, None, :, :], face_input(crops)) * np.float32(255.0)
        pixels += np.float32(0.5)
        np.clip(pixels, 0.0, 255.0, out=pixels)
        batch, _, h_px, w_px = pixels.shape
        faces = np.empty((batch, h_px, w_px, 3), np.uint8)
        np.copyto(faces, pixels.transpose(0, 2, 3, 1), casting="unsafe")  # truncates, as astype
        return faces
