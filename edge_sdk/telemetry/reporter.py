"""The telemetry reporter: one thread that turns pipeline stats and device health into MQTT messages.

Every ``interval_s`` the reporter's own thread reads the pipeline's stats
snapshot (the only thing it touches of the pipeline: it never takes a lock
the pipeline's threads take, and never blocks them), diffs it with the
previous one, samples the device's health, builds one telemetry message for
the window and puts it into the durable :class:`~edge_sdk.telemetry.outbox.Outbox`,
then pumps the outbox into the MQTT client.

Between reports the thread also pumps when the client (re)connects (the
connect listener wakes it, and it resets the outbox's in-flight marks before
pumping) and after every ack, so a day of telemetry stored during an outage
goes out at the broker's pace, not one window per interval. While the client
is disconnected nothing is pumped: the messages wait on disk, not in paho's
memory. The listeners only set events; every SQLite access of the reporter
happens on its own thread.

The message is :class:`edge_sdk.mqtt.schemas.Telemetry` (``"schema": 1``,
validated before it is stored): ``message_id`` is a fresh UUID stored with
the message, so a resend after a crash carries the same one; ``seq`` counts
0, 1, 2, ... from the reporter's start; ``fps``, ``frames``, ``dropped`` and
``errors`` cover the window of ``window_s`` seconds since the previous
message; ``latency_ms`` p50/p95/p99 are the pipeline's own, over its last
``latency_window`` frames; CPU percent (over the window), memory percent,
disk free and temperature come from :class:`DeviceHealth`; ``outbox_dropped``
counts telemetry messages the outbox had to drop since the previous message.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.schemas import Latency, Telemetry
from edge_sdk.mqtt.topics import Topics
from edge_sdk.telemetry.metrics import DeviceHealth
from edge_sdk.telemetry.outbox import Outbox, Publisher

log = logging.getLogger(__name__)


class ConnectingPublisher(Publisher, Protocol):
    """A publisher that also tells whether and when it (re)connected (``edge_sdk.mqtt.MqttClient`` is one)."""

    @property
    def connected(self) -> bool: ...

    def add_connect_listener(self, listener: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class _Counters:
    at: float  # monotonic
    frames: int
    dropped: int
    errors: int

    @classmethod
    def from_snapshot(cls, snapshot: dict, at: float) -> "_Counters":
        return cls(at, int(snapshot.get("frames_out", 0)), int(snapshot.get("dropped", 0)),
                   int(snapshot.get("errors", 0)))


def _delta(now: int, before: int) -> int:
    """A counter's growth; a counter that went back (a new pipeline) counts from zero."""
    return now - before if now >= before else now


