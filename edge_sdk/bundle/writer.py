"""Writing ``.edgepkg`` bundles, deterministically.

The same manifest, files and key always give byte-identical bundles: entries
are sorted (``manifest.json`` and ``signature`` first), every entry has the
same fixed timestamp and permissions, and Ed25519 signatures are deterministic.
Model files are stored uncompressed so that a device verifies them at the speed
of sha256 and can read them in place; small text files are deflated.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from pathlib import Path
from typing import Mapping, Union

from edge_sdk.bundle.manifest import (
    MANIFEST_NAME,
    RESERVED_NAMES,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    check_entry_name,
)
from edge_sdk.bundle.signing import SigningKey
from edge_sdk.errors import BundleError

FileSource = Union[bytes, str, os.PathLike]

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ENTRY_MODE = 0o100644  # regular file, rw-r--r--
_DEFLATE_SUFFIXES = (".json", ".txt", ".csv", ".md")
_CHUNK = 1 << 20


def utc_timestamp(epoch: float | None = None) -> str:
    """A manifest ``created`` value; honours ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    if epoch is None:
        env = os.environ.get("SOURCE_DATE_EPOCH")
        epoch = float(env) if env else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _pin(name: str, source: FileSource, role: str) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    if isinstance(source, bytes):
        digest.update(source)
        size = len(source)
    else:
        try:
            with open(source, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise BundleError(source, f"cannot read file for bundle entry {name!r}: {exc.strerror or exc}") from exc
    return FileEntry(name=name, size=size, sha256=digest.hexdigest(), role=role)


def _role_of(name: str, manifest: Manifest) -> str:
    if name == manifest.model:
        return "model"
    if name == manifest.task.labels:
        return "labels"
    if manifest.golden is not None and (
        name in manifest.golden.inputs.values() or name in manifest.golden.outputs.values()
    ):
        return "golden"
    if name.endswith(".json"):
        return "report"
    return "extra"


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # unix, so external_attr carries the mode
    info.external_attr = ENTRY_MODE << 16
    info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(_DEFLATE_SUFFIXES) or name in RESERVED_NAMES else (
        zipfile.ZIP_STORED
    )
    return info


def write_bundle(
    manifest: Manifest,
    files: Mapping[str, FileSource],
    output: str | os.PathLike,
    signing_key: SigningKey | None,
) -> Path:
    """Write a bundle holding ``files`` (entry name -> bytes or path) described by ``manifest``.

    The manifest's ``files`` list is computed here from the actual bytes.
    ``output`` may be a file path or an existing directory (the conventional
    file name is used then). The file appears atomically: a crash leaves no
    half-written bundle under the final name. Without a signing key the bundle
    is unsigned, and devices refuse it unless told to allow unsigned bundles.
    """
    output = Path(output)
    if output.is_dir():
        output = output / manifest.bundle_filename
    for name in files:
        problem = check_entry_name(name)
        if problem or name in RESERVED_NAMES:
            raise BundleError(output, problem or f"entry name {name!r} is reserved")
    entries = tuple(_pin(name, source, _role_of(name, manifest)) for name, source in files.items())
    manifest = manifest.with_files(entries)
    manifest_bytes = manifest.to_bytes()
    Manifest.from_bytes(manifest_bytes, str(output))  # the writer never produces what the reader refuses

    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            zf.writestr(_zipinfo(MANIFEST_NAME), manifest_bytes, compresslevel=9)
            if signing_key is not None:
                zf.writestr(_zipinfo(SIGNATURE_NAME), signing_key.sign(manifest_bytes), compresslevel=9)
            for name in sorted(files):
                _write_entry(zf, name, files[name])
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        raise BundleError(output, f"cannot write bundle: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return output


def _write_entry(zf: zipfile.ZipFile, name: str, source: FileSource) -> None:
    info = _zipinfo(name)
    if isinstance(source, bytes):
        zf.writestr(info, source, compresslevel=9)
        return
    info.file_size = os.path.getsize(source)
    with open(source, "rb") as src, zf.open(info, "w", force_zip64=info.file_size > 0x7FFFFFFF) as dst:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
