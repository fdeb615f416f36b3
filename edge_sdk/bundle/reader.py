"""Opening ``.edgepkg`` bundles: verify before trusting, extract nothing until every check passed.

The zip container is treated as hostile. Its central directory is read with
:mod:`zipfile`, but entry data is read by this module straight from the local
file headers, with hard caps on every size, so that a lying header, a zip bomb
or a truncated file cannot make us read, inflate or write more than the
manifest allows. Integrity comes from the manifest's sha256 pins (covered by
the Ed25519 signature), not from zip CRCs; skipping the CRC keeps verification
at the speed of a plain sha256 over the same bytes.

The checks run in this order, cheapest first, and the first failure raises a
:class:`~edge_sdk.errors.BundleVerificationError` naming the bundle and reason:

1. the file itself (exists, regular, size cap);
2. the container (a readable zip, entry count, entry names, types, duplicates,
   encryption, compression methods, declared sizes and ratios);
3. the signature over ``manifest.json`` against the trusted keys;
4. the manifest (schema version, required fields, types, references);
5. the entry list against the manifest (nothing missing, nothing extra);
6. the device profile the bundle was built for;
7. every file's size and sha256, streamed (and, when extracting, written into
   a private staging directory that is renamed into place only at the end).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Collection, Iterator, Mapping

from edge_sdk.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, check_entry_name
from edge_sdk.bundle.signing import TrustStore, default_trusted_dir
from edge_sdk.errors import BundleVerificationError, ProfileMismatchError, SignatureError

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


@dataclass(frozen=True)
class VerifyLimits:
    """Caps that keep a hostile bundle from exhausting disk, memory or time."""

    max_bundle_bytes: int = 4 << 30
    max_total_uncompressed: int = 4 << 30
    max_entries: int = 256
    max_manifest_bytes: int = 1 << 20
    max_compression_ratio: float = 200.0


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose every check passed.

    ``signer`` is the trusted key id that signed it, or ``None`` for an unsigned
    bundle the caller explicitly allowed. ``directory`` is where it was
    extracted, when extraction was asked for.
    """

    path: Path
    manifest: Manifest
    signer: str | None
    directory: Path | None = None
    retained: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def signed(self) -> bool:
        return self.signer is not None

    def read(self, name: str) -> bytes:
        """One file's bytes, re-checked against the manifest's pin as they are read.

        Reading goes back to the bundle file, so a bundle swapped on disk after
        verification is caught here too.
        """
        entry = self.manifest.file(name)
        if name in self.retained:  # kept from the verifying pass itself
            return self.retained[name]
        if self.directory is not None:
            path = self.directory / name
            data = path.read_bytes()
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleVerificationError(path, f"extracted file {name!r} changed since verification")
            return data
        with open(self.path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            info = zf.getinfo(name)
            chunks = list(_stream_entry(fh, info, entry.size, str(self.path)))
        data = b"".join(chunks)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleVerificationError(self.path, f"file {name!r} changed since verification")
        return data


def open_bundle(
    path: str | os.PathLike,
    *,
    trusted: TrustStore | str | os.PathLike | None = None,
    allow_unsigned: bool = False,
    profile: "DeviceProfile | str | None" = None,
    extract_to: str | os.PathLike | None = None,
    overwrite: bool = False,
    limits: VerifyLimits = VerifyLimits(),
    retain: Collection[str] = (),
) -> VerifiedBundle:
    """Verify a bundle completely and return it; raise if anything is wrong.

    ``trusted`` is a :class:`TrustStore` or a directory of ``*.pub`` keys (the
    default trusted-keys directory when omitted). ``profile`` is the device's
    profile (object or id); a bundle built for another profile is refused.
    With ``extract_to``, the files are written to that directory, which appears
    only once every check has passed; an existing directory is replaced only
    when ``overwrite`` is true, and is left untouched on any failure.
    """
    path = Path(path)
    where = str(path)
    trust = trusted if isinstance(trusted, TrustStore) else TrustStore.from_dir(trusted or default_trusted_dir())
    _check_file(path, limits)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BundleVerificationError(path, f"cannot open bundle: {exc.strerror or exc}") from exc
    with fh:
        infos = _read_directory(fh, where, limits)
        manifest_bytes = _read_small(fh, infos, MANIFEST_NAME, limits.max_manifest_bytes, where)
        signer = _check_signature(fh, infos, manifest_bytes, trust, allow_unsigned, where)
        manifest = Manifest.from_bytes(manifest_bytes, where)
        _check_listing(infos, manifest, where, limits)
        check_profile(manifest, profile, where)
        if extract_to is None:
            retained: dict[str, bytes] = {}
            for entry in manifest.files:
                if entry.name in retain or entry.role in retain:
                    buffer = bytearray()
                    for chunk in _verified_chunks(fh, infos[entry.name], entry, where):
                        buffer += chunk
                    retained[entry.name] = bytes(buffer)
                else:
                    for _ in _verified_chunks(fh, infos[entry.name], entry, where):
                        pass
            return VerifiedBundle(path, manifest, signer, retained=retained)
        directory = _extract(fh, infos, manifest, manifest_bytes, Path(extract_to), overwrite, where)
    return VerifiedBundle(path, manifest, signer, directory)


def verify_bundle(path: str | os.PathLike, **kwargs) -> VerifiedBundle:
    """Same as :func:`open_bundle`; reads better where only the verdict matters."""
    return open_bundle(path, **kwargs)


# -- the steps ---------------------------------------------------------------


def _check_file(path: Path, limits: VerifyLimits) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError as exc:
        raise BundleVerificationError(path, "bundle file does not exist") from exc
    except OSError as exc:
        raise BundleVerificationError(path, f"cannot stat bundle: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise BundleVerificationError(path, "bundle is not a regular file")
    if st.st_size == 0:
        raise BundleVerificationError(path, "bundle file is empty")
    if st.st_size > limits.max_bundle_bytes:
        raise BundleVerificationError(
            path, f"bundle is {st.st_size} bytes, more than the limit of {limits.max_bundle_bytes}"
        )


def _read_directory(fh: IO[bytes], where: str, limits: VerifyLimits) -> dict[str, zipfile.ZipInfo]:
    """The container's entries by name, after every structural check on them."""
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, struct.error) as exc:
        raise BundleVerificationError(where, f"not a readable zip container (truncated or corrupt): {exc}") from exc
    except (UnicodeDecodeError, NotImplementedError) as exc:
        raise BundleVerificationError(where, f"zip container uses unsupported features: {exc}") from exc
    if len(infos) > limits.max_entries:
        raise BundleVerificationError(where, f"{len(infos)} entries, more than the limit of {limits.max_entries}")
    by_name: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if info.orig_filename != name:
            raise BundleVerificationError(where, f"entry name {info.orig_filename!r} holds a NUL or path separator")
        problem = check_entry_name(name)
        if problem:
            raise BundleVerificationError(where, f"unsafe entry: {problem}")
        if name in by_name:
            raise BundleVerificationError(where, f"duplicate entry {name!r}")
        if info.is_dir():
            raise BundleVerificationError(where, f"entry {name!r} is a directory")
        mode = info.external_attr >> 16
        if info.create_system == 3 and mode and not stat.S_ISREG(mode):
            raise BundleVerificationError(where, f"entry {name!r} is not a regular file (mode {mode:o}): links are refused")
        if info.flag_bits & 0x1:
            raise BundleVerificationError(where, f"entry {name!r} is encrypted")
        if info.compress_type not in _ALLOWED_METHODS:
            raise BundleVerificationError(
                where, f"entry {name!r} uses compression method {info.compress_type}; only stored and deflated are allowed"
            )
        if info.file_size > info.compress_size * limits.max_compression_ratio + 1024:
            raise BundleVerificationError(
                where,
                f"entry {name!r} claims {info.file_size} bytes from {info.compress_size} compressed "
                f"(ratio above {limits.max_compression_ratio:g}): refused as a zip bomb",
            )
        total += info.file_size
        if total > limits.max_total_uncompressed:
            raise BundleVerificationError(
                where, f"uncompressed contents exceed the limit of {limits.max_total_uncompressed} bytes"
            )
        by_name[name] = info
    if MANIFEST_NAME not in by_name:
        raise BundleVerificationError(where, f"no {MANIFEST_NAME} in the bundle")
    return by_name


def _read_small(fh: IO[bytes], infos: dict[str, zipfile.ZipInfo], name: str, cap: int, where: str) -> bytes:
    info = infos[name]
    if info.file_size > cap:
        raise BundleVerificationError(where, f"{name} is {info.file_size} bytes, more than the limit of {cap}")
    return b"".join(_stream_entry(fh, info, info.file_size, where))


def _check_signature(
    fh: IO[bytes],
    infos: dict[str, zipfile.ZipInfo],
    manifest_bytes: bytes,
    trust: TrustStore,
    allow_unsigned: bool,
    where: str,
) -> str | None:
    if SIGNATURE_NAME not in infos:
        if allow_unsigned:
            log.warning("%s: bundle is unsigned; accepted because unsigned bundles were explicitly allowed", where)
            return None
        raise SignatureError(where, "bundle is unsigned; refusing it (sign it with a key this device trusts)")
    signature_bytes = _read_small(fh, infos, SIGNATURE_NAME, 4096, where)
    return trust.verify(manifest_bytes, signature_bytes, where)


def _check_listing(infos: dict[str, zipfile.ZipInfo], manifest: Manifest, where: str, limits: VerifyLimits) -> None:
    listed = {entry.name for entry in manifest.files}
    present = set(infos) - {MANIFEST_NAME, SIGNATURE_NAME}
    extra = sorted(present - listed)
    if extra:
        raise BundleVerificationError(where, f"entry {extra[0]!r} is not listed in the manifest")
    missing = sorted(listed - present)
    if missing:
        raise BundleVerificationError(where, f"file {missing[0]!r} listed in the manifest is missing from the bundle")
    total = sum(entry.size for entry in manifest.files)
    if total > limits.max_total_uncompressed:
        raise BundleVerificationError(
            where, f"manifest declares {total} bytes of files, more than the limit of {limits.max_total_uncompressed}"
        )
    for entry in manifest.files:
        info = infos[entry.name]
        if info.file_size != entry.size:
            raise BundleVerificationError(
                where, f"file {entry.name!r} is {info.file_size} bytes in the container, the manifest says {entry.size}"
            )


def check_profile(manifest: Manifest, profile: "DeviceProfile | str | None", where: str) -> None:
    """Refuse a bundle built for another device profile (and, given a profile object, engine or format)."""
    if profile is None:
        return
    device_id = profile if isinstance(profile, str) else profile.id
    if manifest.profile != device_id:
        raise ProfileMismatchError(where, manifest.profile, device_id)
    if not isinstance(profile, str):
        runtime = profile.runtime
        if (manifest.engine, manifest.format) != (runtime.engine, runtime.format):
            raise ProfileMismatchError(
                where,
                f"{manifest.profile} ({manifest.engine}/{manifest.format})",
                f"{device_id} ({runtime.engine}/{runtime.format})",
            )


def _extract(
    fh: IO[bytes],
    infos: dict[str, zipfile.ZipInfo],
    manifest: Manifest,
    manifest_bytes: bytes,
    target: Path,
    overwrite: bool,
    where: str,
) -> Path:
    """Write every verified file into a staging directory, then rename it to ``target``."""
    target = target.absolute()
    if target.exists() and not overwrite:
        raise BundleVerificationError(where, f"extraction target {str(target)!r} already exists")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    except OSError as exc:
        raise BundleVerificationError(where, f"cannot create staging directory next to {str(target)!r}: {exc}") from exc
    try:
        for entry in manifest.files:
            dest = staging / entry.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "wb") as out:
                for chunk in _verified_chunks(fh, infos[entry.name], entry, where):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        (staging / MANIFEST_NAME).write_bytes(manifest_bytes)  # the signed bytes, as verified
        _swap_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    if overwrite and target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


