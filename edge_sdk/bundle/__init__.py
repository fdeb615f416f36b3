"""The ``.edgepkg`` bundle: manifest schema, signing, writing and verified opening.

Names are imported from their modules on first use, so a device that only
opens bundles never imports the writer (cold start matters on a Pi).
"""

import importlib

_EXPORTS = {
    "SCHEMA_VERSION": "manifest",
    "FileEntry": "manifest",
    "GoldenSpec": "manifest",
    "InputSpec": "manifest",
    "Manifest": "manifest",
    "OutputSpec": "manifest",
    "TaskSpec": "manifest",
    "canonical_json": "manifest",
    "semver_key": "manifest",
    "VerifiedBundle": "reader",
    "VerifyLimits": "reader",
    "open_bundle": "reader",
    "verify_bundle": "reader",
    "describe_bundle": "reader",
    "KeyPair": "signing",
    "SigningKey": "signing",
    "TrustStore": "signing",
    "default_key_dir": "signing",
    "default_trusted_dir": "signing",
    "generate_keypair": "signing",
    "key_id_of": "signing",
    "load_public_key": "signing",
    "utc_timestamp": "writer",
    "write_bundle": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"edge_sdk.bundle.{module}"), name)
