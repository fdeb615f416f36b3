"""MQTT for edge-sdk: the paho wrapper, the topic tree, versioned message schemas, a development broker.

::

    from edge_sdk.mqtt import MqttClient, MqttConfig, Status

    config = MqttConfig.from_url("mqtt://127.0.0.1:1883")
    with MqttClient(config) as client:
        client.wait_connected(5)
        client.publish(config.topics.status("cam-1"), status.to_payload(), retain=True)

The broker (:mod:`edge_sdk.mqtt.broker`) is imported on demand, not here.
"""

from edge_sdk.mqtt.client import MqttClient, MqttConfig, backoff_delay
from edge_sdk.mqtt.schemas import (
    MAX_CHUNK_BYTES,
    MAX_JSON_BYTES,
    MESSAGE_TYPES,
    OTA_STATES,
    SCHEMA_VERSION,
    BundleRef,
    ChunkData,
    ChunkRequest,
    Latency,
    Message,
    ModelRef,
    OtaJob,
    OtaProgress,
    PayloadError,
    Status,
    Telemetry,
    decode,
)
from edge_sdk.mqtt.topics import KINDS, MqttError, ParsedTopic, TopicError, Topics, validate_id

__all__ = [
    "KINDS",
    "MAX_CHUNK_BYTES",
    "MAX_JSON_BYTES",
    "MESSAGE_TYPES",
    "OTA_STATES",
    "SCHEMA_VERSION",
    "BundleRef",
    "ChunkData",
    "ChunkRequest",
    "Latency",
    "Message",
    "ModelRef",
    "MqttClient",
    "MqttConfig",
    "MqttError",
    "OtaJob",
    "OtaProgress",
    "ParsedTopic",
    "PayloadError",
    "Status",
    "Telemetry",
    "TopicError",
    "Topics",
    "backoff_delay",
    "decode",
    "validate_id",
]
