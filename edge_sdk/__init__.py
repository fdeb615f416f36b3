"""edge-sdk: take a trained vision model to a fleet of edge devices and keep it healthy there.

``import edge_sdk`` stays light on purpose: it never imports TensorFlow, ONNX
or an inference engine. Those load lazily inside the backend that needs them.
"""

from edge_sdk._version import __version__
from edge_sdk.errors import (
    BundleError,
    BundleVerificationError,
    EdgeSDKError,
    MissingDependencyError,
    ProfileError,
    ProfileMismatchError,
    SignatureError,
    SigningKeyError,
)

__all__ = [
    "__version__",
    "BundleError",
    "BundleVerificationError",
    "EdgeSDKError",
    "MissingDependencyError",
    "ProfileError",
    "ProfileMismatchError",
    "SignatureError",
    "SigningKeyError",
]
