"""Load a user's model from whatever they have: a Keras model (object, .keras, .h5), a SavedModel, ONNX or TFLite."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from converters.base import ConversionError, SourceModel

SUFFIXES = {".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".onnx": "onnx", ".tflite": "tflite"}


def source_kind(model: Any) -> str:
    """Which loader a model argument needs, or a :class:`ConversionError` saying what is accepted."""
    if isinstance(model, SourceModel):
        return model.kind
    if not isinstance(model, (str, os.PathLike)):
        if hasattr(model, "layers") and hasattr(model, "inputs"):
            return "keras"
        if type(model).__name__ == "ModelProto":
            return "onnx"
        raise ConversionError(repr(type(model).__name__), "expected a model file path, a Keras model or an onnx.ModelProto")
    path = Path(model)
    if not path.exists():
        raise ConversionError(str(path), "model file not found")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ConversionError(str(path), "a directory must be a TensorFlow SavedModel (it has no saved_model.pb)")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConversionError(
            str(path), f"unsupported model format {path.suffix!r}; expected .keras, .h5, .onnx, .tflite or a SavedModel dir"
        )
    return kind


# source kind -> (module, loader, whether it takes input_shape: a .tflite has its shapes baked in).
LOADERS: dict[str, tuple[str, str, bool]] = {
    "keras": ("converters.tf_models", "load_keras", True),
    "saved_model": ("converters.tf_models", "load_saved_model", True),
    "tflite": ("converters.tf_models", "load_tflite", False),
    "onnx": ("converters.onnx_models", "load_onnx", True),
}


def load_source(model: Any, input_shape: tuple[int, ...] | None = None) -> SourceModel:
    """The :class:`SourceModel` for ``model``, with dynamic input dimensions pinned by ``input_shape``."""
    if isinstance(model, SourceModel):
        return model
    module, name, takes_shape = LOADERS[source_kind(model)]
    loader = getattr(importlib.import_module(module), name)
    return loader(model, input_shape) if takes_shape else loader(model)
