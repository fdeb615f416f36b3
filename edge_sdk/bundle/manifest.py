"""The bundle manifest, schema version 1.

The manifest is the one document a bundle's signature covers; it pins every
other file of the bundle by size and sha256. It is stored as canonical JSON
(sorted keys, no insignificant white space, UTF-8), so the same manifest always
has the same bytes and the same signature.

Parsing is strict: unknown fields, wrong types and impossible values are
errors naming the field, because a manifest is untrusted input until its
signature has been checked and a typo in a hand-edited manifest must not pass.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn

from edge_sdk._fields import Fields
from edge_sdk.errors import BundleVerificationError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME})

TASKS = ("classification", "detection", "segmentation", "raw")
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
LAYOUTS = ("NHWC", "NCHW", "NC", "none")
COLOR_ORDERS = ("RGB", "BGR", "GRAY")
RESIZE_MODES = ("stretch", "letterbox", "center_crop")
FILE_ROLES = ("model", "labels", "golden", "report", "extra")

# Semantic Versioning 2.0.0, the regular expression semver.org recommends.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CREATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# Entry names inside the bundle: relative POSIX paths of plain segments.
_ENTRY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_entry_name(name: str) -> str | None:
    """Why ``name`` is not an acceptable file name inside a bundle, or ``None`` when it is.

    Only relative POSIX paths made of plain segments pass: no absolute paths,
    no ``..`` or ``.``, no backslashes, drive letters, control characters or
    empty segments. Extraction code relies on this to stay inside its folder.
    """
    if not name:
        return "empty entry name"
    if len(name) > 255:
        return f"entry name is longer than 255 characters: {name[:40]!r}..."
    if name.startswith("/") or name.startswith("\\"):
        return f"absolute entry name {name!r}"
    if "\\" in name:
        return f"backslash in entry name {name!r}"
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            return f"entry name {name!r} has a {segment or 'empty'!r} path segment"
        if not _ENTRY_SEGMENT.match(segment):
            return f"entry name {name!r} has characters outside [A-Za-z0-9._-] or starts with '.'/'-'"
    return None


def semver_key(version: str) -> tuple:
    """A sort key for semantic versions (pre-releases sort before their release)."""
    match = _SEMVER.match(version)
    if not match:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        pre_key: tuple = ((1,),)
    else:
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        pre_key = ((0,), *pre_key)
    return (int(major), int(minor), int(patch), pre_key)


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle, pinned by size and sha256."""

    name: str
    size: int
    sha256: str
    role: str = "extra"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "role": self.role}

    @classmethod
    def _read(cls, f: Fields) -> "FileEntry":
        name = f.str("name")
        problem = check_entry_name(name)
        if problem:
            f.fail("name", problem)
        if name in RESERVED_NAMES:
            f.fail("name", f"{name!r} is reserved for the bundle's own files")
        size = f.int("size", minimum=0)
        sha = f.str("sha256")
        if not _SHA256.match(sha):
            f.fail("sha256", f"expected 64 lowercase hex digits, got {sha!r:.80}")
        role = f.choice("role", FILE_ROLES)
        f.done()
        return cls(name=name, size=size, sha256=sha, role=role)


