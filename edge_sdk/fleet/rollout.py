"""Rollouts: one bundle to a set of devices, canary first, halted when too many fail.

A rollout publishes one OTA job per device (retained on the device's own job
topic, so a device that is briefly offline still gets it when it returns;
agents remember finished job ids and never run one twice). Devices are
updated in waves: the canary wave first (``canary`` of the targets, at least
one device, chosen by a stable hash of the device id so the same devices are
canaries every time), then the rest in waves of ``wave_size``. Each wave must
end (every device committed, rolled back or failed, or timed out) before the
next starts; when the failures so far exceed ``max_failure_rate`` of the
devices tried, the rollout halts and devices outside the tried waves never
receive the job.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edge_sdk.bundle.reader import open_bundle
from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.client import MqttClient
from edge_sdk.mqtt.schemas import BundleRef, OtaJob, OtaProgress, rollback_statement
from edge_sdk.ota import states
from edge_sdk.ota.manager import file_sha256

log = logging.getLogger(__name__)


class RolloutError(EdgeSDKError):
    """A rollout cannot start (no targets, a bundle that does not verify, bad options)."""


def parse_fraction(text: str | float, what: str) -> float:
    """``"10%"``, ``"0.1"`` or ``0.1`` -> 0.1; a :class:`RolloutError` outside 0..1."""
    try:
        value = float(text[:-1]) / 100.0 if isinstance(text, str) and text.endswith("%") else float(text)
    except ValueError:
        raise RolloutError(f"{what}: expected a percentage like 10% or a fraction like 0.1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise RolloutError(f"{what}: must be between 0% and 100%, got {text!r}")
    return value


def plan_waves(devices: Sequence[str], canary: float, wave_size: int | None) -> list[list[str]]:
    """The waves a rollout goes through: canary devices first (stable choice), then the rest."""
    order = sorted(devices, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    waves: list[list[str]] = []
    if canary > 0 and len(order) > 1:
        n = min(max(1, math.ceil(canary * len(order))), len(order) - 1)
        waves.append(sorted(order[:n]))
        order = order[n:]
    size = wave_size or len(order) or 1
    waves.extend(sorted(order[i:i + size]) for i in range(0, len(order), size))
    return [w for w in waves if w]


@dataclass
class DeviceOutcome:
    device_id: str
    wave: int
    state: str = "pending"  # pending (job sent, nothing back yet), an OTA state, "timeout" or "not sent"
    error: str | None = None
    sent_at: float | None = None
    ended_at: float | None = None
    bytes_done: int = 0

    @property
    def seconds(self) -> float | None:
        return self.ended_at - self.sent_at if self.ended_at and self.sent_at else None

    @property
    def failed(self) -> bool:
        return self.state in (states.FAILED, states.ROLLED_BACK, "timeout")


@dataclass
class RolloutResult:
    job_id: str
    bundle: BundleRef
    outcomes: dict[str, DeviceOutcome]
    halted: bool
    reason: str | None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def committed(self) -> list[str]:
        return sorted(d for d, o in self.outcomes.items() if o.state == states.COMMITTED)

    @property
    def failed(self) -> list[str]:
        return sorted(d for d, o in self.outcomes.items() if o.failed)

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id,
            "bundle": {"name": self.bundle.name, "version": self.bundle.version, "sha256": self.bundle.sha256,
                       "size": self.bundle.size, "profile": self.bundle.profile},
            "halted": self.halted,
            "reason": self.reason,
            "committed": len(self.committed),
            "failed": len(self.failed),
            "devices": {d: {"wave": o.wave, "state": o.state, "error": o.error, "seconds": o.seconds}
                        for d, o in sorted(self.outcomes.items())},
            "skipped": self.skipped,
        }


def bundle_ref(path: Path, *, trusted=None, allow_unsigned: bool = False) -> BundleRef:
    """Verify a bundle on the host (refuse to ship what devices would refuse) and describe it for a job."""
    verified = open_bundle(path, trusted=trusted, allow_unsigned=allow_unsigned)
    m = verified.manifest
    return BundleRef(m.name, m.version, file_sha256(path), path.stat().st_size, m.profile)


def new_job_id(bundle: BundleRef) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{bundle.name}-{bundle.version}")[:48]
    return f"{stem}-{uuid.uuid4().hex[:8]}"


class Rollout:
    """Runs one rollout over a connected client; the caller serves the bundle and passes its ``url``.

    Feed it every OTA progress message (:meth:`on_progress`, e.g. from
    :class:`~edge_sdk.fleet.registry.FleetMonitor`'s ``on_progress``).
    """

    def __init__(self, client: MqttClient, bundle: BundleRef, url: str, *, canary: float = 0.0,
                 max_failure_rate: float = 0.2, wave_size: int | None = None, timeout_s: float = 600.0,
                 job_id: str | None = None, rollback_signature: str | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.bundle = bundle
        self.url = url
        self.canary = canary
        self.max_failure_rate = max_failure_rate
        self.wave_size = wave_size
        self.timeout_s = timeout_s
        self.job_id = job_id or new_job_id(bundle)
        self.rollback_signature = rollback_signature
        self._on_event = on_event or (lambda text: None)
        self._outcomes: dict[str, DeviceOutcome] = {}
        self._changed = threading.Condition()

    # -- message feed (MQTT thread) -----------------------------------------------------------

    def on_progress(self, progress: OtaProgress) -> None:
        if progress.job_id != self.job_id:
            return
        with self._changed:
            outcome = self._outcomes.get(progress.device_id)
            if outcome is None or outcome.state in states.TERMINAL or outcome.state == "timeout":
                return
            outcome.state = progress.state
            outcome.error = progress.error
            outcome.bytes_done = progress.bytes_done
            if progress.state in states.TERMINAL:
                outcome.ended_at = time.monotonic()
            self._changed.notify_all()
        if progress.state in states.TERMINAL:
            self._on_event(f"{progress.device_id}: {progress.state}" + (f" ({progress.error})" if progress.error
                                                                          else ""))

    # -- running ------------------------------------------------------------------------------

    def run(self, devices: Sequence[str]) -> RolloutResult:
        if not devices:
            raise RolloutError("no target devices")
        waves = plan_waves(devices, self.canary, self.wave_size)
        with self._changed:
            for index, wave in enumerate(waves):
                for device in wave:
                    self._outcomes[device] = DeviceOutcome(device, index, state="not sent")
        job = OtaJob(self.job_id, self.bundle, self.url, self.rollback_signature is not None, time.time(),
                     self.rollback_signature)
        payload = job.to_payload()
        halted, reason = False, None
        tried = 0
        for index, wave in enumerate(waves):
            label = "canary wave" if index == 0 and self.canary > 0 and len(waves) > 1 else f"wave {index + 1}"
            self._on_event(f"{label}: sending job {self.job_id} to {len(wave)} device(s): "
                           f"{', '.join(wave[:8])}{' ...' if len(wave) > 8 else ''}")
            for device in wave:
                with self._changed:
                    outcome = self._outcomes[device]
                    outcome.state, outcome.sent_at = "pending", time.monotonic()
                self.client.publish(self.client.topics.ota_job(device), payload, qos=1, retain=True)
            self._wait(wave)
            tried += len(wave)
            failures = sum(1 for d, o in self._outcomes.items() if o.failed)
            rate = failures / tried
            self._on_event(f"{label} done: {tried - failures}/{tried} committed so far, failure rate "
                           f"{rate:.0%} (limit {self.max_failure_rate:.0%})")
            if rate > self.max_failure_rate and index < len(waves) - 1:
                halted = True
                reason = (f"halted after {label}: {failures} of {tried} device(s) failed ({rate:.0%} > "
                          f"{self.max_failure_rate:.0%}); {len(devices) - tried} device(s) were not updated")
                break
            if rate > self.max_failure_rate:
                halted = True
                reason = f"{failures} of {tried} device(s) failed ({rate:.0%} > {self.max_failure_rate:.0%})"
        with self._changed:
            outcomes = {d: DeviceOutcome(**vars(o)) for d, o in self._outcomes.items()}
        return RolloutResult(self.job_id, self.bundle, outcomes, halted, reason)

    def _wait(self, wave: Sequence[str]) -> None:
        deadline = time.monotonic() + self.timeout_s
        with self._changed:
            while True:
                waiting = [d for d in wave if self._outcomes[d].state not in states.TERMINAL]
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    break
                self._changed.wait(min(left, 1.0))
            for device in waiting:
                outcome = self._outcomes[device]
                outcome.error = f"no final state within {self.timeout_s:g} s (last: {outcome.state})"
                outcome.state, outcome.ended_at = "timeout", time.monotonic()
        for device in waiting:
            self._on_event(f"{device}: timed out")


def sign_rollback(key, job_id: str, bundle: BundleRef) -> str:
    """A rollback signature (the ``signature`` document as text) that lets devices install an older bundle."""
    return key.sign(rollback_statement(job_id, bundle)).decode("utf-8")
