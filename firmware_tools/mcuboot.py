"""Signed MCUboot images: a firmware or model binary wrapped by ``imgtool`` (MCUboot's own tool, from PyPI).

MCUboot boots and swaps in only images whose header, hash and signature check
out against the public key built into the bootloader, and (with downgrade
prevention) whose security counter is not lower than the running image's.
:func:`sign_image` runs ``imgtool sign`` with the version, the security counter,
the key (the Ed25519 keys of ``edge-sdk keys generate`` work, as do imgtool's
own RSA/ECDSA keys), the header size MCUboot reserves before the payload
(0x200 by default, the common MCUboot/Zephyr value; ``pad_header`` inserts it for a
binary linked without it) and the board's flash write alignment.
:func:`verify_image` runs ``imgtool verify`` and reads the header and TLVs back.
A signed image can then be published through the same OTA jobs as a bundle.

MCUboot image layout (``bootutil/image.h``): a header (magic 0x96f3b83d,
load address, header size, protected TLV size, image size, flags, version
major.minor.revision+build), the payload, a protected TLV area (magic 0x6908:
the security counter, type 0x50) and the TLV area (magic 0x6907: hash, key hash,
signature).
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import MissingDependencyError
from firmware_tools.errors import ImageError

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

IMAGE_MAGIC = 0x96F3B83D
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_SEC_CNT = 0x50
DEFAULT_HEADER_SIZE = 0x200
IMGTOOL_TIMEOUT_S = 120

_HEADER = struct.Struct("<IIHHIIBBHI")  # magic, load_addr, hdr_size, protect_tlv_size, img_size, flags, version
_VERSION = re.compile(r"^\d{1,3}(\.\d{1,3}(\.\d{1,5})?)?(\+\d{1,10})?$")


@dataclass(frozen=True)
class ImageInfo:
    """What an MCUboot image's header and TLVs say."""

    path: Path
    version: str
    security_counter: int | None
    header_size: int
    image_size: int
    total_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.version, "security_counter": self.security_counter,
                "header_size": self.header_size, "image_size": self.image_size, "total_size": self.total_size}


def _imgtool() -> list[str]:
    try:
        import imgtool  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("imgtool", "firmware", "signing MCUboot images") from exc
    exe = Path(sys.executable).with_name("imgtool")
    return [str(exe)] if exe.is_file() else [shutil.which("imgtool") or str(exe)]


def _run(args: list[str], path: Path) -> str:
    try:
        proc = subprocess.run(_imgtool() + args, capture_output=True, text=True, timeout=IMGTOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(path, f"imgtool could not run: {exc}") from exc
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        errors = [ln.removeprefix("Error:").strip() for ln in lines if ln.startswith("Error:")]
        detail = "; ".join(errors or [ln for ln in lines if not ln.startswith(("Usage", "Try ", "image.py:"))])
        raise ImageError(path, f"imgtool {args[0]} failed: {detail or f'exit status {proc.returncode}'}")
    return output


def sign_image(
    image: str | Path,
    key: str | Path,
    output: str | Path,
    *,
    version: str,
    security_counter: int | None = None,
    header_size: int = DEFAULT_HEADER_SIZE,
    pad_header: bool = True,
    align: int | None = None,
    slot_size: int | None = None,
    profile: "DeviceProfile | None" = None,
) -> ImageInfo:
    """Sign ``image`` into ``output`` as an MCUboot image; return what the written image says.

    ``version`` is MCUboot's ``major[.minor[.revision]][+build]``. ``security_counter``
    (downgrade protection) defaults to none. ``align`` and ``slot_size`` default to
    ``profile``'s board alignment and flash size (pass your partition's slot size so
    imgtool rejects an image too large for it).
    """
    from firmware_tools.boards import board_for

    image, key, output = Path(image), Path(key), Path(output)
    if not _VERSION.match(version):
        raise ImageError(image, f"version {version!r} is not an MCUboot version (major.minor.revision+build, "
                                "e.g. 1.2.3+4)")
    if security_counter is not None and not 0 <= security_counter < 2**32:
        raise ImageError(image, f"security counter {security_counter!r} must be 0..4294967295")
    for path, what in ((image, "image"), (key, "signing key")):
        if not path.is_file():
            raise ImageError(path, f"{what} not found")
    board = board_for(profile) if profile is not None else None
    align = align or (board.mcuboot_align if board is not None else 4)
    if slot_size is None:
        if profile is None or profile.memory.flash_bytes is None:
            raise ImageError(image, "pass the slot size of the MCUboot partition (slot_size / --slot-size)")
        slot_size = profile.memory.flash_bytes
    args = ["sign", "--key", str(key), "--version", version, "--header-size", str(header_size),
            "--align", str(align), "--slot-size", str(slot_size)]
    if pad_header:
        args.append("--pad-header")
    if security_counter is not None:
        args += ["--security-counter", str(security_counter)]
    output.parent.mkdir(parents=True, exist_ok=True)
    _run(args + [str(image), str(output)], image)
    return read_image(output)


def verify_image(image: str | Path, key: str | Path) -> ImageInfo:
    """Check ``image``'s hash and signature with ``key`` (private or public) using ``imgtool verify``."""
    image, key = Path(image), Path(key)
    for path, what in ((image, "image"), (key, "key")):
        if not path.is_file():
            raise ImageError(path, f"{what} not found")
    info = read_image(image)
    _run(["verify", "--key", str(key), str(image)], image)
    return info


def read_image(image: str | Path) -> ImageInfo:
    """Parse an MCUboot image's header and protected TLVs (no signature check: see :func:`verify_image`)."""
    image = Path(image)
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ImageError(image, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) < _HEADER.size:
        raise ImageError(image, f"too short for an MCUboot header ({len(data)} bytes)")
    magic, _load, hdr_size, prot_size, img_size, _flags, major, minor, revision, build = _HEADER.unpack_from(data)
    if magic != IMAGE_MAGIC:
        raise ImageError(image, f"not an MCUboot image (header magic 0x{magic:08x}, expected 0x{IMAGE_MAGIC:08x})")
    end = hdr_size + img_size
    counter = None
    if prot_size:
        tlv_magic, total = struct.unpack_from("<HH", data, end) if len(data) >= end + 4 else (0, 0)
        if tlv_magic != TLV_PROT_INFO_MAGIC:
            raise ImageError(image, f"protected TLV area missing or corrupt at offset 0x{end:x}")
        offset = end + 4
        while offset + 4 <= end + total:
            kind, length = struct.unpack_from("<HH", data, offset)
            if kind == TLV_SEC_CNT and length == 4:
                counter = struct.unpack_from("<I", data, offset + 4)[0]
            offset += 4 + length
    version = f"{major}.{minor}.{revision}+{build}"
    return ImageInfo(image, version, counter, hdr_size, img_size, len(data))
