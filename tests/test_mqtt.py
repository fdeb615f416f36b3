"""The MQTT layer against real brokers: config, topics, schemas, the client, the last will, the dev broker."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from mqtt_fixtures import mosquitto_broker_fixture  # noqa: F401  (the mosquitto_broker fixture)

from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt import (
    MAX_CHUNK_BYTES,
    MESSAGE_TYPES,
    BundleRef,
    ChunkData,
    ChunkRequest,
    Latency,
    ModelRef,
    MqttClient,
    MqttConfig,
    MqttError,
    OtaJob,
    OtaProgress,
    PayloadError,
    Status,
    Telemetry,
    TopicError,
    Topics,
    backoff_delay,
    decode,
)
from edge_sdk.mqtt.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
SHA = hashlib.sha256(b"bundle").hexdigest()


# -- helpers ----------------------------------------------------------------------------------------


class Inbox:
    """A message handler that records what arrives and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [p for _, p in self.messages]


def fast_config(url: str, **changes) -> MqttConfig:
    return MqttConfig.from_url(url, reconnect_min=0.1, reconnect_max=0.5, connect_timeout=2.0, **changes)


def unique_topic(kind: str = "test") -> str:
    return f"edge-sdk-test/{uuid.uuid4().hex}/{kind}"


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def system_broker_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=0.5):
            return "mqtt://127.0.0.1:1883"
    except OSError as exc:
        pytest.skip(f"no MQTT broker listening on 127.0.0.1:1883 (the system Mosquitto): {exc}")


def round_trip(url: str, **config) -> None:
    """Publish QoS 0, 1 and 2 and a retained message through the broker at ``url`` and check the bytes."""
    topic = unique_topic()
    inbox = Inbox()
    with MqttClient(fast_config(url, **config)) as sub, MqttClient(fast_config(url, **config)) as pub:
        assert sub.wait_connected(5) and pub.wait_connected(5)
        sub.subscribe(topic + "/+", inbox)
        time.sleep(0.2)  # the SUBACK: subscribe() does not wait for it
        payloads = [b"\x00binary\xff", "héllo".encode(), b""]
        for qos, payload in enumerate(payloads):
            assert pub.publish(f"{topic}/{qos}", payload, qos=qos)
        got = inbox.wait_for(3)
        assert sorted(got) == sorted((f"{topic}/{qos}", p) for qos, p in enumerate(payloads))
        # retained: a subscriber that arrives later still gets it (pub, which never subscribed to topic/+)
        acked = threading.Event()
        assert pub.publish(f"{topic}/retained", b"kept", retain=True, on_ack=acked.set)
        assert acked.wait(5)
        late = Inbox()
        pub.subscribe(f"{topic}/retained", late)
        assert late.wait_for(1) == [(f"{topic}/retained", b"kept")]
        assert pub.publish(f"{topic}/retained", b"", retain=True)  # clear it again
        assert pub.flush(5)


# -- config -----------------------------------------------------------------------------------------


def test_config_from_url_reads_every_part():
    c = MqttConfig.from_url("mqtt://dev%40acme:s3cr%2Ft@broker.local:1884", keepalive=10, prefix="acme/edge")
    assert (c.host, c.port, c.tls, c.username, c.password) == ("broker.local", 1884, False, "dev@acme", "s3cr/t")
    assert (c.keepalive, c.prefix, c.protocol, c.max_inflight, c.max_queued) == (10, "acme/edge", "3.1.1", 20, 1000)
    assert (c.reconnect_min, c.reconnect_max) == (1.0, 60.0)
    assert "s3cr" not in repr(c) and c.url == "mqtt://dev%40acme@broker.local:1884"
    s = MqttConfig.from_url("mqtts://[::1]", protocol="5")
    assert (s.host, s.port, s.tls, s.protocol, s.url) == ("::1", 8883, True, "5", "mqtts://[::1]:8883")
    assert MqttConfig.from_url("mqtt://h").port == 1883


