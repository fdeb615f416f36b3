"""Durable files of the OTA machinery: atomic writes, the persisted job record and its store.

Every write goes through :func:`atomic_write`: a temporary file in the same
directory, ``fsync``, ``rename`` over the old file, ``fsync`` of the directory.
A reader therefore sees either the old or the new file, never a mix, even
after a power cut in the middle.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.schemas import OtaJob, PayloadError
from edge_sdk.ota import states

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
HISTORY_LIMIT = 32


class OtaError(EdgeSDKError):
    """An OTA update cannot go on: ``reason`` is what the job reports."""


class TransitionError(OtaError):
    """A transition the table (:data:`edge_sdk.ota.states.TRANSITIONS`) does not allow."""


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Finished:
    """A job that ended, remembered so that a retained or repeated job message does not run it twice."""

    job_id: str
    state: str
    sha256: str
    version: str
    error: str | None
    at: float


@dataclass(frozen=True)
class OtaRecord:
    """What the device knows about its current (or last) update; the whole of ``ota.json``."""

    state: str = states.IDLE
    job: OtaJob | None = None
    slot: str | None = None  # the slot the job stages into
    bytes_done: int = 0
    error: str | None = None
    resumes: int = 0  # restarts of the agent during this job (the loop guard counts them)
    etag: str | None = None  # the HTTP validator the partial download was made from
    updated_at: float = 0.0
    history: tuple[Finished, ...] = ()
    blocked: tuple[str, ...] = ()  # bundle sha256s that failed their health check here

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job is not None else None

    def finished(self, job_id: str) -> Finished | None:
        return next((f for f in reversed(self.history) if f.job_id == job_id), None)

    def to_bytes(self) -> bytes:
        body = asdict(self)
        body["job"] = json.loads(self.job.to_payload()) if self.job is not None else None
        body["schema"] = RECORD_SCHEMA
        return json.dumps(body, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "OtaRecord":
        try:
            raw: dict[str, Any] = json.loads(data.decode("utf-8"))
            if raw.pop("schema") != RECORD_SCHEMA:
                raise ValueError(f"unknown schema, this edge-sdk reads {RECORD_SCHEMA}")
            job = raw.pop("job")
            raw["job"] = OtaJob.from_payload(json.dumps(job).encode()) if job is not None else None
            raw["history"] = tuple(Finished(**item) for item in raw["history"])
            raw["blocked"] = tuple(raw["blocked"])
            record = cls(**raw)
        except (ValueError, KeyError, TypeError, AttributeError, PayloadError) as exc:
            raise OtaError(f"{where}: not a valid OTA state record: {exc}") from exc
        if record.state not in states.STATES:
            raise OtaError(f"{where}: unknown OTA state {record.state!r}")
        return record


class StateStore:
    """``ota.json``: the persisted :class:`OtaRecord`, written atomically before every transition."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._record = self._load()

    def _load(self) -> OtaRecord:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return OtaRecord()
        try:
            return OtaRecord.from_bytes(data, str(self.path))
        except OtaError as exc:
            # Atomic writes make this a disk fault, not a crash artefact. Keep the evidence, start clean:
            # the active-slot pointer, not this record, decides which model runs.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("%s; moved it to %s and starting with no update in progress", exc, aside)
            return OtaRecord()

    @property
    def record(self) -> OtaRecord:
        return self._record

    def transition(self, new_state: str, **changes: Any) -> OtaRecord:
        """Move to ``new_state`` (checked against the table), persist, and return the new record."""
        current = self._record.state
        if not states.allowed(current, new_state):
            raise TransitionError(f"OTA transition {current} -> {new_state} is not in the transition table")
        return self._save(replace(self._record, state=new_state, **changes))

    def update(self, **changes: Any) -> OtaRecord:
        """Persist a change that keeps the state (download progress, the resume counter)."""
        if "state" in changes:
            raise TransitionError("use transition() to change the state")
        return self._save(replace(self._record, **changes))

    def finish(self, new_state: str, error: str | None = None, block: bool = False,
               job: OtaJob | None = None) -> OtaRecord:
        """End the current job (or ``job``, refused before it started) in terminal ``new_state``; remember it."""
        if new_state not in states.TERMINAL:
            raise TransitionError(f"{new_state!r} does not end a job; terminal states: {sorted(states.TERMINAL)}")
        record = self._record
        if job is not None:
            if record.state not in states.STARTABLE:
                raise TransitionError(f"job {record.job_id} is still {record.state}; {job.job_id} cannot end now")
            record = replace(record, job=job, slot=None, bytes_done=0, resumes=0, etag=None)
            self._record = record
        job = record.job
        history, blocked = record.history, record.blocked
        if job is not None:
            done = Finished(job.job_id, new_state, job.bundle.sha256, job.bundle.version, error, time.time())
            history = (*history, done)[-HISTORY_LIMIT:]
            if block and job.bundle.sha256 not in blocked:
                blocked = (*blocked, job.bundle.sha256)[-HISTORY_LIMIT:]
        return self.transition(new_state, error=error, history=history, blocked=blocked, job=job)

    def _save(self, record: OtaRecord) -> OtaRecord:
        record = replace(record, updated_at=time.time())
        atomic_write(self.path, record.to_bytes())
        self._record = record
        return record


@dataclass(frozen=True)
class SlotInfo:
    """What the active-slot pointer says runs: the slot and the bundle's identity."""

    slot: str
    name: str
    version: str
    sha256: str


SLOTS = ("a", "b")


@dataclass
class Slots:
    """Two bundle slots on disk and the pointer naming the active one.

    Layout under ``root``: ``slots/a/bundle.edgepkg``, ``slots/b/bundle.edgepkg``
    and ``active.json`` (the pointer, written atomically). A new bundle is
    staged into the slot the pointer does not name; the previous model stays
    in its slot until the next update replaces it.
    """

    root: Path
    _active: SlotInfo | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for slot in SLOTS:
            (self.root / "slots" / slot).mkdir(parents=True, exist_ok=True)
        self._active = self._read_pointer()

    @property
    def pointer(self) -> Path:
        return self.root / "active.json"

    def bundle_path(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise OtaError(f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
        return self.root / "slots" / slot / "bundle.edgepkg"

    @property
    def active(self) -> SlotInfo | None:
        return self._active

    @property
    def inactive(self) -> str:
        return "b" if self._active is not None and self._active.slot == "a" else "a"

    def other(self, slot: str) -> str:
        return "b" if slot == "a" else "a"

    def set_active(self, info: SlotInfo) -> None:
        self.bundle_path(info.slot)  # validates the slot name
        atomic_write(self.pointer, json.dumps(asdict(info), sort_keys=True).encode("utf-8"))
        self._active = info

    def install(self, source: Path, slot: str) -> Path:
        """Move (same file system) or copy ``source`` into ``slot`` durably; returns the slot's bundle path."""
        target = self.bundle_path(slot)
        tmp = target.with_name(".bundle.edgepkg.tmp")
        try:
            os.replace(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return target

    def _read_pointer(self) -> SlotInfo | None:
        try:
            raw = json.loads(self.pointer.read_text("utf-8"))
            info = SlotInfo(**raw)
            self.bundle_path(info.slot)
            return info
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OtaError) as exc:
            log.error("%s is not a valid slot pointer (%s); starting with no active slot", self.pointer, exc)
            return None