def _finite(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _window_fields(before: _Counters | None, after: _Counters, snapshot: dict, default_window: float) -> dict:
    """The pipeline part of one message: counters diffed over the window, latency as the snapshot has it."""
    if before is None:  # no baseline (the stats function failed at start): count from the pipeline's start
        frames, dropped, errors = after.frames, after.dropped, after.errors
        window = after.frames / snapshot["fps"] if snapshot.get("fps") else default_window
    else:
        frames = _delta(after.frames, before.frames)
        dropped = _delta(after.dropped, before.dropped)
        errors = _delta(after.errors, before.errors)
        window = after.at - before.at
    window = max(window, 1e-3)
    latency = snapshot.get("latency_ms") or {}
    p50, p95, p99 = (max(_finite(latency.get(key), 3) or 0.0, 0.0) for key in ("p50", "p95", "p99"))
    return {
        "window_s": round(window, 3),
        "frames": frames,
        "fps": round(frames / window, 2),
        "latency_ms": Latency(p50, max(p95, p50), max(p99, p95, p50)),
        "dropped": dropped,
        "errors": errors,
    }


class TelemetryReporter:
    """Reports pipeline and device health every ``interval_s`` through a durable outbox.

    ``pipeline_stats_fn`` returns a :meth:`PipelineStats.snapshot` dict
    (``frames_out``, ``fps``, ``errors``, ``dropped``, ``latency_ms``);
    ``model_version_fn`` returns the running model's version; ``health``
    defaults to a :class:`DeviceHealth` on the outbox's directory. The
    reporter owns its thread: :meth:`start`, then :meth:`stop` (which joins).
    It does not own the outbox or the client; close them after stopping it.
    """

    def __init__(
        self,
        device_id: str,
        outbox: Outbox,
        publisher: ConnectingPublisher,
        pipeline_stats_fn: Callable[[], dict],
        interval_s: float = 10.0,
        topic_prefix: str = "edge",
        *,
        model_version_fn: Callable[[], str | None] | None = None,
        health: DeviceHealth | None = None,
        qos: int = 1,
        max_in_flight: int = 100,
    ) -> None:
        if not interval_s > 0:
            raise EdgeSDKError(f"interval_s must be > 0, got {interval_s!r}")
        if qos not in (1, 2):
            raise EdgeSDKError(f"telemetry goes through the outbox, which needs acknowledged delivery: "
                               f"qos must be 1 or 2, got {qos!r}")
        self.device_id = device_id
        self.topic = Topics(topic_prefix).telemetry(device_id)  # validates the id and the prefix
        self.interval_s = float(interval_s)
        self._outbox = outbox
        self._publisher = publisher
        self._stats_fn = pipeline_stats_fn
        self._model_version_fn = model_version_fn
        self._health = health if health is not None else DeviceHealth(outbox.path.parent)
        self._qos = qos
        self._max_in_flight = max_in_flight
        self._report_lock = threading.Lock()  # report_now() may also be called from outside the thread
        self._seq = 0
        self._drops_to_report = 0
        self._previous: _Counters | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnected = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = False
        self.reports = 0  # messages put into the outbox
        self.failures = 0  # windows that could not be reported (stats, health or storage failed)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> "TelemetryReporter":
        if self._thread is not None:
            raise EdgeSDKError("telemetry reporter already started")
        if not self._listening:  # listeners cannot be removed from the client; register them once
            self._publisher.add_connect_listener(self._on_connect)
            self._outbox.add_ack_listener(self._on_ack)
            self._listening = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"edge-telemetry-{self.device_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and join it. Unsent messages stay in the outbox."""
        self._stop.set()
        self._wake.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.error("telemetry reporter thread did not stop within %s s", timeout)
            return
        self._thread = None

    def __enter__(self) -> "TelemetryReporter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- listeners (on the client's threads: they only set flags, the reporter's thread does the work) ---

    def _on_connect(self) -> None:
        self._reconnected.set()
        self._wake.set()

    def _on_ack(self) -> None:
        self._wake.set()

    def wake(self) -> None:
        """Pump the outbox now (something else, e.g. an OTA progress message, was just put into it)."""
        self._wake.set()

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        self._previous = self._counters()
        next_report = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            if now >= next_report:
                self.report_now()
                next_report += self.interval_s
                if next_report <= now:  # fell behind (suspend, a slow disk): skip the missed windows
                    next_report = now + self.interval_s
            self._pump()
            self._wake.wait(max(next_report - time.monotonic(), 0.0))

    def _counters(self) -> _Counters | None:
        at = time.monotonic()  # before the call: a snapshot reads its counters first, then the slower percentiles
        try:
            return _Counters.from_snapshot(self._stats_fn(), at)
        except Exception:
            log.exception("pipeline_stats_fn failed")
            return None

    def _pump(self) -> None:
        try:
            if self._reconnected.is_set():  # acks for publishes on the old connection may never come
                self._reconnected.clear()
                self._outbox.reset_in_flight()
            # While disconnected the client would only pile messages up in memory (and resend them itself
            # on reconnect, next to the outbox's own resend): leave them on disk until it is back.
            if self._publisher.connected:
                self._outbox.pump(self._publisher, self._max_in_flight)
        except Exception:  # the broker or the disk is away; the next wake-up tries again
            log.exception("cannot pump the telemetry outbox")

    def _build_message(self) -> tuple[str, bytes] | None:
        """``(message_id, payload)`` of the window since the previous call; reads the stats and health once."""
        at = time.monotonic()
        try:
            snapshot = self._stats_fn()
        except Exception:
            log.exception("pipeline_stats_fn failed; skipping this telemetry window")
            return None
        counters = _Counters.from_snapshot(snapshot, at)
        window = _window_fields(self._previous, counters, snapshot, self.interval_s)
        self._previous = counters
        health = self._health.sample()
        self._drops_to_report += self._outbox.take_dropped()  # cleared only once a message carrying them is stored
        message = Telemetry(
            device_id=self.device_id,
            seq=self._seq,
            message_id=str(uuid.uuid4()),
            timestamp=round(time.time(), 3),
            # Schema 1 requires a number; None only means no clock tick passed since the previous sample.
            cpu_percent=_finite(health.cpu_percent, 2) or 0.0,
            memory_percent=_finite(health.memory_percent, 2),
            disk_free_bytes=health.disk_free_bytes,
            temperature_c=_finite(health.temperature_c, 2),
            model_version=self._model_version(),
            outbox_dropped=self._drops_to_report,
            **window,
        )
        payload = message.to_payload()  # validates: a message the fleet would refuse is never stored
        self._seq += 1
        return message.message_id, payload

    def report_now(self) -> bool:
        """Build the current window's message and put it into the outbox (does not pump); False on failure."""
        with self._report_lock:
            try:
                built = self._build_message()
                if built is None:
                    self.failures += 1
                    return False
                message_id, payload = built
                self._outbox.put(self.topic, payload, message_id, qos=self._qos)
                self._drops_to_report = 0
            except Exception:
                self.failures += 1
                log.exception("cannot store a telemetry message")
                return False
            self.reports += 1
            return True

    def _model_version(self) -> str | None:
        if self._model_version_fn is None:
            return None
        try:
            return self._model_version_fn()
        except Exception:
            log.exception("model_version_fn failed")
            return None
