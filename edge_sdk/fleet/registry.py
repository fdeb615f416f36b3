"""The host's view of the fleet: a SQLite registry fed by the devices' MQTT messages.

:class:`FleetMonitor` subscribes to every device's status, telemetry and OTA
progress and records them in a :class:`Registry` (one SQLite file, WAL):
who is online, on which profile, running which model, their last telemetry
and the state of their last job. Duplicated telemetry (the outbox resends
after a crash with the same ``message_id``) is recognised and counted once.
Malformed messages are logged and counted, never stored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edge_sdk.mqtt.client import MqttClient
from edge_sdk.mqtt.schemas import OtaProgress, Status, Telemetry, receive

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device_id TEXT PRIMARY KEY, state TEXT NOT NULL, profile TEXT, groups TEXT NOT NULL DEFAULT '[]',
        model_name TEXT, model_version TEXT, model_sha256 TEXT, sdk_version TEXT, status_at REAL,
        telemetry TEXT, telemetry_at REAL, job_id TEXT, job_state TEXT, job_error TEXT, job_at REAL,
        seen_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS seen_messages (message_id TEXT PRIMARY KEY, at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
)
SEEN_LIMIT = 100_000


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    state: str
    profile: str | None
    groups: tuple[str, ...]
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    sdk_version: str | None
    status_at: float | None
    telemetry: dict | None
    telemetry_at: float | None
    job_id: str | None
    job_state: str | None
    job_error: str | None
    job_at: float | None
    seen_at: float

    def to_dict(self) -> dict:
        return asdict(self)


class Registry:
    """Thread-safe SQLite store of the fleet's devices (one writer lock, WAL for readers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_status(self, status: Status) -> None:
        model = status.model
        with self._lock:
            self._db.execute(
                """INSERT INTO devices (device_id, state, profile, groups, model_name, model_version, model_sha256,
                   sdk_version, status_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(device_id) DO UPDATE SET state=excluded.state, profile=excluded.profile,
                   groups=excluded.groups, model_name=COALESCE(excluded.model_name, devices.model_name),
                   model_version=COALESCE(excluded.model_version, devices.model_version),
                   model_sha256=COALESCE(excluded.model_sha256, devices.model_sha256),
                   sdk_version=excluded.sdk_version, status_at=excluded.status_at, seen_at=excluded.seen_at""",
                (status.device_id, status.state, status.profile, json.dumps(list(status.groups)),
                 model.name if model else None, model.version if model else None, model.sha256 if model else None,
                 status.sdk_version, status.timestamp, time.time()),
            )

    def record_telemetry(self, telemetry: Telemetry, payload: bytes | None = None) -> bool:
        """Store one telemetry message; False when its ``message_id`` was already seen (a resend).

        ``payload`` is the message as received (already validated); without it the message is written anew.
        """
        text = payload.decode("utf-8") if payload is not None else telemetry.to_payload().decode("utf-8")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                fresh = db.execute("INSERT OR IGNORE INTO seen_messages VALUES (?, ?)",
                                   (telemetry.message_id, time.time())).rowcount == 1
                if fresh:
                    db.execute(
                        """INSERT INTO devices (device_id, state, telemetry, telemetry_at, seen_at)
                           VALUES (?, 'online', ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET
                           telemetry=excluded.telemetry, telemetry_at=excluded.telemetry_at,
                           seen_at=excluded.seen_at WHERE devices.telemetry_at IS NULL
                           OR excluded.telemetry_at >= devices.telemetry_at""",
                        (telemetry.device_id, text, telemetry.timestamp, time.time()))
                    db.execute("INSERT INTO counters VALUES ('telemetry', 1) "
                               "ON CONFLICT(name) DO UPDATE SET value = value + 1")
                else:
                    db.execute("INSERT INTO counters VALUES ('duplicates', 1) "
                               "ON CONFLICT(name) DO UPDATE SET value = value + 1")
                db.execute("DELETE FROM seen_messages WHERE rowid <= (SELECT MAX(rowid) FROM seen_messages) - ?",
                           (SEEN_LIMIT,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return fresh

    def record_progress(self, progress: OtaProgress) -> None:
        with self._lock:
            self._db.execute(
                """INSERT INTO devices (device_id, state, job_id, job_state, job_error, job_at, seen_at)
                   VALUES (?, 'online', ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET job_id=excluded.job_id,
                   job_state=excluded.job_state, job_error=excluded.job_error, job_at=excluded.job_at,
                   seen_at=excluded.seen_at""",
                (progress.device_id, progress.job_id, progress.state, progress.error, progress.timestamp,
                 time.time()))

    def count(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def devices(self, group: str | None = None) -> list[DeviceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM devices ORDER BY device_id").fetchall()
        records = [_record(row) for row in rows]
        return [r for r in records if group is None or group in r.groups]

    def device(self, device_id: str) -> DeviceRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return _record(row) if row else None


def _record(row: tuple) -> DeviceRecord:
    (device_id, state, profile, groups, name, version, sha, sdk, status_at, telemetry, telemetry_at, job_id,
     job_state, job_error, job_at, seen_at) = row
    return DeviceRecord(device_id, state, profile, tuple(json.loads(groups or "[]")), name, version, sha, sdk,
                        status_at, json.loads(telemetry) if telemetry else None, telemetry_at, job_id, job_state,
                        job_error, job_at, seen_at)


class FleetMonitor:
    """Feeds a :class:`Registry` from a connected client; ``on_progress`` sees every OTA progress message."""

    def __init__(self, client: MqttClient, registry: Registry,
                 on_progress: Callable[[OtaProgress], None] | None = None,
                 on_status: Callable[[Status], None] | None = None) -> None:
        self.client = client
        self.registry = registry
        self._on_progress = on_progress
        self._on_status = on_status
        self.malformed = 0
        topics = client.topics
        client.subscribe(topics.subscription("status"),
                         self._handle(Status, lambda m, _payload: registry.record_status(m), on_status))
        # telemetry is stored as received: validated once here, not written out and validated again
        client.subscribe(topics.subscription("telemetry"), self._handle(Telemetry, registry.record_telemetry, None))
        client.subscribe(topics.subscription("ota_progress"),
                         self._handle(OtaProgress, lambda m, _payload: registry.record_progress(m), on_progress))

    def _handle(self, message_type, store, then):
        def handler(topic: str, payload: bytes) -> None:
            received = receive(self.client.topics, message_type, topic, payload, log)
            if received is None:
                self.malformed += 1
                return
            device, message = received
            if getattr(message, "device_id", device) != device:
                self.malformed += 1
                log.warning("ignored a message on %s that names device %r", topic, message.device_id)
                return
            store(message, payload)
            if then is not None:
                then(message)

        return handler