@dataclass(frozen=True)
class InputSpec:
    """One model input and how a frame becomes that tensor.

    ``scale``/``zero_point`` are the input quantization (real = scale * (q - zero_point))
    for integer inputs; ``mean``/``std`` normalise per channel after resizing
    (``(pixel - mean) / std`` on 0..255 pixel values); ``pad_value`` is the grey
    level letterbox padding uses (YOLO models are trained with 114).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str = "NHWC"
    color_order: str = "RGB"
    resize: str = "stretch"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float | None = None
    zero_point: int | None = None
    pad_value: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "color_order": self.color_order,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "pad_value": self.pad_value,
        }
        if self.scale is not None:
            data["scale"] = self.scale
            data["zero_point"] = self.zero_point
        return data

    @classmethod
    def _read(cls, f: Fields) -> "InputSpec":
        spec = cls(
            name=f.str("name"),
            shape=f.int_tuple("shape", minimum=-1),
            dtype=f.choice("dtype", DTYPES),
            layout=f.choice("layout", LAYOUTS),
            color_order=f.choice("color_order", COLOR_ORDERS),
            resize=f.choice("resize", RESIZE_MODES),
            mean=f.float_tuple("mean"),
            std=f.float_tuple("std"),
            scale=f.float("scale", None),
            zero_point=f.int("zero_point", None),
            pad_value=f.int("pad_value", 0, minimum=0),
        )
        if spec.pad_value > 255:
            f.fail("pad_value", f"a pixel value is 0..255, got {spec.pad_value!r}")
        if any(s == 0.0 for s in spec.std):
            f.fail("std", f"standard deviations must be non-zero, got {list(spec.std)!r}")
        if (spec.scale is None) != (spec.zero_point is None):
            f.fail("scale", "scale and zero_point go together: give both or neither")
        if spec.scale is not None and spec.scale <= 0:
            f.fail("scale", f"must be > 0, got {spec.scale!r}")
        f.done()
        return spec


@dataclass(frozen=True)
class OutputSpec:
    """One raw model output; ``scale``/``zero_point`` dequantize an integer output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            data["scale"] = self.scale
            data["zero_point"] = self.zero_point
        return data

    @classmethod
    def _read(cls, f: Fields) -> "OutputSpec":
        spec = cls(
            name=f.str("name"),
            shape=f.int_tuple("shape", minimum=-1),
            dtype=f.choice("dtype", DTYPES),
            scale=f.float("scale", None),
            zero_point=f.int("zero_point", None),
        )
        if (spec.scale is None) != (spec.zero_point is None):
            f.fail("scale", "scale and zero_point go together: give both or neither")
        f.done()
        return spec


@dataclass(frozen=True)
class TaskSpec:
    """What the outputs mean: the task, its labels file and the decoder with its parameters."""

    kind: str = "raw"
    labels: str | None = None
    decoder: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "params": dict(self.params)}
        if self.labels is not None:
            data["labels"] = self.labels
        if self.decoder is not None:
            data["decoder"] = self.decoder
        return data

    @classmethod
    def _read(cls, f: Fields) -> "TaskSpec":
        spec = cls(
            kind=f.choice("kind", TASKS),
            labels=f.str("labels", None),
            decoder=f.str("decoder", None),
            params=f.json("params", {}),
        )
        f.done()
        return spec


@dataclass(frozen=True)
class GoldenSpec:
    """A known input and its expected output, for on-device health checks.

    Both sides are ``.npy`` files inside the bundle, keyed by tensor name.
    """

    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    atol: float = 0.0
    rtol: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "atol": self.atol,
            "rtol": self.rtol,
        }

    @classmethod
    def _read(cls, f: Fields) -> "GoldenSpec":
        inputs = f.json("inputs")
        outputs = f.json("outputs")
        for key, mapping in (("inputs", inputs), ("outputs", outputs)):
            for tensor, path in mapping.items():
                if not isinstance(path, str):
                    f.fail(f"{key}.{tensor}", f"expected a file name, got {path!r:.80}")
        spec = cls(inputs=inputs, outputs=outputs, atol=f.float("atol", 0.0), rtol=f.float("rtol", 0.0))
        f.done()
        return spec


def _fail_for(source: str):
    def fail(key: str, reason: str) -> NoReturn:
        raise BundleVerificationError(source, f"manifest field {key!r}: {reason}")

    return fail


