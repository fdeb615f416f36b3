"""edge-sdk: take a trained vision model to a fleet of edge devices and keep it healthy there.

``import edge_sdk`` stays light on purpose: it never imports TensorFlow, ONNX
or an inference engine. Those load lazily inside the backend that needs them.
"""

from edge_sdk._version import __version__
from edge_sdk.errors import (
    BundleError,
    BundleVerificationError,
    EdgeSDKError,
    EngineError,
    MissingDependencyError,
    ProfileError,
    ProfileMismatchError,
    SignatureError,
    SigningKeyError,
)

__all__ = [
    "__version__",
    "load",
    "Model",
    "EngineError",
    "BundleError",
    "BundleVerificationError",
    "EdgeSDKError",
    "MissingDependencyError",
    "ProfileError",
    "ProfileMismatchError",
    "SignatureError",
    "SigningKeyError",
]


def __getattr__(name: str):
    # ``edge_sdk.load`` and ``edge_sdk.Model`` import numpy and the vision code on first use only.
    if name in ("load", "Model"):
        from edge_sdk import model

        return getattr(model, name)
    raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
