"""The lip-sync engine: one shared onnxruntime session per Wav2Lip-family model.

Pure and synchronous (no asyncio): the real-time layer calls :meth:`LipSyncEngine.infer` or
:meth:`LipSyncEngine.generate` from an executor thread, one batch per 40 ms tick.
"""

from streamer.engine.metadata import ModelInfo
from streamer.engine.session import (
    EngineOptions,
    GraphOptimization,
    LipSyncEngine,
    face_input,
    resolve_providers,
)

__all__ = [
    "EngineOptions",
    "GraphOptimization",
    "LipSyncEngine",
    "ModelInfo",
    "face_input",
    "resolve_providers",
]
