"""Host-side conversion: turn trained models into quantized, signed bundles per device profile.

Everything here may import heavy host packages (TensorFlow, ONNX), always
lazily and behind the ``host`` extra; nothing on a device imports this package.
"""
