"""``avatar-streamer doctor``: one screen of what a user needs to know before a call.

Two halves. :func:`gather` looks at this machine (ONNX Runtime, the NVIDIA driver and
libraries, the model and avatar ``serve`` would load, PortAudio's input devices, the token in
the environment) and returns plain :class:`Facts`; it only reads, never prepares or writes.
:func:`diagnose` is pure: it turns facts into :class:`Finding` lines, each with what to do
about it, which is what the tests exercise. Exit status 0 when nothing stops ``serve``, 1 when
something does (a broken install, a missing model, an exposed bind address without a token).

Over 400 lines as one list of checks: each fact is gathered next to the rule that judges it.
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer import __version__
from streamer.resources import (
    DEFAULT_AVATAR,
    Layout,
    Resources,
    add_avatars_dir_argument,
    avatars_dir_and_origin,
    default_avatar_source,
    locate,
)

# onnxruntime's names (streamer.engine.session has them too, but importing it loads onnxruntime,
# and every command's parser imports this module).
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# What onnxruntime-gpu 1.2x-1.3x needs for TensorRT (beyond CUDA): TensorRT 10's runtime.
TENSORRT_LIBRARY = "libnvinfer.so.10"


class Status(enum.Enum):
    OK = "ok"
    NOTE = "note"  # worth knowing, nothing is broken
    PROBLEM = "FIX"  # serve (or the named command) will not work until this is done


@dataclass(frozen=True)
class Finding:
    topic: str
    status: Status
    text: str
    action: str = ""  # what to do about it; empty when nothing


@dataclass(frozen=True)
class AudioInputs:
    """PortAudio's input devices (``"name (default)"``...), or why they cannot be listed."""

    names: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything :func:`diagnose` reads; :func:`gather` fills it in from this machine."""

    version: str
    resources: Resources
    ort_version: str | None  # None: onnxruntime does not import
    ort_distribution: str | None  # "onnxruntime-gpu", "onnxruntime"...
    available_providers: tuple[str, ...]
    nvidia_driver: bool  # libcuda.so.1 loads
    cuda_session_providers: tuple[str, ...] | None  # what a CUDA session loaded; None: not tried
    tensorrt_library: bool  # libnvinfer loads
    model: Path | None  # None: the built-in model
    model_error: str | None
    avatar: str
    avatars_dir: Path
    avatars_origin: str
    avatar_status: str  # "ok", "not prepared" or why loading it would fail
    avatars_writable: bool
    audio: AudioInputs
    host: str
    token_chars: int | None  # length of $AVATAR_STREAMER_TOKEN; None when unset


def _install_findings(f: Facts) -> list[Finding]:
    r = f.resources
    place = r.package_dir.parent if r.layout is Layout.CHECKOUT else r.package_dir
    where = f"{r.layout.value} at {place}"
    missing = r.missing()
    if missing:
        shown = ", ".join(str(p) for p in missing)
        action = (
            "restore them from git (git checkout -- web models avatars)"
            if r.layout is Layout.CHECKOUT
            else "reinstall: pip install --force-reinstall avatar-streamer"
        )
        return [Finding("install", Status.PROBLEM, f"{where}; missing: {shown}", action)]
    return [Finding("install", Status.OK, f"avatar-streamer {f.version}, {where}")]


def _provider_findings(f: Facts) -> list[Finding]:
    if f.ort_version is None:
        return [
            Finding(
                "onnxruntime",
                Status.PROBLEM,
                "ONNX Runtime does not import",
                "reinstall avatar-streamer (it depends on onnxruntime-gpu, or onnxruntime off "
                "Linux x86_64)",
            )
        ]
    loaded = f.cuda_session_providers or ()
    serve_uses = "CPU"
    if CUDA in loaded:
        serve_uses = (
            "TensorRT" if TENSORRT in f.available_providers and f.tensorrt_library else "CUDA"
        )
    found = [
        Finding(
            "providers",
            Status.OK,
            f"ONNX Runtime {f.ort_version} ({f.ort_distribution or 'unknown package'}) has "
            + ", ".join(p.removesuffix("ExecutionProvider") for p in f.available_providers)
            + f"; serve would run the model on {serve_uses}",
        )
    ]
    gpu_build = CUDA in f.available_providers
    if not gpu_build:
        found.append(
            Finding(
                "gpu",
                Status.NOTE,
                "this ONNX Runtime package has no CUDA or TensorRT provider: serve runs on CPU "
                "(the built-in model needs no GPU)",
                "for a GPU: pip uninstall onnxruntime && pip install onnxruntime-gpu "
                "(Linux x86_64)",
            )
        )
    elif not f.nvidia_driver:
        found.append(
            Finding(
                "gpu",
                Status.NOTE,
                "no NVIDIA driver (libcuda.so.1 does not load): CUDA and TensorRT cannot run, "
                "serve runs on CPU (the built-in model needs no GPU)",
                "for a GPU: install the NVIDIA driver (nvidia-smi should list the card)",
            )
        )
    else:
        if CUDA in loaded:
            found.append(Finding("cuda", Status.OK, "CUDA runs (a test session loaded it)"))
        else:
            found.append(
                Finding(
                    "cuda",
                    Status.NOTE,
                    "the NVIDIA driver is present but a CUDA session fell back to CPU: the "
                    "CUDA runtime or cuDNN libraries are missing",
                    "pip install 'avatar-streamer[cuda]' (CUDA and cuDNN as wheels), or install "
                    "the CUDA toolkit and cuDNN versions your onnxruntime-gpu was built for",
                )
            )
        if TENSORRT in f.available_providers and CUDA in loaded and not f.tensorrt_library:
            found.append(
                Finding(
                    "tensorrt",
                    Status.NOTE,
                    f"TensorRT's library ({TENSORRT_LIBRARY}) does not load: serve uses CUDA",
                    "optional: pip install tensorrt-cu13 (or the system TensorRT 10) for "
                    "TensorRT; CUDA is enough for real time",
                )
            )
        elif TENSORRT in f.available_providers and CUDA in loaded:
            found.append(Finding("tensorrt", Status.OK, f"{TENSORRT_LIBRARY} loads"))
    return found


def _model_findings(f: Facts) -> list[Finding]:
    if f.model is None:
        path = f.resources.builtin_model
        if path.is_file():
            return [Finding("model", Status.OK, f"built-in ({path})")]
        return [
            Finding(
                "model",
                Status.NOTE,
                f"built-in, generated at start-up ({path} is missing)",
                "nothing needed; reinstall to ship the file again",
            )
        ]
    if f.model_error is not None:
        return [
            Finding("model", Status.PROBLEM, f.model_error, "pass a readable ONNX file to --model")
        ]
    return [Finding("model", Status.OK, f"{f.model} (ONNX)")]


def _avatar_findings(f: Facts) -> list[Finding]:
    where = f"{f.avatars_dir} ({f.avatars_origin})"
    name = f.avatar
    found: list[Finding] = []
    if f.avatar_status == "ok":
        found.append(Finding("avatar", Status.OK, f"{name}: prepared in {where}"))
    elif f.avatar_status == "not prepared" and name == DEFAULT_AVATAR:
        source = default_avatar_source(f.avatars_dir, f.resources)
        found.append(
            Finding(
                "avatar",
                Status.NOTE if f.avatars_writable else Status.PROBLEM,
                f"{name}: not prepared yet in {where}",
                f"nothing needed: serve prepares it from {source} on first use (a few seconds)"
                if f.avatars_writable
                else f"{f.avatars_dir} is not writable: pass a writable --avatars-dir or set "
                "$AVATAR_STREAMER_AVATARS_DIR",
            )
        )
    elif f.avatar_status == "not prepared":
        found.append(
            Finding(
                "avatar",
                Status.PROBLEM,
                f"{name}: not prepared in {where}",
                f"avatar-streamer prepare PHOTO_OR_VIDEO --name {name}",
            )
        )
    else:
        action = (
            "nothing needed: serve prepares it again on first use"
            if name == DEFAULT_AVATAR
            else f"avatar-streamer prepare SOURCE --name {name} --force"
        )
        found.append(Finding("avatar", Status.NOTE, f"{name}: {f.avatar_status}", action))
    return found


def _audio_findings(f: Facts) -> list[Finding]:
    if f.audio.error is not None:
        return [
            Finding(
                "audio",
                Status.NOTE,
                f"live cannot listen: {f.audio.error}",
                "only `live` needs a microphone; serve takes audio over WebRTC or a channel",
            )
        ]
    if not f.audio.names:
        return [
            Finding(
                "audio",
                Status.NOTE,
                "no audio input devices (PortAudio found none)",
                "only `live` needs one: plug in a microphone, or check that this user may use "
                "the sound card (e.g. the audio group)",
            )
        ]
    return [Finding("audio", Status.OK, "inputs for live: " + "; ".join(f.audio.names))]


def _access_findings(f: Facts) -> list[Finding]:
    from streamer.server.http.access import is_loopback_host
    from streamer.tokens import MIN_TOKEN_CHARS, TOKEN_ENV

    loopback = is_loopback_host(f.host)
    if f.token_chars is not None and f.token_chars < MIN_TOKEN_CHARS:
        return [
            Finding(
                "access",
                Status.PROBLEM,
                f"${TOKEN_ENV} has {f.token_chars} characters: serve refuses it",
                f"use at least {MIN_TOKEN_CHARS}: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'",
            )
        ]
    if f.token_chars is not None:
        return [
            Finding(
                "access",
                Status.OK,
                f"binding {f.host}: control needs the token in ${TOKEN_ENV}",
                "open the pages as http://HOST:PORT/#token=... (see docs/security.md)",
            )
        ]
    if loopback:
        return [
            Finding(
                "access",
                Status.OK,
                f"binding {f.host} (loopback): no token needed; only this machine can connect",
                f"to serve a network: --host 0.0.0.0 with ${TOKEN_ENV} set",
            )
        ]
    return [
        Finding(
            "access",
            Status.PROBLEM,
            f"binding {f.host} without ${TOKEN_ENV}: serve refuses to start",
            f"set ${TOKEN_ENV} (16+ characters), or bind 127.0.0.1",
        )
    ]


def diagnose(f: Facts) -> list[Finding]:
    """The findings, in the order a user would fix them. Pure."""
    return [
        *_install_findings(f),
        *_provider_findings(f),
        *_model_findings(f),
        *_avatar_findings(f),
        *_audio_findings(f),
        *_access_findings(f),
    ]


def render(findings: Sequence[Finding]) -> str:
    """One screen: ``STATUS TOPIC text`` and, indented under it, ``-> action``."""
    lines = []
    for finding in findings:
        lines.append(f"{finding.status.value:<5} {finding.topic:<11} {finding.text}")
        if finding.action:
            lines.append(f"{'':<17} -> {finding.action}")
    return "\n".join(lines)


# ---- gathering facts from this machine (reads only) ----


def _onnxruntime() -> Any | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _distribution(names: Sequence[str]) -> str | None:
    for name in names:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cuda_session_providers(model_bytes: bytes) -> tuple[str, ...]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failed CUDA load is the answer here, not a screenful
    session = ort.InferenceSession(model_bytes, options, providers=[CUDA, CPU])
    return tuple(session.get_providers())


def _model_error(model: Path) -> str | None:
    from streamer.engine.session import load_model_proto
    from streamer.errors import ModelError

    try:
        load_model_proto(model)
    except ModelError as exc:
        return str(exc)
    return None


def _avatar_status(name: str, root: Path) -> str:
    from streamer.avatar.cache import NOT_PREPARED, read_manifest
    from streamer.avatar.errors import AvatarCacheError, AvatarError, AvatarNotFoundError

    try:
        read_manifest(root, name)
    except AvatarNotFoundError:
        return NOT_PREPARED
    except AvatarCacheError as exc:
        return str(exc)
    except AvatarError as exc:
        return str(exc)
    return "ok"


def _writable(path: Path) -> bool:
    """Whether ``path`` could be created or written: the nearest existing ancestor decides."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _audio_inputs() -> AudioInputs:
    from streamer.server.channels.microphone import MicrophoneError, SoundDeviceInputs

    try:
        devices = SoundDeviceInputs().list_inputs()
    except MicrophoneError as exc:
        return AudioInputs(error=str(exc))
    except Exception as exc:  # PortAudio's own errors: the point is to report, not to crash
        return AudioInputs(error=f"{type(exc).__name__}: {exc}")
    return AudioInputs(
        names=tuple(f"{d.index} {d.name}{' (default)' if d.is_default else ''}" for d in devices)
    )


