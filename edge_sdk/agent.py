"""The device agent: the vision pipeline, telemetry and OTA updates composed over one MQTT connection.

What runs, and on which thread:

* the pipeline's own threads (capture, inference, output) over the model of
  the active slot, when a ``source`` is configured;
* paho's network thread: message handlers decode and validate, then hand off
  (a job to the OTA queue, a chunk to the downloader); a malformed or
  oversized payload is logged, counted and ignored;
* the telemetry reporter's thread: pipeline and device health every
  ``telemetry_interval_s``, and every OTA progress message, through the
  durable outbox;
* the OTA manager's thread: one job at a time through the state machine.

The agent's status is retained on ``<prefix>/<device>/status`` and the same
topic carries its last will, so the fleet sees ``offline`` as soon as the
connection drops (a kill) or within 1.5 x keepalive (a network partition).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

from edge_sdk._version import __version__
from edge_sdk.bundle.signing import TrustStore, default_trusted_dir
from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.client import MqttClient, MqttConfig
from edge_sdk.mqtt.schemas import ChunkData, ChunkRequest, ModelRef, OtaJob, OtaProgress, Status, receive
from edge_sdk.mqtt.topics import validate_id
from edge_sdk.ota.download import ChunkDownloader
from edge_sdk.ota.health import HealthPolicy, PipelineSample
from edge_sdk.ota.manager import OtaManager
from edge_sdk.telemetry.outbox import Outbox
from edge_sdk.telemetry.reporter import TelemetryReporter

if TYPE_CHECKING:
    from device_profiles import DeviceProfile
    from edge_sdk.model import Model
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sources import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``edge-sdk agent`` takes. ``state_dir`` holds the slots, the OTA record and the outbox."""

    device_id: str
    profile: "str | DeviceProfile"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    state_dir: Path = Path("edge-agent")
    groups: tuple[str, ...] = ()
    trusted_dir: Path | None = None
    allow_unsigned: bool = False
    initial_bundle: Path | None = None
    source: str | None = None
    source_fps: float | None = None
    loop_source: bool = True
    telemetry_interval_s: float = 10.0
    health: HealthPolicy = HealthPolicy()
    outbox_max_messages: int = 10000
    chunk_bytes: int = 1024 * 1024
    chunk_window: int = 8
    hold: Mapping[str, float] = field(default_factory=dict)
    install_command: str | None = None  # run on each verified update during its health check (see OtaManager)
    install_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        validate_id(self.device_id)
        for group in self.groups:
            validate_id(group, "group id")
        if self.source_fps is not None and not self.source_fps > 0:
            raise EdgeSDKError(f"source_fps must be > 0, got {self.source_fps!r}")
        object.__setattr__(self, "state_dir", Path(self.state_dir))


class PacedSource:
    """A source spec read again and again (``loop``) at most ``fps`` frames per second, like a camera.

    Files and directories end; an agent's pipeline should not. Each pass
    opens the spec anew through :func:`edge_sdk.vision.sources.open_source`.
    """

    live = False

    def __init__(self, spec: str, fps: float | None = None, loop: bool = True) -> None:
        from edge_sdk.vision.sources import open_source, source_kind

        self.spec = spec
        self.name = spec
        self._open_source = open_source
        self._kind = source_kind(spec)
        self._period = 1.0 / fps if fps else 0.0
        self._loop = loop and self._kind in ("images", "glob", "video")
        self._inner = None
        self._next_at = 0.0
        self._index = 0
        self.frames_read = self.frames_dropped = self.reconnects = self.errors = 0

    def open(self) -> None:
        self._inner = self._open_source(self.spec)
        self._inner.open()
        self._next_at = time.monotonic()

    def read(self) -> "Frame | None":
        from dataclasses import replace

        if self._period:  # pace before reading, so that the frame's capture time is when it is delivered
            delay = self._next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_at = max(self._next_at + self._period, time.monotonic() - self._period)
        while self._inner is not None:
            frame = self._inner.read()
            if frame is None:
                self._inner.close()
                if not self._loop or self._inner.frames_read == 0:
                    self._inner = None
                    return None
                self._inner = self._open_source(self.spec)
                self._inner.open()
                continue
            self.frames_read += 1
            frame = replace(frame, index=self._index)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def __enter__(self) -> "PacedSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator["Frame"]:
        while (frame := self.read()) is not None:
            yield frame


