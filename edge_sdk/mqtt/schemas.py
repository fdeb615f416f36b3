"""Versioned wire messages: every payload edge-sdk sends over MQTT, and strict decoding of them.

Each message is a frozen dataclass with ``to_payload() -> bytes`` and
``from_payload(data) -> message``. JSON messages are canonical JSON (sorted
keys, no spaces, UTF-8) carrying ``"schema": 1`` and ``"type": "<kind>"``;
timestamps are seconds since the Unix epoch (UTC) as numbers. Decoding trusts
nothing: it caps the size (64 KiB for JSON), rejects duplicate and unknown
keys, a schema version it does not know, and any field of the wrong type or
range, each with a :class:`PayloadError` naming the message type and the field.

Optional fields (``None``) are written as ``null`` and may be ``null`` or
absent when read, so a newer sender can drop them.

:class:`ChunkData` is binary, so that a bundle travels over MQTT without base64:

====== ======================= =============================================
bytes  field                   value
====== ======================= =============================================
4      magic                   ``b"EDC1"`` (the ``1`` is the format version)
1      job id length ``n``     1 to 64
n      job id                  ASCII, the same rules as a device id
8      offset                  unsigned, big-endian
32     sha256                  of the data that follows
rest   data                    1 byte to 1 MiB
====== ======================= =============================================
"""

from __future__ import annotations

import abc

import hashlib
import json
import math
import re
import struct
import uuid
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit

from edge_sdk._fields import Fields
from edge_sdk.mqtt.topics import MqttError, TopicError, validate_id

SCHEMA_VERSION = 1
MAX_JSON_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 1024 * 1024

OTA_STATES = (
    "idle", "downloading", "verifying", "staged", "activating", "health_check", "committed", "rolled_back", "failed",
)
MQTT_CHUNKS = "mqtt-chunks"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class PayloadError(MqttError):
    """A payload is not a valid message: ``message_type`` and ``field`` say where, ``reason`` what is wrong."""

    def __init__(self, message_type: str, field: str | None, reason: str) -> None:
        self.message_type = message_type
        self.field = field
        self.reason = reason
        where = f"{message_type} payload" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")


# -- JSON helpers ---------------------------------------------------------------------------------


def canonical_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite(value: float) -> bool:
    return math.isfinite(value)


_M = TypeVar("_M", bound="_JsonMessage")