def test_config_from_url_rejects_bad_input_with_clear_errors(tmp_path):
    key = tmp_path / "client.key"
    key.write_text("not really a key")
    cases = {
        "http://host:1883": "unsupported scheme 'http'",
        "mqtt://host:99999": "port must be a number",
        "mqtt://host:abc": "port must be a number",
        "mqtt://:1883": "no host",
        "mqtt://host/topic": "unexpected path",
    }
    for url, message in cases.items():
        with pytest.raises(MqttError, match=message):
            MqttConfig.from_url(url)
    with pytest.raises(MqttError, match="key_file.*does not exist"):
        MqttConfig.from_url("mqtts://h", cert_file=key, key_file=tmp_path / "missing.key")
    with pytest.raises(MqttError, match="needs both cert_file and key_file"):
        MqttConfig.from_url("mqtts://h", cert_file=key)
    with pytest.raises(MqttError, match="TLS is off"):
        MqttConfig.from_url("mqtt://h", ca_file=key)
    with pytest.raises(MqttError, match="unknown MQTT option 'keep_alive'"):
        MqttConfig.from_url("mqtt://h", keep_alive=5)
    with pytest.raises(MqttError, match="'protocol'"):
        MqttConfig.from_url("mqtt://h", protocol="3")
    with pytest.raises(MqttError, match="reconnect_max"):
        MqttConfig.from_url("mqtt://h", reconnect_min=5, reconnect_max=1)
    with pytest.raises(MqttError, match="needs a fixed client_id"):
        MqttConfig.from_url("mqtt://h", clean_session=False)
    with pytest.raises(TopicError, match="invalid topic prefix"):
        MqttConfig.from_url("mqtt://h", prefix="edge/#")
    assert issubclass(MqttError, EdgeSDKError)


