"""Converter backends, one per output format, chosen by the device profile's ``runtime.format``."""

from __future__ import annotations

import importlib

from converters.base import Backend, ConversionError

# output format -> (module, class); imported on first use (TensorFlow and ONNX are heavy).
BACKENDS: dict[str, tuple[str, str]] = {
    "tflite": ("converters.backends.tflite", "TFLiteBackend"),
    "onnx": ("converters.backends.onnx", "OnnxBackend"),
}


def backend_for(fmt: str) -> Backend:
    try:
        module, cls = BACKENDS[fmt]
    except KeyError:
        raise ConversionError(fmt, f"no converter produces {fmt!r} models; known formats: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)()