def gather(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Facts:
    """Look at this machine for the ``serve`` that ``args`` describe. Reads only."""
    env = os.environ if environ is None else environ
    resources = locate()
    ort = _onnxruntime()
    available = tuple(ort.get_available_providers()) if ort is not None else ()
    driver = False
    if ort is not None:
        from streamer.engine.session import nvidia_driver_present

        driver = nvidia_driver_present()
    cuda_loaded: tuple[str, ...] | None = None
    if ort is not None and driver and CUDA in available:
        from streamer.engine.builtin import builtin_model_bytes

        path = resources.builtin_model
        cuda_loaded = _cuda_session_providers(
            path.read_bytes() if path.is_file() else builtin_model_bytes()
        )
    root, origin = avatars_dir_and_origin(args.avatars_dir, env, resources)
    from streamer.tokens import TOKEN_ENV

    token = env.get(TOKEN_ENV, "").strip()
    return Facts(
        version=__version__,
        resources=resources,
        ort_version=str(ort.__version__) if ort is not None else None,
        ort_distribution=_distribution(("onnxruntime-gpu", "onnxruntime")),
        available_providers=available,
        nvidia_driver=driver,
        cuda_session_providers=cuda_loaded,
        tensorrt_library=_loads(TENSORRT_LIBRARY),
        model=args.model,
        model_error=_model_error(args.model) if args.model is not None else None,
        avatar=args.avatar,
        avatars_dir=root,
        avatars_origin=origin,
        avatar_status=_avatar_status(args.avatar, root),
        avatars_writable=_writable(root),
        audio=_audio_inputs(),
        host=args.host,
        token_chars=len(token) if token else None,
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check this machine before a call: providers, GPU, model, avatar, audio, access",
        description="One screen of what `serve` and `live` would use here, each line with what "
        "to do about it. Give the options you would give `serve`. Reads only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="the address serve would bind")
    p.add_argument("--avatar", default="default")
    add_avatars_dir_argument(p)
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: built-in)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    findings = diagnose(gather(args))
    print("avatar-streamer doctor: what serve and live would use on this machine\n")
    print(render(findings))
    return 1 if any(f.status is Status.PROBLEM for f in findings) else 0
