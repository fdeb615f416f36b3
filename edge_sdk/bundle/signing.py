"""Ed25519 keys, bundle signatures and the device's trust store.

A bundle's ``signature`` file is a small JSON document::

    {"schema": 1, "algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}

where the signature covers the exact bytes of ``manifest.json``, and the
manifest pins every other file by sha256. ``key_id`` is the first 16 hex
digits of the sha256 of the raw 32-byte public key; it only selects which
trusted key to try, it is not trusted itself.

Keys are stored as PEM (PKCS#8 private, SubjectPublicKeyInfo public) so that
``openssl`` and every other tool can read them. A device trusts the public keys
found in one directory (``*.pub``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_sdk.bundle.manifest import canonical_json
from edge_sdk.errors import SignatureError, SigningKeyError

log = logging.getLogger(__name__)

SIGNATURE_SCHEMA = 1
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096

ENV_KEY_DIR = "EDGE_SDK_KEY_DIR"
ENV_TRUSTED_KEYS = "EDGE_SDK_TRUSTED_KEYS"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/edge-sdk`` (``~/.config/edge-sdk`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edge-sdk"


def default_key_dir() -> Path:
    """Where ``edge-sdk keys generate`` writes and packaging reads the signing key."""
    return Path(os.environ.get(ENV_KEY_DIR) or config_dir() / "keys")


def default_trusted_dir() -> Path:
    """The directory of public keys a device trusts."""
    return Path(os.environ.get(ENV_TRUSTED_KEYS) or config_dir() / "trusted-keys")


def key_id_of(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


# DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): this fixed prefix, then the 32 key bytes.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    der = _ED25519_SPKI_PREFIX + public_key.public_bytes_raw()
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n".encode("ascii")


def _parse_public_pem(data: bytes) -> Ed25519PublicKey | None:
    """The common case without importing cryptography's serialization module (it costs a device ~10 ms at start)."""
    text = data.decode("ascii", errors="replace").strip()
    header, footer = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if not (text.startswith(header) and text.endswith(footer)):
        return None
    try:
        der = base64.b64decode("".join(text[len(header):-len(footer)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != 44 or not der.startswith(_ED25519_SPKI_PREFIX):
        return None
    return Ed25519PublicKey.from_public_bytes(der[12:])


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key that signs bundles."""

    private_key: Ed25519PrivateKey
    key_id: str
    path: str | None = None

    @classmethod
    def generate(cls) -> "SigningKey":
        key = Ed25519PrivateKey.generate()
        return cls(key, key_id_of(key.public_key()))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SigningKey":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(path, f"cannot read signing key: {exc.strerror or exc}") from exc
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("signing key %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(path, f"not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(path, f"expected an Ed25519 key, got {type(key).__name__}")
        return cls(key, key_id_of(key.public_key()), str(path))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, manifest_bytes: bytes) -> bytes:
        """The contents of a bundle's ``signature`` file for these manifest bytes."""
        signature = self.private_key.sign(manifest_bytes)
        return canonical_json(
            {
                "schema": SIGNATURE_SCHEMA,
                "algorithm": ALGORITHM,
                "key_id": self.key_id,
                "signature": base64.b64encode(signature).decode("ascii"),
            }
        )


@dataclass(frozen=True)
class KeyPair:
    """What ``keys generate`` wrote."""

    key_id: str
    private_path: Path
    public_path: Path


def generate_keypair(directory: str | os.PathLike, name: str = "signing", overwrite: bool = False) -> KeyPair:
    """Write ``<name>.key`` (mode 0600) and ``<name>.pub`` into ``directory``.

    An existing key is never replaced unless ``overwrite`` is true: losing a
    signing key means no device will accept the next update.
    """
    directory = Path(directory)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise SigningKeyError(
                    path, "a key already exists here; refusing to overwrite it (pass --force to replace it)"
                )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SigningKeyError(directory, f"cannot create key directory: {exc.strerror or exc}") from exc
    from cryptography.hazmat.primitives import serialization

    key = SigningKey.generate()
    private_pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(private_path, private_pem, 0o600, overwrite)
    _write_new(public_path, _public_pem(key.public_key), 0o644, overwrite)
    return KeyPair(key.key_id, private_path, public_path)


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write ``data`` with ``mode`` from the first byte (no window where a key is world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile
            os.unlink(tmp)
    except FileExistsError as exc:
        raise SigningKeyError(path, "a key already exists here; refusing to overwrite it") from exc
    except OSError as exc:
        raise SigningKeyError(path, f"cannot write key: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(path, f"cannot read public key: {exc.strerror or exc}") from exc
    key = _parse_public_pem(data)
    if key is not None:
        return key
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(path, f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(path, f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


class TrustStore:
    """The public keys a device accepts bundles from, by key id."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], source: str = "<memory>") -> None:
        self._keys = dict(keys)
        self.source = source

    @classmethod
    def from_keys(cls, keys: Iterable[Ed25519PublicKey]) -> "TrustStore":
        return cls({key_id_of(k): k for k in keys})

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> "TrustStore":
        """Every ``*.pub`` file in ``directory``; a missing directory trusts nothing."""
        directory = Path(directory)
        keys: dict[str, Ed25519PublicKey] = {}
        if directory.is_dir():
            for path in sorted(directory.glob("*.pub")):
                key = load_public_key(path)
                keys[key_id_of(key)] = key
        elif directory.exists():
            raise SigningKeyError(directory, "trusted keys location is not a directory")
        return cls(keys, str(directory))

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def add_file(self, public_key_path: str | os.PathLike, directory: str | os.PathLike) -> str:
        """Copy a public key into a trusted-keys directory; returns its key id."""
        key = load_public_key(public_key_path)
        kid = key_id_of(key)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{kid}.pub"
        if not target.exists():
            _write_new(target, _public_pem(key), 0o644, overwrite=False)
        self._keys[kid] = key
        return kid

    def verify(self, manifest_bytes: bytes, signature_bytes: bytes, bundle: str) -> str:
        """Check a ``signature`` file against the manifest bytes; returns the signer's key id."""
        key_id, signature = parse_signature(signature_bytes, bundle)
        key = self._keys.get(key_id)
        if key is None:
            trusted = ", ".join(self.key_ids) or "none"
            raise SignatureError(
                bundle,
                f"signed by key {key_id!r}, which is not trusted here (trusted keys in {self.source}: {trusted}); "
                "add the publisher's public key with 'edge-sdk keys trust'",
            )
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature as exc:
            raise SignatureError(
                bundle, f"signature does not match the manifest (key {key_id!r}): the bundle was altered"
            ) from exc
        return key_id


def parse_signature(data: bytes, bundle: str) -> tuple[str, bytes]:
    """The key id and raw signature from a ``signature`` file, or a :class:`SignatureError`."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SignatureError(bundle, f"signature file is {len(data)} bytes, more than {MAX_SIGNATURE_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureError(bundle, f"signature file is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"schema", "algorithm", "key_id", "signature"}:
        raise SignatureError(bundle, "signature file must hold exactly schema, algorithm, key_id and signature")
    if doc["schema"] != SIGNATURE_SCHEMA or doc["algorithm"] != ALGORITHM:
        raise SignatureError(
            bundle,
            f"unsupported signature schema {doc['schema']!r} / algorithm {doc['algorithm']!r}; "
            f"expected schema {SIGNATURE_SCHEMA} and {ALGORITHM!r}",
        )
    key_id, encoded = doc["key_id"], doc["signature"]
    if not isinstance(key_id, str) or not isinstance(encoded, str):
        raise SignatureError(bundle, "signature key_id and signature must be strings")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(bundle, f"signature is not valid base64: {exc}") from exc
    if len(signature) != 64:
        raise SignatureError(bundle, f"an Ed25519 signature is 64 bytes, this one is {len(signature)}")
    return key_id, signature