@dataclass(frozen=True)
class Manifest:
    """Everything a device needs to know about a bundle before it runs it."""

    name: str
    version: str
    created: str
    profile: str
    engine: str
    format: str
    model: str
    files: tuple[FileEntry, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    task: TaskSpec = field(default_factory=TaskSpec)
    golden: GoldenSpec | None = None
    quantization: Mapping[str, Any] = field(default_factory=dict)
    accuracy: Mapping[str, Any] = field(default_factory=dict)
    compatibility: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    # -- naming ---------------------------------------------------------------

    @property
    def bundle_filename(self) -> str:
        """The conventional file name, ``<name>-<version>-<profile>.edgepkg``."""
        return f"{self.name}-{self.version}-{self.profile}.edgepkg"

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def with_files(self, files: tuple[FileEntry, ...]) -> "Manifest":
        return dataclasses.replace(self, files=tuple(sorted(files, key=lambda e: e.name)))

    # -- wire form ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": self.schema,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "profile": self.profile,
            "engine": self.engine,
            "format": self.format,
            "model": self.model,
            "files": [e.to_dict() for e in self.files],
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "task": self.task.to_dict(),
            "quantization": dict(self.quantization),
            "accuracy": dict(self.accuracy),
            "compatibility": dict(self.compatibility),
            "metadata": dict(self.metadata),
        }
        if self.golden is not None:
            data["golden"] = self.golden.to_dict()
        return data

    def to_bytes(self) -> bytes:
        """The canonical bytes: what is stored in the bundle and what is signed."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "manifest.json") -> "Manifest":
        """Parse and validate manifest bytes; ``source`` names the bundle in errors."""
        try:
            raw = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise BundleVerificationError(source, f"manifest.json is not valid UTF-8 JSON: {exc}") from exc
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "manifest.json") -> "Manifest":
        f = Fields(raw, _fail_for(source))
        schema = f.int("schema")
        if schema != SCHEMA_VERSION:
            f.fail(
                "schema",
                f"this edge-sdk reads manifest schema {SCHEMA_VERSION}, the bundle has {schema!r}; "
                "upgrade edge-sdk or repackage the model",
            )
        name = f.str("name")
        if not _NAME.match(name):
            f.fail("name", f"expected lowercase letters, digits, '.', '_' or '-' (max 64), got {name!r:.80}")
        version = f.str("version")
        if not _SEMVER.match(version):
            f.fail("version", f"expected a semantic version such as '1.2.0', got {version!r:.80}")
        created = f.str("created")
        if not _CREATED.match(created):
            f.fail("created", f"expected UTC time as YYYY-MM-DDTHH:MM:SSZ, got {created!r:.80}")
        golden = f.object("golden", None)
        manifest = cls(
            schema=schema,
            name=name,
            version=version,
            created=created,
            profile=f.str("profile"),
            engine=f.str("engine"),
            format=f.str("format"),
            model=f.str("model"),
            files=tuple(FileEntry._read(item) for item in f.objects("files")),
            inputs=tuple(InputSpec._read(item) for item in f.objects("inputs")),
            outputs=tuple(OutputSpec._read(item) for item in f.objects("outputs")),
            task=TaskSpec._read(f.object("task")),
            golden=GoldenSpec._read(golden) if golden is not None else None,
            quantization=f.json("quantization", {}),
            accuracy=f.json("accuracy", {}),
            compatibility=f.json("compatibility", {}),
            metadata=f.json("metadata", {}),
        )
        f.done()
        manifest._check_references(f)
        return manifest

    def _check_references(self, f: Fields) -> None:
        """Every file the manifest mentions is one it pins, and no file is pinned twice."""
        names = [e.name for e in self.files]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            f.fail("files", f"file {dupes[0]!r} is listed more than once")
        if not _NAME.match(self.profile):
            f.fail("profile", f"expected a profile id such as 'raspberry-pi-4', got {self.profile!r:.80}")
        listed = set(names)
        if self.model not in listed:
            f.fail("model", f"model file {self.model!r} is not among the bundle's files")
        if self.task.labels is not None and self.task.labels not in listed:
            f.fail("task.labels", f"labels file {self.task.labels!r} is not among the bundle's files")
        if self.golden is not None:
            for side, mapping in (("inputs", self.golden.inputs), ("outputs", self.golden.outputs)):
                for tensor, path in mapping.items():
                    if path not in listed:
                        f.fail(f"golden.{side}.{tensor}", f"golden file {path!r} is not among the bundle's files")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def canonical_json(data: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
