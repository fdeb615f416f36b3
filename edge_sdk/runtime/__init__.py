"""Inference engines behind one Protocol, chosen through an explicit registry.

Each engine lives in its own module and is imported only when a model needs
it, so ``import edge_sdk`` never loads LiteRT, ONNX Runtime or TFLite Micro.
"""

from __future__ import annotations

import importlib

from edge_sdk.errors import EngineError
from edge_sdk.runtime.base import Engine, EngineConfig, TensorInfo, default_cache_dir

# engine name (as in profiles and manifests) -> (module, class)
ENGINES: dict[str, tuple[str, str]] = {
    "litert": ("edge_sdk.runtime.litert", "LiteRTEngine"),
    "onnxruntime": ("edge_sdk.runtime.ort", "OnnxRuntimeEngine"),
    "tflite-micro": ("edge_sdk.runtime.tflm", "TFLiteMicroEngine"),
}


def create_engine(name: str, model: bytes, config: EngineConfig) -> Engine:
    """Load ``model`` (the model file's bytes) into the engine called ``name``."""
    try:
        module_name, class_name = ENGINES[name]
    except KeyError:
        raise EngineError(name, f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}") from None
    engine_cls = getattr(importlib.import_module(module_name), class_name)
    return engine_cls(model, config)


__all__ = ["ENGINES", "Engine", "EngineConfig", "TensorInfo", "create_engine", "default_cache_dir"]
