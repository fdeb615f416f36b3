"""Shared fixtures: real keys on disk, real bundles, and a way to craft hostile zips."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.bundle import (
    GoldenSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    SigningKey,
    TaskSpec,
    TrustStore,
    generate_keypair,
    write_bundle,
)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Never read or write the real ~/.config/edge-sdk from a test."""
    home = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("EDGE_SDK_KEY_DIR", raising=False)
    monkeypatch.delenv("EDGE_SDK_TRUSTED_KEYS", raising=False)
    monkeypatch.delenv("EDGE_SDK_PROFILES_PATH", raising=False)


@dataclass(frozen=True)
class Keys:
    key: SigningKey
    trust: TrustStore
    trusted_dir: Path
    key_dir: Path


@pytest.fixture
def keys(tmp_path) -> Keys:
    pair = generate_keypair(tmp_path / "keys")
    trusted = tmp_path / "trusted"
    store = TrustStore.from_dir(trusted)
    store.add_file(pair.public_path, trusted)
    return Keys(SigningKey.from_file(pair.private_path), TrustStore.from_dir(trusted), trusted, tmp_path / "keys")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sample_manifest(**changes) -> Manifest:
    base = dict(
        name="digits",
        version="1.0.0",
        created="2026-01-02T03:04:05Z",
        profile="generic-x86",
        engine="onnxruntime",
        format="onnx",
        model="model.onnx",
        inputs=(InputSpec("image", (1, 8, 8, 1), "float32", color_order="GRAY", std=(255.0,)),),
        outputs=(OutputSpec("probs", (1, 10), "float32"),),
        task=TaskSpec("classification", labels="labels.txt", decoder="classification", params={"top_k": 3}),
        golden=GoldenSpec({"image": "golden/image.npy"}, {"probs": "golden/probs.npy"}, atol=1e-5),
        quantization={"mode": "float32"},
    )
    base.update(changes)
    return Manifest(**base)


def sample_files(model_bytes: bytes | None = None) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "model.onnx": model_bytes if model_bytes is not None else rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "labels.txt": b"\n".join(str(i).encode() for i in range(10)) + b"\n",
        "golden/image.npy": npy_bytes(rng.random((1, 8, 8, 1), dtype=np.float32)),
        "golden/probs.npy": npy_bytes(np.full((1, 10), 0.1, dtype=np.float32)),
    }


@pytest.fixture
def bundle(tmp_path, keys) -> Path:
    """A valid, signed bundle for generic-x86."""
    return write_bundle(sample_manifest(), sample_files(), tmp_path / "good.edgepkg", keys.key)


def craft_zip(path: Path, entries: list[tuple], *, compression=zipfile.ZIP_STORED) -> Path:
    """Write a zip with full control: each entry is (name, bytes) or (name, bytes, ZipInfo-tweaks dict)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for entry in entries:
            name, data = entry[0], entry[1]
            tweaks = entry[2] if len(entry) > 2 else {}
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = compression
            for attr, value in tweaks.items():
                setattr(info, attr, value)
            zf.writestr(info, data)
    return path


def zip_entries(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def signed_entries(manifest_dict: dict, files: dict[str, bytes], key: SigningKey) -> list[tuple[str, bytes]]:
    """Entries of a bundle whose (possibly invalid) manifest is correctly signed."""
    # Plain json.dumps, not canonical_json: tests need to sign manifests with NaN/Infinity too.
    data = json.dumps(manifest_dict, sort_keys=True, separators=(",", ":")).encode()
    return [("manifest.json", data), ("signature", key.sign(data)), *sorted(files.items())]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def profile_variant(profile_id: str, **changes):
    """A built-in profile with some [section] keys changed (``runtime__ops=[...]``), validated like a file."""
    from device_profiles import DeviceProfile, load_profile

    data = load_profile(profile_id).to_dict()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return DeviceProfile.from_dict(data)
