"""MQTT for edge-sdk: the paho wrapper, the topic tree, versioned message schemas, a development broker.

::

    import time
    from edge_sdk.mqtt import MqttClient, MqttConfig, Status

    config = MqttConfig.from_url("mqtt://127.0.0.1:1883")
    topic = config.topics.status("cam-1")
    offline = Status("offline", "cam-1", "raspberry-pi-4", None, "0.1.0", time.time())
    with MqttClient(config, will=(topic, offline.to_payload(), 1, True)) as client:
        client.subscribe(config.topics.ota_job("cam-1"), lambda topic, payload: ...)
        online = Status("online", "cam-1", "raspberry-pi-4", None, "0.1.0", time.time())
        client.publish(topic, online.to_payload(), retain=True)

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
    rollback_statement,
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
    "rollback_statement",
    "validate_id",
]
