"""Host-side conversion: turn trained models into quantized, signed bundles per device profile.

Everything here may import heavy host packages (TensorFlow, ONNX), always
lazily and behind the ``host`` extra; nothing on a device imports this package.
"""


def __getattr__(name: str):
    # ``from converters import package`` without importing numpy/TensorFlow at ``import converters``.
    if name in ("package", "PackageOptions", "PackageResult", "Preprocessing", "AccuracyGateError"):
        import importlib

        return getattr(importlib.import_module("converters.packager"), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