class PipelineHost:
    """The running model, inside a pipeline when there is a source; what the OTA manager swaps."""

    def __init__(self, make_sources: Callable[[], Sequence] | None, on_result: Callable | None = None) -> None:
        self._make_sources = make_sources
        self._on_result = on_result
        self._model: "Model | None" = None
        self._pipeline: "Pipeline | None" = None
        self._lock = threading.Lock()

    def running(self) -> "Model | None":
        return self._model

    @property
    def pipeline(self) -> "Pipeline | None":
        return self._pipeline

    def swap(self, model: "Model") -> "Model | None":
        with self._lock:
            old = self._model
            if self._pipeline is not None:
                self._pipeline.swap_model(model)
            self._model = model
            if self._pipeline is None and self._make_sources is not None:
                self._start_pipeline(model)
            return old

    def _start_pipeline(self, model: "Model") -> None:
        from edge_sdk.vision.pipeline import Pipeline

        self._pipeline = Pipeline(model, self._make_sources(), on_result=self._on_result).start()

    def sample(self) -> PipelineSample:
        pipeline = self._pipeline
        if pipeline is None:
            return PipelineSample()
        stats = pipeline.stats
        return PipelineSample(stats.frames_out, stats.errors, tuple(stats.latencies_ms), not pipeline.wait(0))

    def snapshot(self) -> dict:
        pipeline = self._pipeline
        if pipeline is None:
            return {"frames_out": 0, "errors": 0, "dropped": 0, "fps": 0.0,
                    "latency_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0}}
        return pipeline.stats.snapshot(pipeline.sources)

    def stop(self) -> None:
        with self._lock:
            if self._pipeline is not None:
                self._pipeline.stop()
                self._pipeline = None
            if self._model is not None:
                self._model.close()
                self._model = None


class Agent:
    """One device: ``start()``, then ``stop()`` (or ``run()`` until interrupted)."""

    def __init__(self, config: AgentConfig, *, on_result: Callable | None = None) -> None:
        from device_profiles import DeviceProfile, load_profile

        self.config = config
        self.profile = config.profile if isinstance(config.profile, DeviceProfile) else load_profile(config.profile)
        self.topics = config.mqtt.topics
        self.trust = TrustStore.from_dir(config.trusted_dir or default_trusted_dir())
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_payloads = 0
        make_sources = (lambda: [PacedSource(config.source, config.source_fps, config.loop_source)]) \
            if config.source else None
        self.host = PipelineHost(make_sources, on_result)
        self.chunks = ChunkDownloader(self, config.chunk_bytes, config.chunk_window)
        self.ota = OtaManager(self.state_dir, config.device_id, self.profile, self.trust, self.host, self._report,
                              chunks=self.chunks, policy=config.health, allow_unsigned=config.allow_unsigned,
                              on_commit=self.publish_status, hold=config.hold,
                              install_command=config.install_command, install_timeout_s=config.install_timeout_s)
        will = (self.topics.status(config.device_id), self._status("offline").to_payload(), 1, True)
        mqtt = config.mqtt if config.mqtt.client_id else config.mqtt.replace(client_id=f"edge-agent-{config.device_id}")
        self.client = MqttClient(mqtt, will=will)
        self.outbox: Outbox | None = None
        self.reporter: TelemetryReporter | None = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "Agent":
        cfg = self.config
        self.outbox = Outbox(self.state_dir / "outbox.db", cfg.outbox_max_messages)
        if self.ota.slots.active is None and cfg.initial_bundle is not None:
            self.ota.install_initial(cfg.initial_bundle)
        elif cfg.initial_bundle is not None:
            log.info("slot %s is already active; ignoring the initial bundle %s", self.ota.slots.active.slot,
                     cfg.initial_bundle)
        self.ota.recover()
        model = self.ota.load_active()
        if model is not None:
            self.host.swap(model)
            log.info("running %s %s", model.name, model.version)
        self.reporter = TelemetryReporter(cfg.device_id, self.outbox, self.client, self.host.snapshot,
                                          cfg.telemetry_interval_s, self.topics.prefix,
                                          model_version_fn=self._model_version)
        c, t = self.client, self.topics
        c.subscribe(t.ota_job(cfg.device_id), self._on_job)
        for group in cfg.groups:
            c.subscribe(t.group_ota_job(group), self._on_job)
        c.subscribe(t.ota_chunk_data(cfg.device_id), self._on_chunk)
        c.add_connect_listener(self.publish_status)
        self.reporter.start()
        self.ota.start()
        c.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Clean shutdown: offline status, threads joined; queued telemetry stays in the outbox."""
        if not self._started:
            return
        self._started = False
        self.ota.stop()
        self.host.stop()
        if self.reporter is not None:
            self.reporter.report_now()
            self.reporter.stop()
        if self.client.connected:
            self.client.publish(self.topics.status(self.config.device_id), self._status("offline").to_payload(),
                                qos=1, retain=True)
            self.client.flush(2.0)
        self.client.close()
        if self.outbox is not None:
            self.outbox.close()

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status and reports -------------------------------------------------------------------

    def _status(self, state: str) -> Status:
        active = self.ota.slots.active
        model = ModelRef(active.name, active.version, active.sha256) if active is not None and state == "online" \
            else None
        return Status(state, self.config.device_id, self.profile.id, model, __version__, time.time(),
                      tuple(self.config.groups))

    def publish_status(self) -> None:
        """Retained ``online`` status with the running model (on every connect and after every commit)."""
        self.client.publish(self.topics.status(self.config.device_id), self._status("online").to_payload(),
                            qos=1, retain=True)

    def _model_version(self) -> str | None:
        model = self.host.running()
        return model.version if model is not None else None

    def _report(self, progress: OtaProgress) -> None:
        log.info("ota %s: %s %d/%d%s", progress.job_id, progress.state, progress.bytes_done, progress.bytes_total,
                 f" ({progress.error})" if progress.error else "")
        if self.outbox is None:
            return
        self.outbox.put(self.topics.ota_progress(self.config.device_id), progress.to_payload(), str(uuid.uuid4()))
        if self.reporter is not None:
            self.reporter.wake()

    def request_chunk(self, request: ChunkRequest) -> None:
        self.client.publish(self.topics.ota_chunk_request(self.config.device_id), request.to_payload(), qos=1)

    # -- handlers (paho's thread: validate, hand off, never raise) -----------------------------

    def _on_job(self, topic: str, payload: bytes) -> None:
        received = receive(self.topics, OtaJob, topic, payload, log)
        if received is None:
            self.rejected_payloads += 1
            return
        job = received[1]
        log.info("OTA job %s on %s: %s %s", job.job_id, topic, job.bundle.name, job.bundle.version)
        self.ota.submit(job)

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        received = receive(self.topics, ChunkData, topic, payload, log)
        if received is None:
            self.rejected_payloads += 1
            return
        self.chunks.deliver(received[1])
