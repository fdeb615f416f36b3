"""Device telemetry: health metrics, a durable SQLite outbox in front of MQTT, and the reporter thread.

``import edge_sdk.telemetry`` loads the standard library and ``edge_sdk.mqtt``
(its wire schemas and topics; paho comes with it), never numpy or OpenCV. The
MQTT client is the caller's, and the reporter reads the pipeline only through
the stats snapshot function it is given.
"""

from edge_sdk.telemetry.metrics import DeviceHealth, HealthSample
from edge_sdk.telemetry.outbox import Outbox, OutboxMessage, Publisher
from edge_sdk.telemetry.reporter import TelemetryReporter

__all__ = [
    "DeviceHealth",
    "HealthSample",
    "Outbox",
    "OutboxMessage",
    "Publisher",
    "TelemetryReporter",
]
