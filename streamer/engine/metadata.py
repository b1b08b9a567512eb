"""What a lip-sync model is, read from its ONNX graph and metadata: :class:`ModelInfo`.

A model is described, not special-cased: the face size and input/output names come from the
graph; optional ``metadata_props`` (keys :data:`META_CROP`, :data:`META_MEL_FRAME_OFFSET`,
:data:`META_NAME`, :data:`META_MEL_INPUT`, :data:`META_FACE_INPUT`) override the Wav2Lip
defaults (crop "wav2lip", mel frame offset 2). A graph that breaks the contract raises
:class:`~streamer.errors.ModelError` with one sentence saying what is wrong.

The contract is read from a :class:`GraphView`: of a loaded onnxruntime session
(:func:`view_of_session`, what the engine uses, so serving and rendering never import the
``onnx`` package: ~0.7 s here) or of an ``onnx.ModelProto`` (:func:`view_of_proto`, for the
float16 conversion and the tools that hold a graph anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

from streamer.audio.mel import N_MELS, WINDOW_COLUMNS
from streamer.crop import CropConvention
from streamer.errors import ModelError

BUILTIN_MODEL_NAME = "builtin"

META_NAME = "avatar_streamer.name"
META_CROP = "avatar_streamer.crop"
META_MEL_FRAME_OFFSET = "avatar_streamer.mel_frame_offset"
META_MEL_INPUT = "avatar_streamer.mel_input"
META_FACE_INPUT = "avatar_streamer.face_input"

WAV2LIP_MEL_FRAME_OFFSET = 2  # training alignment: the window starts 2 video frames early


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model's contract. ``providers`` is what onnxruntime really loaded, in order."""

    name: str
    source: str  # a path, or "builtin"
    face_size_px: int
    crop: CropConvention
    mel_frame_offset: int
    mel_input: str
    face_input: str
    output: str
    providers: tuple[str, ...]


@dataclass(frozen=True)
class GraphContract:
    """The part of :class:`ModelInfo` read from the graph alone (before a session exists)."""

    name: str
    face_size_px: int
    crop: CropConvention
    mel_frame_offset: int
    mel_input: str
    face_input: str
    output: str


@dataclass(frozen=True)
class TensorView:
    """A graph input or output as the contract reads it: static dims as ints, symbolic or
    unknown ones as their name (or "?")."""

    name: str
    dims: list[int | str]
    float32: bool


@dataclass(frozen=True)
class GraphView:
    """What the contract reads of a graph: its inputs (initializers excluded), its outputs, its
    ``metadata_props``."""

    inputs: list[TensorView]
    outputs: list[TensorView]
    props: dict[str, str] = field(default_factory=dict)


def view_of_proto(model: onnx.ModelProto) -> GraphView:
    import onnx

    def tensor(value: onnx.ValueInfoProto) -> TensorView:
        shape = value.type.tensor_type.shape
        dims: list[int | str] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim
        ]
        return TensorView(
            value.name, dims, value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        )

    initializers = {t.name for t in model.graph.initializer}
    return GraphView(
        inputs=[tensor(v) for v in model.graph.input if v.name not in initializers],
        outputs=[tensor(v) for v in model.graph.output],
        props={p.key: p.value for p in model.metadata_props},
    )


def view_of_session(session: Any) -> GraphView:
    """The view of an ``onnxruntime.InferenceSession`` (its inputs exclude initializers)."""

    def tensor(arg: Any) -> TensorView:
        dims: list[int | str] = [d if isinstance(d, int) else (d or "?") for d in arg.shape]
        return TensorView(arg.name, dims, arg.type == "tensor(float)")

    meta = session.get_modelmeta()
    return GraphView(
        inputs=[tensor(a) for a in session.get_inputs()],
        outputs=[tensor(a) for a in session.get_outputs()],
        props=dict(meta.custom_metadata_map),
    )


def _looks_like_mel(dims: list[int | str]) -> bool:
    return len(dims) == 4 and dims[1:] == [1, N_MELS, WINDOW_COLUMNS]


def _looks_like_face(dims: list[int | str]) -> bool:
    return len(dims) == 4 and dims[1] == 6 and isinstance(dims[2], int) and dims[2] == dims[3]


def read_contract(graph: GraphView, default_name: str) -> GraphContract:
    """Validate ``graph`` against the Wav2Lip I/O contract and read its conventions.

    Raises :class:`ModelError` (code ``bad_model``) when the graph does not fit.
    """
    props = graph.props
    inputs = {v.name: v for v in graph.inputs}
    if len(inputs) != 2:
        raise ModelError(
            f"model {default_name!r} must have 2 inputs (mel [B,1,80,16] and face [B,6,S,S]), "
            f"it has {len(inputs)}: {sorted(inputs)}"
        )

    def pick(key: str, test: Callable[[list[int | str]], bool], what: str) -> str:
        if key in props:
            name = str(props[key])
            if name not in inputs:
                raise ModelError(
                    f"model {default_name!r} metadata names input {name!r}, which the graph lacks"
                )
            return name
        matches = [n for n, v in inputs.items() if test(v.dims)]
        if len(matches) != 1:
            shapes = {n: v.dims for n, v in inputs.items()}
            raise ModelError(f"model {default_name!r} has no {what} input; its inputs are {shapes}")
        return str(matches[0])

    mel_input = pick(META_MEL_INPUT, _looks_like_mel, "mel [B,1,80,16]")
    face_input = pick(META_FACE_INPUT, _looks_like_face, "face [B,6,S,S] (square, static S)")
    mel_dims, face_dims = inputs[mel_input].dims, inputs[face_input].dims
    if not _looks_like_mel(mel_dims):
        raise ModelError(
            f"model {default_name!r} input {mel_input!r} is {mel_dims}, not [B,1,80,16]"
        )
    if not _looks_like_face(face_dims):
        raise ModelError(
            f"model {default_name!r} input {face_input!r} is {face_dims}, not [B,6,S,S]"
        )
    for name in (mel_input, face_input):
        if not inputs[name].float32:
            raise ModelError(f"model {default_name!r} input {name!r} must be float32")
    face_size_px = int(face_dims[2])

    if not graph.outputs:
        raise ModelError(f"model {default_name!r} has no output")
    output = graph.outputs[0]
    out_dims = output.dims
    if len(out_dims) != 4 or out_dims[1] != 3:
        raise ModelError(
            f"model {default_name!r} output {output.name!r} is {out_dims}, not [B,3,S,S]"
        )
    for d in out_dims[2:]:
        if isinstance(d, int) and d != face_size_px:
            raise ModelError(
                f"model {default_name!r} output {output.name!r} is {out_dims}, "
                f"but its face input is {face_size_px}x{face_size_px}"
            )

    crop_value = props.get(META_CROP, CropConvention.WAV2LIP.value)
    try:
        crop = CropConvention(crop_value)
    except ValueError:
        known = [c.value for c in CropConvention]
        raise ModelError(
            f"model {default_name!r} declares crop {crop_value!r}; known crops are {known}"
        ) from None
    offset_text = props.get(META_MEL_FRAME_OFFSET, str(WAV2LIP_MEL_FRAME_OFFSET))
    try:
        mel_frame_offset = int(offset_text)
    except ValueError:
        raise ModelError(
            f"model {default_name!r} declares mel_frame_offset {offset_text!r}, not an integer"
        ) from None

    return GraphContract(
        name=props.get(META_NAME, default_name),
        face_size_px=face_size_px,
        crop=crop,
        mel_frame_offset=mel_frame_offset,
        mel_input=mel_input,
        face_input=face_input,
        output=output.name,
    )