def test_backoff_is_capped_exponential_with_jitter():
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2 ** (attempt + 1))
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(1.0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150, "no jitter"
    assert max(backoff_delay(50, 1.0, 60.0, rng) for _ in range(500)) > 50  # reaches the cap region
    assert backoff_delay(3, 2.0, 2.0, rng) == 2.0


# -- topics -----------------------------------------------------------------------------------------


def test_topics_build_and_parse_round_trip():
    t = Topics()
    built = {
        "status": t.status("cam-1"),
        "telemetry": t.telemetry("cam-1"),
        "ota_job": t.ota_job("cam-1"),
        "ota_progress": t.ota_progress("cam-1"),
        "ota_chunk_request": t.ota_chunk_request("cam-1"),
        "ota_chunk_data": t.ota_chunk_data("cam-1"),
    }
    assert built == {
        "status": "edge/cam-1/status",
        "telemetry": "edge/cam-1/telemetry",
        "ota_job": "edge/cam-1/ota/job",
        "ota_progress": "edge/cam-1/ota/progress",
        "ota_chunk_request": "edge/cam-1/ota/chunk/request",
        "ota_chunk_data": "edge/cam-1/ota/chunk/data",
    }
    for kind, topic in built.items():
        assert t.parse(topic) == (kind, "cam-1")
        assert t.build(kind, "cam-1") == topic
    assert t.group_ota_job("lobby.cams_2") == "edge/group/lobby.cams_2/ota/job"
    assert t.parse("edge/group/lobby.cams_2/ota/job") == ("group_ota_job", "lobby.cams_2")
    assert t.subscription("status") == "edge/+/status"
    assert t.subscription("group_ota_job") == "edge/group/+/ota/job"
    custom = Topics("acme/site-3")
    assert custom.telemetry("A_1") == "acme/site-3/A_1/telemetry"
    assert custom.parse("acme/site-3/A_1/ota/progress") == ("ota_progress", "A_1")


@pytest.mark.parametrize("bad", ["", "a/b", "cam+1", "cam#", "+", "#", "x" * 65, "cam 1", "café", "group", None])
def test_topics_refuse_invalid_device_ids(bad):
    with pytest.raises(TopicError):
        Topics().status(bad)


@pytest.mark.parametrize("topic", [
    "other/cam-1/status", "edge/cam-1/status/extra", "edge/cam-1/ota", "edge/cam+1/status", "edge//status",
    "edge/group/g1/status", "edge/cam-1/ota/chunk", "edge",
])
def test_topics_parse_refuses_foreign_topics(topic):
    with pytest.raises(TopicError):
        Topics().parse(topic)


@pytest.mark.parametrize("prefix", ["", "/edge", "edge/", "a//b", "ed+ge", "$SYS"])
def test_topics_refuse_bad_prefixes(prefix):
    with pytest.raises(TopicError):
        Topics(prefix)


# -- schemas ----------------------------------------------------------------------------------------


def sample_messages() -> list:
    return [
        Status("online", "cam-1", "raspberry-pi-4", ModelRef("face", "1.2.0", SHA), "0.1.0", 1767225600.25),
        Status("offline", "cam-1", "raspberry-pi-4", None, "0.1.0", 1767225600),
        Telemetry("cam-1", 42, str(uuid.uuid4()), 1767225600.5, 10.0, 29.7, Latency(12.5, 20.0, 31.25), 297, 3, 0,
                  55.5, 61.0, 12_345_678_901, 61.5, "1.2.0", 0),
        Telemetry("cam-1", 0, str(uuid.uuid4()), 1767225600.5, 10.0, 0.0, Latency(0, 0, 0), 0, 0, 0,
                  0.0, 0.0, 0, None, None, 7),
        OtaJob("job-1", BundleRef("face", "1.3.0", SHA, 123456, "raspberry-pi-4"),
               "https://bundles.example.com/face-1.3.0.edgepkg", False, 1767225600.0),
        OtaJob("job-2", BundleRef("face", "1.1.0", SHA, 1, "coral-usb"), "mqtt-chunks", True, 1767225600.0),
        OtaProgress("job-1", "cam-1", "downloading", 1024, 123456, None, 1767225601.0),
        OtaProgress("job-1", "cam-1", "failed", 0, 0, "sha256 mismatch", 1767225602.0),
        ChunkRequest("job-1", 65536, 65536),
        ChunkData("job-1", 65536, os.urandom(4096)),
    ]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_schema_round_trips(message):
    payload = message.to_payload()
    assert type(message).from_payload(payload) == message
    assert MESSAGE_TYPES[message.TYPE] is type(message)
    if not isinstance(message, ChunkData):
        data = json.loads(payload)
        assert data["schema"] == 1 and data["type"] == message.TYPE
        assert payload == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()  # canonical


def test_decode_dispatches_on_topic_kind():
    t = Topics()
    job = sample_messages()[4]
    kind, _group = t.parse(t.group_ota_job("lobby"))
    assert decode(kind, job.to_payload()) == job
    chunk = sample_messages()[-1]
    assert decode(t.parse(t.ota_chunk_data("cam-1")).kind, chunk.to_payload()) == chunk
    with pytest.raises(PayloadError, match="status payload: field 'type'"):
        decode("status", job.to_payload())
    with pytest.raises(PayloadError, match="no message type"):
        decode("weather", b"{}")


def status_dict(**changes):
    data = json.loads(sample_messages()[0].to_payload())
    data.update(changes)
    return data


def encode(data) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize("payload, field, reason", [
    (b"not json", None, "not valid UTF-8 JSON"),
    (b"\xff\xfe", None, "not valid UTF-8 JSON"),
    (b"[1, 2]", "<root>", "expected an object"),
    (encode(status_dict(schema=2)), "schema", "unsupported schema version 2"),
    (encode(status_dict(schema="1")), "schema", "expected an integer"),
    (encode({k: v for k, v in status_dict().items() if k != "schema"}), "schema", "missing"),
    (encode({k: v for k, v in status_dict().items() if k != "device_id"}), "device_id", "missing"),
    (encode(status_dict(state="sleeping")), "state", "expected one of online, offline"),
    (encode(status_dict(timestamp="yesterday")), "timestamp", "expected a number"),
    (encode(status_dict(device_id="cam/1")), "device_id", "invalid device id"),
    (encode(status_dict(model={"name": "face", "version": "1", "sha256": "abc"})), "model.sha256", "64 lowercase"),
    (encode(status_dict(extra=1)), "extra", "unknown field"),
    (encode(status_dict(type="telemetry")), "type", "expected 'status'"),
    (b'{"schema": 1, "schema": 1}', None, "duplicate key"),
    (encode(status_dict()).replace(b"1767225600.25", b"NaN"), None, "not valid JSON"),
    (encode(status_dict(profile="x" * 70_000)), None, "the limit is 65536"),
])
def test_malformed_status_payloads_are_refused_by_name(payload, field, reason):
    with pytest.raises(PayloadError, match=reason) as err:
        Status.from_payload(payload)
    assert err.value.message_type == "status"
    assert err.value.field == field


@pytest.mark.parametrize("cls, changes, field", [
    (Telemetry, {"message_id": "not-a-uuid"}, "message_id"),
    (Telemetry, {"seq": -1}, "seq"),
    (Telemetry, {"fps": True}, "fps"),
    (Telemetry, {"memory_percent": 101}, "memory_percent"),
    (Telemetry, {"latency_ms": {"p50": 5, "p95": 4, "p99": 6}}, "latency_ms.p95"),
    (Telemetry, {"latency_ms": {"p50": 5, "p95": 6}}, "latency_ms.p99"),
    (Telemetry, {"window_s": 0}, "window_s"),
    (OtaJob, {"url": "ftp://x/y"}, "url"),
    (OtaJob, {"rollback": "yes"}, "rollback"),
    (OtaJob, {"bundle": {"name": "f", "version": "1", "sha256": SHA, "size": 0, "profile": "p"}}, "bundle.size"),
    (OtaProgress, {"state": "exploded"}, "state"),
    (OtaProgress, {"bytes_done": 10, "bytes_total": 5}, "bytes_done"),
    (ChunkRequest, {"length": MAX_CHUNK_BYTES + 1}, "length"),
    (ChunkRequest, {"job_id": "a+b"}, "job_id"),
])
def test_malformed_fields_are_refused_by_name(cls, changes, field):
    sample = next(m for m in sample_messages() if type(m) is cls)
    data = json.loads(sample.to_payload())
    data.update(changes)
    with pytest.raises(PayloadError) as err:
        cls.from_payload(encode(data))
    assert err.value.field == field and err.value.message_type == cls.TYPE


def test_invalid_messages_are_never_written():
    status = sample_messages()[0]
    with pytest.raises(PayloadError, match="'state'"):
        replace(status, state="sleeping").to_payload()
    with pytest.raises(PayloadError, match="cannot be written as JSON"):
        replace(status, timestamp=float("nan")).to_payload()
    with pytest.raises(PayloadError, match="'timestamp'"):
        replace(status, timestamp=-1.0).to_payload()
    with pytest.raises(PayloadError, match="'data'"):
        ChunkData("job-1", 0, b"").to_payload()
    with pytest.raises(PayloadError, match="'job_id'"):
        ChunkData("job/1", 0, b"x").to_payload()


def test_chunk_wire_format_and_hash_check():
    data = b"abc" * 1000
    payload = ChunkData("job-7", 2**40, data).to_payload()
    assert payload[:4] == b"EDC1" and payload[4] == 5 and payload[5:10] == b"job-7"
    assert int.from_bytes(payload[10:18], "big") == 2**40
    assert payload[18:50] == hashlib.sha256(data).digest() and payload[50:] == data
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(PayloadError, match="does not match its hash") as err:
        ChunkData.from_payload(tampered)
    assert err.value.field == "sha256"
    with pytest.raises(PayloadError, match="unsupported chunk format version '2'"):
        ChunkData.from_payload(b"EDC2" + payload[4:])
    with pytest.raises(PayloadError, match="not an edge-sdk chunk"):
        ChunkData.from_payload(b'{"schema": 1}')
    with pytest.raises(PayloadError, match="truncated"):
        ChunkData.from_payload(payload[:50])
    big = b"x" * (MAX_CHUNK_BYTES + 1)
    oversized = payload[:18] + hashlib.sha256(big).digest() + big
    with pytest.raises(PayloadError, match="at most 1048576"):
        ChunkData.from_payload(oversized)
    full = ChunkData("j", 0, b"y" * MAX_CHUNK_BYTES)
    assert ChunkData.from_payload(full.to_payload()) == full


# -- the client against real brokers ----------------------------------------------------------------


def test_round_trip_on_the_system_mosquitto():
    round_trip(system_broker_url())


def test_round_trip_on_a_private_mosquitto_mqtt311_and_mqtt5(mosquitto_broker):
    round_trip(mosquitto_broker.url)
    round_trip(mosquitto_broker.url, protocol="5")


def test_on_ack_fires_exactly_once_per_qos1_message(mosquitto_broker):
    topic = unique_topic()
    inbox = Inbox()
    counts = [0] * 100
    lock = threading.Lock()
    threads: set[str] = set()

    def ack(i: int):
        def fire():
            with lock:
                counts[i] += 1
                threads.add(threading.current_thread().name)
        return fire

    with MqttClient(fast_config(mosquitto_broker.url, max_inflight=5)) as client:
        assert client.wait_connected(5)
        client.subscribe(topic, inbox)
        time.sleep(0.2)
        for i in range(100):
            assert client.publish(topic, str(i).encode(), qos=1, on_ack=ack(i))
        assert client.flush(10)
        assert inbox.wait_for(100) and sorted(int(p) for p in inbox.payloads()) == list(range(100))
        time.sleep(0.3)  # any duplicate ack would show up here
    assert counts == [1] * 100
    assert threads == {"edge-sdk-mqtt-acks"}


def test_on_ack_fires_when_the_puback_beats_publish_returning(mosquitto_broker):
    """paho hands out the message id only when publish() returns; the broker may have acked by then."""
    with MqttClient(fast_config(mosquitto_broker.url)) as client:
        assert client.wait_connected(5)
        real_publish = client._paho.publish

        def slow_publish(*args, **kwargs):
            info = real_publish(*args, **kwargs)
            time.sleep(0.1)  # the PUBACK arrives and is handled before we return the mid
            return info

        client._paho.publish = slow_publish
        fired: list[str] = []
        for i in range(3):
            assert client.publish(unique_topic(), b"x", on_ack=lambda: fired.append(threading.current_thread().name))
        assert wait_until(lambda: len(fired) == 3) and client.flush(1)
        time.sleep(0.2)
        assert fired == ["edge-sdk-mqtt-acks"] * 3


def test_on_ack_may_publish_again_from_the_callback(mosquitto_broker):
    """The outbox pattern: each ack publishes the next message. Must not deadlock."""
    topic = unique_topic()
    inbox = Inbox()
    with MqttClient(fast_config(mosquitto_broker.url)) as client:
        assert client.wait_connected(5)
        client.subscribe(topic, inbox)
        time.sleep(0.2)

        def send(i: int) -> None:
            if i < 20:
                client.publish(topic, b"%d" % i, on_ack=lambda: send(i + 1))

        send(0)
        assert len(inbox.wait_for(20)) == 20


def test_handler_exceptions_are_counted_and_delivery_goes_on(mosquitto_broker):
    topic = unique_topic()
    seen: list[bytes] = []

    def handler(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("handler bug")

    with MqttClient(fast_config(mosquitto_broker.url)) as client:
        assert client.wait_connected(5)
        client.subscribe(topic, handler)
        time.sleep(0.2)
        for payload in (b"boom", b"after", b"boom", b"last"):
            client.publish(topic, payload)
        assert wait_until(lambda: len(seen) == 4)
        assert seen == [b"boom", b"after", b"boom", b"last"]
        assert client.handler_errors == 2 and client.connected


def test_reconnect_restores_subscriptions_and_sends_what_was_queued(mosquitto_broker):
    topic = unique_topic()
    inbox = Inbox()
    connects = []
    acks = []
    with MqttClient(fast_config(mosquitto_broker.url, keepalive=2)) as client:
        client.add_connect_listener(lambda: connects.append(time.monotonic()))
        assert client.wait_connected(5)
        client.subscribe(topic, inbox)
        time.sleep(0.2)
        assert client.publish(topic, b"before") and inbox.wait_for(1)

        mosquitto_broker.stop()
        assert wait_until(lambda: not client.connected, 5), "the client did not notice the broker went away"
        for i in range(5):  # queued in memory while the broker is down
            assert client.publish(topic, b"down-%d" % i, qos=1, on_ack=lambda i=i: acks.append(i))
        time.sleep(0.5)  # a few failed reconnect attempts
        mosquitto_broker.start()

        assert client.wait_connected(5), "no reconnect after the broker came back"
        got = inbox.wait_for(6)
        assert [p for _, p in got] == [b"before"] + [b"down-%d" % i for i in range(5)]
        assert wait_until(lambda: sorted(acks) == list(range(5)))
        assert len(connects) == 2
        # the subscription was renewed on the new broker (it has no session from before)
        with MqttClient(fast_config(mosquitto_broker.url)) as other:
            assert other.wait_connected(5)
            other.publish(topic, b"from-another-client")
            assert inbox.wait_for(7)[-1] == (topic, b"from-another-client")


def test_publish_returns_false_when_the_queue_is_full():
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    with MqttClient(fast_config(nobody, max_queued=3)) as client:
        assert not client.wait_connected(0.3)
        results = [client.publish("edge-sdk-test/q", b"x", qos=1) for _ in range(4)]
        assert results == [True, True, True, False]
        assert client.publish("edge-sdk-test/q", b"x", qos=0) is False  # QoS 0 needs a connection
    with pytest.raises(MqttError, match="on_ack needs qos 1 or 2"):
        MqttClient(fast_config(nobody)).publish("t", b"x", qos=0, on_ack=lambda: None)
    with pytest.raises(MqttError, match="wildcards"):
        MqttClient(fast_config(nobody)).publish("t/#", b"x")


WILL_SCRIPT = """
import sys, time
from edge_sdk.mqtt import MqttClient, MqttConfig, Status
url, device = sys.argv[1], sys.argv[2]
config = MqttConfig.from_url(url, keepalive=2)
topic = config.topics.status(device)
offline = Status("offline", device, "generic-x86", None, "0.1.0", time.time())
client = MqttClient(config, will=(topic, offline.to_payload(), 1, True))
online = Status("online", device, "generic-x86", None, "0.1.0", time.time())
client.add_connect_listener(lambda: client.publish(topic, online.to_payload(), retain=True,
                                                   on_ack=lambda: print("online", flush=True)))
client.start()
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_last_will_publishes_retained_offline_status(mosquitto_broker, tmp_path, how):
    """kill -9 closes the socket without DISCONNECT; a frozen process (SIGSTOP) only stops its keepalives.

    The broker must publish the will within 1.5 x keepalive. Mosquitto 2.0 scans keepalives only every
    5 s or so, so for the frozen client the bound is 1.5 x keepalive plus that scan period.
    """
    keepalive = 2.0
    limit = 1.5 * keepalive + (0.5 if how == "kill" else 6.5)
    device = f"dev-{uuid.uuid4().hex[:8]}"
    topics = Topics()
    statuses: list[tuple[float, Status]] = []
    lock = threading.Condition()

    def on_status(topic: str, payload: bytes) -> None:
        with lock:
            statuses.append((time.monotonic(), Status.from_payload(payload)))
            lock.notify_all()

    script = tmp_path / "device.py"
    script.write_text(WILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with MqttClient(fast_config(mosquitto_broker.url)) as watcher:
        assert watcher.wait_connected(5)
        watcher.subscribe(topics.status(device), on_status)
        proc = subprocess.Popen([sys.executable, str(script), mosquitto_broker.url, device], env=env,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "online"
            with lock:
                assert lock.wait_for(lambda: any(s.state == "online" for _, s in statuses), 5)
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            with lock:
                assert lock.wait_for(lambda: statuses[-1][1].state == "offline", limit + 1.0)
                elapsed = statuses[-1][0] - t0
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert elapsed <= limit, f"the will came {elapsed:.2f} s after the device vanished"
        if how == "freeze":
            # The last packet came at most one keepalive before the freeze, so 1.5 x keepalive is >= 1 s away.
            assert elapsed >= 0.8, "a frozen client's will must wait for its keepalive to expire"
    late = Inbox()
    with MqttClient(fast_config(mosquitto_broker.url)) as newcomer:  # retained: a newcomer sees it too
        newcomer.subscribe(topics.status(device), late)
        ((_topic, payload),) = late.wait_for(1)
        assert Status.from_payload(payload).state == "offline" and Status.from_payload(payload).device_id == device


# -- the development broker -------------------------------------------------------------------------


def embedded_round_trip(broker: EmbeddedBroker) -> None:
    inbox = Inbox()
    topic = unique_topic()
    with MqttClient(fast_config(broker.url)) as client:
        assert client.wait_connected(5)
        client.subscribe(topic, inbox)
        time.sleep(0.2)
        acked = threading.Event()
        assert client.publish(topic, b"hello", on_ack=acked.set)
        assert inbox.wait_for(1) == [(topic, b"hello")] and acked.wait(5)


def nobody_listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_embedded_broker_mosquitto_starts_serves_and_stops():
    needs_engine("mosquitto")
    broker = EmbeddedBroker(port=0, engine="mosquitto")
    with broker:
        assert broker.kind == "mosquitto" and broker.running and broker.port > 0
        embedded_round_trip(broker)
    assert not broker.running and wait_until(lambda: nobody_listens(broker.port), 5)


def test_embedded_broker_python_starts_serves_and_stops():
    needs_engine("python")
    before = {t.name for t in threading.enumerate()}
    broker = EmbeddedBroker(port=0, engine="python")
    with broker:
        assert broker.kind == "amqtt" and broker.running
        embedded_round_trip(broker)
    assert not broker.running and nobody_listens(broker.port)
    assert {t.name for t in threading.enumerate()} - before == set()


def test_embedded_broker_refuses_network_exposure_and_busy_ports():
    with pytest.raises(MqttError, match="only listens on loopback"):
        EmbeddedBroker(host="0.0.0.0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(MqttError, match="already in use"):
            EmbeddedBroker(port=s.getsockname()[1]).start()


CLI = """
import argparse, sys
from edge_sdk.cli import broker
parser = argparse.ArgumentParser(prog="edge-sdk")
broker.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def needs_engine(engine: str) -> None:
    from mqtt_fixtures import mosquitto_binary

    if engine == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("no mosquitto binary installed")
    if engine == "python":
        pytest.importorskip("amqtt", reason="the python engine needs amqtt (pip install amqtt)")


@pytest.mark.parametrize("engine", ["mosquitto", "python"])
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_broker_prints_the_url_and_stops_cleanly(engine, stop_signal, tmp_path):
    needs_engine(engine)
    proc = subprocess.Popen([sys.executable, "-c", CLI, "broker", "--port", "0", "--engine", engine],
                            env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("mqtt://127.0.0.1:")
        with MqttClient(fast_config(url)) as client:
            assert client.wait_connected(5)
        proc.send_signal(stop_signal)
        assert proc.wait(10) == 0
        assert wait_until(lambda: nobody_listens(int(url.rsplit(":", 1)[1])), 5), "the broker outlived the command"
        assert list(tmp_path.iterdir()) == []  # the temporary broker config is gone
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