# -- reading entry data ------------------------------------------------------


def _verified_chunks(fh: IO[bytes], info: zipfile.ZipInfo, entry, where: str) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in _stream_entry(fh, info, entry.size, where):
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != entry.sha256:
        raise BundleVerificationError(where, f"file {entry.name!r} does not match its sha256 in the manifest (tampered or corrupt)")


def _stream_entry(fh: IO[bytes], info: zipfile.ZipInfo, expected_size: int, where: str) -> Iterator[bytes]:
    """Yield an entry's uncompressed bytes; never more than ``expected_size``, never fewer."""
    name = info.filename
    if info.header_offset < 0:
        raise BundleVerificationError(where, f"entry {name!r}: local header offset {info.header_offset} is invalid")
    try:
        fh.seek(info.header_offset)
        header = fh.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise BundleVerificationError(where, f"entry {name!r}: local header is truncated")
        magic, _ver, flags, method, _t, _d, _crc, _cs, _us, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        if magic != _LOCAL_MAGIC:
            raise BundleVerificationError(where, f"entry {name!r}: bad local header signature")
        local_name = fh.read(name_len)
        if local_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"):
            raise BundleVerificationError(where, f"entry {name!r}: local header names a different file")
        if method != info.compress_type or flags & 0x1:
            raise BundleVerificationError(where, f"entry {name!r}: local header disagrees with the central directory")
        fh.seek(extra_len, os.SEEK_CUR)
    except (OSError, ValueError) as exc:
        raise BundleVerificationError(where, f"entry {name!r}: cannot read its local header: {exc}") from exc
    remaining_in = info.compress_size
    produced = 0
    inflater = zlib.decompressobj(-15) if method == zipfile.ZIP_DEFLATED else None
    try:
        while remaining_in > 0:
            raw = fh.read(min(_CHUNK, remaining_in))
            if not raw:
                raise BundleVerificationError(where, f"entry {name!r}: data is truncated")
            remaining_in -= len(raw)
            if inflater is None:
                out = raw
            else:
                # Never inflate past what the manifest allows (+1 byte to notice an overrun).
                out = inflater.decompress(raw, expected_size - produced + 1)
                if inflater.unconsumed_tail:
                    raise BundleVerificationError(where, f"entry {name!r} inflates to more than {expected_size} bytes")
            produced += len(out)
            if produced > expected_size:
                raise BundleVerificationError(where, f"entry {name!r} holds more than {expected_size} bytes")
            if out:
                yield out
        if inflater is not None:
            tail = inflater.flush()
            produced += len(tail)
            if produced > expected_size:
                raise BundleVerificationError(where, f"entry {name!r} holds more than {expected_size} bytes")
            if tail:
                yield tail
            if not inflater.eof:
                raise BundleVerificationError(where, f"entry {name!r}: compressed stream is incomplete")
    except zlib.error as exc:
        raise BundleVerificationError(where, f"entry {name!r}: corrupt compressed data: {exc}") from exc
    except OSError as exc:
        raise BundleVerificationError(where, f"entry {name!r}: read error: {exc}") from exc
    if produced != expected_size:
        raise BundleVerificationError(where, f"entry {name!r} holds {produced} bytes, expected {expected_size}")