class _JsonMessage(abc.ABC):
    """The shared framing of the JSON messages: size cap, schema version, type, strict fields."""

    TYPE: ClassVar[str]

    def to_payload(self) -> bytes:
        """Canonical JSON, validated by reading it back: a message the receiver would refuse is never sent."""
        try:
            payload = canonical_json({"schema": SCHEMA_VERSION, "type": self.TYPE, **self._to_dict()})
        except (TypeError, ValueError) as exc:
            raise PayloadError(self.TYPE, None, f"cannot be written as JSON: {exc}") from exc
        type(self).from_payload(payload)
        return payload

    @classmethod
    def from_payload(cls: type[_M], data: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> _M:
        fields = _open_json(cls.TYPE, data, max_bytes)
        message = cls._from_fields(fields)
        fields.done()
        return message

    def _to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    @abc.abstractmethod
    def _from_fields(cls: type[_M], f: Fields) -> _M:
        """Read this message type's fields from the validated JSON object."""


def _fail_for(message_type: str):
    def fail(key: str, reason: str) -> NoReturn:
        raise PayloadError(message_type, key, reason)

    return fail


def _open_json(message_type: str, data: bytes, max_bytes: int) -> Fields:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(message_type, None, f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise PayloadError(message_type, None, f"payload is {len(data)} bytes; the limit is {max_bytes}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PayloadError(message_type, None, f"not valid UTF-8 JSON: {exc}") from exc
    f = Fields(obj, _fail_for(message_type))
    schema = f.int("schema")
    if schema != SCHEMA_VERSION:
        f.fail("schema", f"unsupported schema version {schema!r}; this edge-sdk reads schema {SCHEMA_VERSION}. "
               "Upgrade the side that reads it, or make the sender write schema 1")
    kind = f.str("type")
    if kind != message_type:
        f.fail("type", f"expected {message_type!r}, got {kind!r}")
    return f


# -- field readers shared by the messages ---------------------------------------------------------


def _id(f: Fields, name: str, what: str) -> str:
    value = f.str(name)
    try:
        return validate_id(value, what)
    except TopicError as exc:
        f.fail(name, str(exc))


def _text(f: Fields, name: str, max_len: int = 256) -> str:
    value = f.str(name)
    if not value or len(value) > max_len:
        f.fail(name, f"expected 1 to {max_len} characters, got {len(value)}")
    return value


def _optional_text(f: Fields, name: str, max_len: int = 256) -> str | None:
    if f.str(name, None) is None:
        return None
    return _text(f, name, max_len)


def _sha256(f: Fields, name: str) -> str:
    value = f.str(name)
    if not _SHA256_RE.fullmatch(value):
        f.fail(name, f"expected 64 lowercase hex digits, got {value!r:.80}")
    return value


def _number(f: Fields, name: str, minimum: float = 0.0, maximum: float | None = None) -> float:
    value = f.float(name)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum:g}" if maximum is None else f"between {minimum:g} and {maximum:g}"
        f.fail(name, f"must be {bounds}, got {value!r}")
    return value


def _timestamp(f: Fields, name: str) -> float:
    return _number(f, name, 0.0)


# -- the messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """The model a device runs: bundle name, version and bundle sha256."""

    name: str
    version: str
    sha256: str

    @classmethod
    def _read(cls, f: Fields) -> ModelRef:
        ref = cls(_text(f, "name"), _text(f, "version", 64), _sha256(f, "sha256"))
        f.done()
        return ref


@dataclass(frozen=True)
class Status(_JsonMessage):
    """``edge/<device>/status``: retained; ``offline`` is also the device's last will."""

    TYPE: ClassVar[str] = "status"
    STATES: ClassVar[tuple[str, ...]] = ("online", "offline")

    state: str
    device_id: str
    profile: str
    model: ModelRef | None
    sdk_version: str
    timestamp: float
    groups: tuple[str, ...] = ()

    MAX_GROUPS: ClassVar[int] = 32

    @classmethod
    def _from_fields(cls, f: Fields) -> Status:
        model = f.object("model", None)
        groups = f.str_tuple("groups", ())
        if len(groups) > cls.MAX_GROUPS:
            f.fail("groups", f"at most {cls.MAX_GROUPS} groups, got {len(groups)}")
        for i, group in enumerate(groups):
            try:
                validate_id(group, "group id")
            except TopicError as exc:
                f.fail(f"groups[{i}]", str(exc))
        return cls(
            state=f.choice("state", cls.STATES),
            device_id=_id(f, "device_id", "device id"),
            profile=_text(f, "profile", 64),
            model=ModelRef._read(model) if model is not None else None,
            sdk_version=_text(f, "sdk_version", 64),
            timestamp=_timestamp(f, "timestamp"),
            groups=tuple(groups),
        )


@dataclass(frozen=True)
class Latency:
    """Latency percentiles over a telemetry window, in milliseconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def _read(cls, f: Fields) -> Latency:
        latency = cls(_number(f, "p50"), _number(f, "p95"), _number(f, "p99"))
        if not latency.p50 <= latency.p95 <= latency.p99:
            f.fail("p95", f"percentiles must not decrease: p50={latency.p50}, p95={latency.p95}, p99={latency.p99}")
        f.done()
        return latency


@dataclass(frozen=True)
class Telemetry(_JsonMessage):
    """``edge/<device>/telemetry``: the metrics of one window. ``message_id`` lets the fleet drop duplicates."""

    TYPE: ClassVar[str] = "telemetry"

    device_id: str
    seq: int
    message_id: str
    timestamp: float
    window_s: float
    fps: float
    latency_ms: Latency
    frames: int
    dropped: int
    errors: int
    cpu_percent: float
    memory_percent: float
    disk_free_bytes: int
    temperature_c: float | None
    model_version: str | None
    outbox_dropped: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Telemetry:
        message_id = f.str("message_id")
        try:
            canonical = str(uuid.UUID(message_id))
        except ValueError:
            canonical = None
        if canonical != message_id:
            f.fail("message_id", f"expected a lowercase UUID like {str(uuid.UUID(int=0))!r}, got {message_id!r:.80}")
        window_s = _number(f, "window_s")
        if window_s <= 0:
            f.fail("window_s", f"must be > 0, got {window_s!r}")
        temperature = f.float("temperature_c", None)
        return cls(
            device_id=_id(f, "device_id", "device id"),
            seq=f.int("seq", minimum=0),
            message_id=message_id,
            timestamp=_timestamp(f, "timestamp"),
            window_s=window_s,
            fps=_number(f, "fps"),
            latency_ms=Latency._read(f.object("latency_ms")),
            frames=f.int("frames", minimum=0),
            dropped=f.int("dropped", minimum=0),
            errors=f.int("errors", minimum=0),
            cpu_percent=_number(f, "cpu_percent"),
            memory_percent=_number(f, "memory_percent", 0.0, 100.0),
            disk_free_bytes=f.int("disk_free_bytes", minimum=0),
            temperature_c=temperature,
            model_version=_optional_text(f, "model_version", 64),
            outbox_dropped=f.int("outbox_dropped", minimum=0),
        )


@dataclass(frozen=True)
class BundleRef:
    """The bundle an OTA job installs: enough to check the download before opening it."""

    name: str
    version: str
    sha256: str
    size: int
    profile: str

    @classmethod
    def _read(cls, f: Fields) -> BundleRef:
        ref = cls(_text(f, "name"), _text(f, "version", 64), _sha256(f, "sha256"), f.int("size", minimum=1),
                  _text(f, "profile", 64))
        f.done()
        return ref


@dataclass(frozen=True)
class OtaJob(_JsonMessage):
    """``edge/<device>/ota/job`` and ``edge/group/<group>/ota/job``: install this bundle.

    ``url`` is an ``http(s)://`` address of the bundle, or ``"mqtt-chunks"`` to
    fetch it through the chunk topics. ``rollback`` allows installing an older
    version; a device accepts it only with ``rollback_signature``, a bundle
    ``signature`` document (see :mod:`edge_sdk.bundle.signing`) by a key it
    trusts over :func:`rollback_statement` of the job. Without it versions only
    go forward.
    """

    TYPE: ClassVar[str] = "ota_job"

    job_id: str
    bundle: BundleRef
    url: str
    rollback: bool
    issued_at: float
    rollback_signature: str | None = None

    @classmethod
    def _from_fields(cls, f: Fields) -> OtaJob:
        url = f.str("url")
        if url != MQTT_CHUNKS:
            parts = urlsplit(url) if len(url) <= 2048 else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                f.fail("url", f"expected an http(s):// URL of at most 2048 characters or {MQTT_CHUNKS!r}, "
                       f"got {url!r:.100}")
        return cls(
            job_id=_id(f, "job_id", "job id"),
            bundle=BundleRef._read(f.object("bundle")),
            url=url,
            rollback=f.bool("rollback"),
            issued_at=_timestamp(f, "issued_at"),
            rollback_signature=_optional_text(f, "rollback_signature", 1024),
        )


def rollback_statement(job_id: str, bundle: BundleRef) -> bytes:
    """The bytes a rollback signature covers: the job, and exactly which bundle it may install."""
    return "\n".join(("edge-sdk rollback v1", job_id, bundle.name, bundle.version, bundle.sha256,
                      bundle.profile)).encode("utf-8")


@dataclass(frozen=True)
class OtaProgress(_JsonMessage):
    """``edge/<device>/ota/progress``: where an update stands (the states of the OTA state machine)."""

    TYPE: ClassVar[str] = "ota_progress"
    STATES: ClassVar[tuple[str, ...]] = OTA_STATES

    job_id: str
    device_id: str
    state: str
    bytes_done: int
    bytes_total: int
    error: str | None
    timestamp: float

    @classmethod
    def _from_fields(cls, f: Fields) -> OtaProgress:
        done = f.int("bytes_done", minimum=0)
        total = f.int("bytes_total", minimum=0)
        if done > total:
            f.fail("bytes_done", f"is {done}, more than bytes_total {total}")
        return cls(
            job_id=_id(f, "job_id", "job id"),
            device_id=_id(f, "device_id", "device id"),
            state=f.choice("state", cls.STATES),
            bytes_done=done,
            bytes_total=total,
            error=_optional_text(f, "error", 4096),
            timestamp=_timestamp(f, "timestamp"),
        )


@dataclass(frozen=True)
class ChunkRequest(_JsonMessage):
    """``edge/<device>/ota/chunk/request``: send ``length`` bytes of the job's bundle from ``offset``."""

    TYPE: ClassVar[str] = "ota_chunk_request"

    job_id: str
    offset: int
    length: int

    @classmethod
    def _from_fields(cls, f: Fields) -> ChunkRequest:
        length = f.int("length", minimum=1)
        if length > MAX_CHUNK_BYTES:
            f.fail("length", f"is {length}; chunks are at most {MAX_CHUNK_BYTES} bytes")
        return cls(job_id=_id(f, "job_id", "job id"), offset=f.int("offset", minimum=0), length=length)


_CHUNK_MAGIC = b"EDC"
_CHUNK_VERSION = b"1"
_CHUNK_OFFSET = struct.Struct(">Q")


@dataclass(frozen=True)
class ChunkData:
    """``edge/<device>/ota/chunk/data``: one verified piece of a bundle (binary; see the module docstring)."""

    TYPE: ClassVar[str] = "ota_chunk_data"
    MAX_PAYLOAD_BYTES: ClassVar[int] = 4 + 1 + 64 + 8 + 32 + MAX_CHUNK_BYTES

    job_id: str
    offset: int
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def end(self) -> int:
        """The offset just past this chunk."""
        return self.offset + len(self.data)

    def to_payload(self) -> bytes:
        fail = _fail_for(self.TYPE)
        try:
            job = validate_id(self.job_id, "job id").encode("ascii")
        except TopicError as exc:
            fail("job_id", str(exc))
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or not 0 <= self.offset < 2**64:
            fail("offset", f"expected an integer from 0 to 2**64-1, got {self.offset!r}")
        if not isinstance(self.data, (bytes, bytearray)) or not 1 <= len(self.data) <= MAX_CHUNK_BYTES:
            fail("data", f"expected 1 to {MAX_CHUNK_BYTES} bytes")
        data = bytes(self.data)
        return b"".join((_CHUNK_MAGIC, _CHUNK_VERSION, bytes((len(job),)), job, _CHUNK_OFFSET.pack(self.offset),
                         hashlib.sha256(data).digest(), data))

    @classmethod
    def from_payload(cls, data: bytes, *, max_bytes: int | None = None) -> ChunkData:
        fail = _fail_for(cls.TYPE)
        limit = cls.MAX_PAYLOAD_BYTES if max_bytes is None else max_bytes
        if not isinstance(data, (bytes, bytearray, memoryview)):
            fail(None, f"expected bytes, got {type(data).__name__}")  # type: ignore[arg-type]
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        if len(view) > limit:
            fail(None, f"payload is {len(view)} bytes; the limit is {limit}")  # type: ignore[arg-type]
        if len(view) < 5 or view[:3] != _CHUNK_MAGIC:
            fail("magic", f"not an edge-sdk chunk (expected the magic {_CHUNK_MAGIC + _CHUNK_VERSION!r}, "
                 f"got {bytes(view[:4])!r})")
        if view[3:4] != _CHUNK_VERSION:
            fail("schema", f"unsupported chunk format version {bytes(view[3:4]).decode('latin-1')!r}; this "
                 f"edge-sdk reads version {_CHUNK_VERSION.decode()}")
        n = view[4]
        header = 5 + n + 8 + 32
        if len(view) < header + 1:
            fail("data", f"truncated: {len(view)} bytes is shorter than the header ({header}) plus one data byte")
        try:
            job_id = validate_id(bytes(view[5:5 + n]).decode("ascii"), "job id")
        except (UnicodeDecodeError, TopicError) as exc:
            fail("job_id", f"{exc}")
        (offset,) = _CHUNK_OFFSET.unpack_from(view, 5 + n)
        digest = bytes(view[5 + n + 8:header])
        chunk = view[header:]  # a view: the data is copied once, below, after its hash matched
        if len(chunk) > MAX_CHUNK_BYTES:
            fail("data", f"is {len(chunk)} bytes; chunks are at most {MAX_CHUNK_BYTES}")
        if hashlib.sha256(chunk).digest() != digest:
            fail("sha256", f"the data does not match its hash (job {job_id!r}, offset {offset}); "
                 "the chunk was corrupted, request it again")
        return cls(job_id, offset, bytes(chunk))


# -- registry -------------------------------------------------------------------------------------

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls for cls in (Status, Telemetry, OtaJob, OtaProgress, ChunkRequest, ChunkData)
}

# topic kind (see edge_sdk.mqtt.topics) -> the message type it carries
TOPIC_MESSAGES: dict[str, type] = {
    "status": Status,
    "telemetry": Telemetry,
    "ota_job": OtaJob,
    "group_ota_job": OtaJob,
    "ota_progress": OtaProgress,
    "ota_chunk_request": ChunkRequest,
    "ota_chunk_data": ChunkData,
}

Message = Status | Telemetry | OtaJob | OtaProgress | ChunkRequest | ChunkData


def receive(topics, message_type: type, topic: str, payload: bytes, logger) -> tuple[str, Any] | None:
    """``(device or group id, message)`` of a payload that arrived on ``topic``, for message handlers.

    A topic outside the tree or a payload that is not a valid ``message_type``
    is logged on ``logger`` as ignored and gives ``None``: a handler never
    raises on what a peer sent.
    """
    try:
        target = topics.parse(topic).target
        return target, message_type.from_payload(payload)
    except (PayloadError, TopicError) as exc:
        logger.warning("ignored a malformed %s on %s (%d bytes): %s", message_type.TYPE, topic, len(payload), exc)
        return None


def decode(topic_kind: str, payload: bytes) -> Message:
    """Decode the payload of a topic of ``topic_kind`` (the first item of :meth:`Topics.parse`)."""
    try:
        cls = TOPIC_MESSAGES[topic_kind]
    except KeyError:
        raise PayloadError(str(topic_kind), None, f"no message type for topic kind {topic_kind!r}; known kinds: "
                           f"{', '.join(TOPIC_MESSAGES)}") from None
    return cls.from_payload(payload)
