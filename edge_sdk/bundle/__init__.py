"""The ``.edgepkg`` bundle: manifest schema, signing, writing and verified opening."""

from edge_sdk.bundle.manifest import (
    SCHEMA_VERSION,
    FileEntry,
    GoldenSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    TaskSpec,
    canonical_json,
    semver_key,
)
from edge_sdk.bundle.reader import VerifiedBundle, VerifyLimits, open_bundle, verify_bundle
from edge_sdk.bundle.signing import (
    KeyPair,
    SigningKey,
    TrustStore,
    default_key_dir,
    default_trusted_dir,
    generate_keypair,
    key_id_of,
    load_public_key,
)
from edge_sdk.bundle.writer import utc_timestamp, write_bundle

__all__ = [
    "SCHEMA_VERSION",
    "FileEntry",
    "GoldenSpec",
    "InputSpec",
    "KeyPair",
    "Manifest",
    "OutputSpec",
    "SigningKey",
    "TaskSpec",
    "TrustStore",
    "VerifiedBundle",
    "VerifyLimits",
    "canonical_json",
    "default_key_dir",
    "default_trusted_dir",
    "generate_keypair",
    "key_id_of",
    "load_public_key",
    "open_bundle",
    "semver_key",
    "utc_timestamp",
    "verify_bundle",
    "write_bundle",
]