def describe_bundle(
    path: str | os.PathLike,
    *,
    trusted: TrustStore | str | os.PathLike | None = None,
    profile: "DeviceProfile | str | None" = None,
    limits: VerifyLimits = VerifyLimits(),
) -> dict:
    """What ``edge-sdk inspect`` shows: the verification verdict, the manifest and the entries.

    The bundle is fully verified first. When verification fails, the manifest
    is still parsed for display when it can be, and the report says plainly
    that it is unverified; nothing from it is acted on.
    """
    path = Path(path)
    report: dict = {"path": str(path), "verified": False, "signed": False, "signer": None, "error": None}
    try:
        bundle = open_bundle(path, trusted=trusted, allow_unsigned=True, profile=profile, limits=limits)
    except BundleVerificationError as exc:
        report["error"] = exc.reason
    except ProfileMismatchError as exc:
        report["error"] = str(exc)
    else:
        report.update(verified=True, signed=bundle.signed, signer=bundle.signer)
        if not bundle.signed:
            report["error"] = "bundle is unsigned: devices refuse it unless unsigned bundles are allowed"
    report["bundle_bytes"] = path.stat().st_size if path.is_file() else None
    report["entries"], report["manifest"] = _describe_contents(path, limits)
    return report


def _describe_contents(path: Path, limits: VerifyLimits) -> tuple[list[dict], dict | None]:
    """Entry sizes and the manifest as stored, read defensively for display only."""
    try:
        with open(path, "rb") as fh:
            infos = _read_directory(fh, str(path), limits)
            entries = [
                {
                    "name": info.filename,
                    "size": info.file_size,
                    "compressed_size": info.compress_size,
                    "method": _ALLOWED_METHODS[info.compress_type],
                }
                for info in infos.values()
            ]
            data = _read_small(fh, infos, MANIFEST_NAME, limits.max_manifest_bytes, str(path))
    except BundleVerificationError:
        return [], None
    try:
        manifest = Manifest.from_bytes(data, str(path)).to_dict()
    except BundleVerificationError:
        return entries, None
    return entries, manifest
