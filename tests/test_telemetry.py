"""Telemetry: the durable outbox, device health parsing and the reporter, the MQTT parts on a real Mosquitto.

The broker tests use the private ``mosquitto`` of ``tests/mqtt_fixtures.py``;
the outage and kill -9 tests turn its persistence on, stop it to make an
outage and start it again on the same port and persistence file, so that a
subscriber with a persistent session misses nothing that reached the broker.
The kill -9 test runs the publishing side in real child processes and kills
one of them mid-stream. Publishing goes through the real ``MqttClient``; the
subscribers are plain paho, independent of the code under test.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from mqtt_fixtures import MosquittoBroker, mosquitto_binary
from mqtt_fixtures import mosquitto_broker_fixture  # noqa: F401  (the mosquitto_broker fixture)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt import MqttClient, MqttConfig
from edge_sdk.mqtt.schemas import Telemetry
from edge_sdk.telemetry import DeviceHealth, Outbox, TelemetryReporter
from edge_sdk.telemetry.metrics import (
    cpu_percent,
    cpu_temperature,
    memory_percent,
    parse_cpu_times,
    parse_meminfo,
    parse_rss_bytes,
)
from edge_sdk.vision.pipeline import PipelineStats

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


# --------------------------------------------------------------------------- a fake publisher


class HoldingPublisher:
    """Records publishes and acks only when the test says so, like a broker that is slow to answer."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.connected = accept
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.acks: list = []

    def add_connect_listener(self, fn) -> None:
        pass

    def publish(self, topic, payload, qos=1, retain=False, on_ack=None) -> bool:
        if not self.accept:
            return False
        self.sent.append((topic, bytes(payload), qos, retain))
        self.acks.append(on_ack)
        return True

    def ack(self, index: int) -> None:
        self.acks[index]()

    def ids(self) -> list[str]:
        return [json.loads(payload)["id"] for _, payload, _, _ in self.sent]


def message(i: int, prefix: str = "m") -> tuple[str, bytes, str]:
    message_id = f"{prefix}{i}"
    return "edge/dev-1/telemetry", json.dumps({"id": message_id}).encode(), message_id


# --------------------------------------------------------------------------- outbox, no broker


def test_outbox_sends_in_seq_order_and_deletes_only_on_ack(tmp_path):
    with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(5):
            assert outbox.put(*message(i))
        pub = HoldingPublisher()
        assert outbox.pump(pub, max_batch=3) == 3
        assert pub.ids() == ["m0", "m1", "m2"]
        assert outbox.pump(pub, max_batch=3) == 0  # window full: nothing more until acks come
        assert outbox.pending() == 5

        pub.ack(1)  # acks may come out of order; only the acked row goes
        assert outbox.pending() == 4
        stored = outbox.peek()
        assert [m.message_id for m in stored] == ["m0", "m2", "m3", "m4"]
        assert [(m.in_flight, m.attempts) for m in stored] == [(True, 1), (True, 1), (False, 0), (False, 0)]
        assert stored[0].payload == message(0)[1] and stored[0].qos == 1 and stored[0].retain is False

        assert outbox.pump(pub, max_batch=3) == 1
        assert pub.ids()[3:] == ["m3"]
        pub.ack(1)  # a second ack for the same message deletes nothing else
        assert outbox.pending() == 4
        for i in (0, 2, 3):
            pub.ack(i)
        assert [m.message_id for m in outbox.peek()] == ["m4"]
        assert outbox.pump(pub) == 1 and pub.ids()[4:] == ["m4"]
        pub.ack(4)
        assert outbox.pending() == 0 and outbox.in_flight() == 0


def test_outbox_full_drops_oldest_and_counts_them_across_restarts(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path, max_messages=3) as outbox:
        for i in range(5):
            outbox.put(*message(i))
        assert [m.message_id for m in outbox.peek()] == ["m2", "m3", "m4"]
    with Outbox(path, max_messages=3) as outbox:
        assert outbox.take_dropped() == 2  # persisted, then reset
        assert outbox.take_dropped() == 0
        pub = HoldingPublisher()
        outbox.pump(pub, max_batch=1)  # m2 is in flight: the oldest idle message goes first
        outbox.put(*message(5))
        assert [m.message_id for m in outbox.peek()] == ["m2", "m4", "m5"]
        assert outbox.take_dropped() == 1
    with Outbox(path, max_messages=3) as outbox:
        assert outbox.take_dropped() == 0


def test_outbox_reopened_after_close_keeps_and_resends_everything_unacked(tmp_path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    for i in range(4):
        outbox.put(*message(i))
    first = HoldingPublisher()
    assert outbox.pump(first) == 4
    first.ack(0)
    outbox.close()
    first.ack(1)  # a late ack after close changes nothing on disk: m1 is sent again (a duplicate, never a loss)

    with Outbox(path) as reopened:
        assert reopened.pending() == 3
        assert [(m.message_id, m.in_flight, m.attempts) for m in reopened.peek()] == [
            ("m1", False, 1), ("m2", False, 1), ("m3", False, 1)]
        second = HoldingPublisher()
        assert reopened.pump(second) == 3
        assert second.ids() == ["m1", "m2", "m3"]
        assert [m.attempts for m in reopened.peek()] == [2, 2, 2]


def test_outbox_reconnect_resends_unacked_and_refused_publish_stays_pending(tmp_path):
    with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(3):
            outbox.put(*message(i))
        down = HoldingPublisher(accept=False)
        assert outbox.pump(down) == 0
        assert outbox.in_flight() == 0 and [m.attempts for m in outbox.peek()] == [0, 0, 0]

        pub = HoldingPublisher()
        assert outbox.pump(pub) == 3
        assert outbox.reset_in_flight() == 3  # the client reconnected: those acks will not come
        assert outbox.pump(pub) == 3
        assert pub.ids() == ["m0", "m1", "m2", "m0", "m1", "m2"]
        pub.ack(0)  # the old connection's late ack still counts
        pub.ack(3)
        assert [m.message_id for m in outbox.peek()] == ["m1", "m2"]


def test_outbox_refuses_qos0_duplicate_ids_and_a_second_owner(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        with pytest.raises(EdgeSDKError, match="QoS 0"):
            outbox.put("t", b"x", "a", qos=0)
        with pytest.raises(EdgeSDKError, match="cannot publish to topic 'edge/\\+/telemetry'"):
            outbox.put("edge/+/telemetry", b"x", "a")
        assert outbox.put("t", b"x", "a") is True
        assert outbox.put("t", b"y", "a") is False  # a retry after a crash keeps the stored copy
        assert outbox.pending() == 1
        with pytest.raises(EdgeSDKError, match="another process already uses this telemetry outbox"):
            Outbox(path)
    with pytest.raises(EdgeSDKError, match="is closed"):
        outbox.put("t", b"x", "b")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_outbox_ack_timeout_resends_without_reconnect(tmp_path):
    with Outbox(tmp_path / "outbox.db", ack_timeout_s=0.2) as outbox:
        outbox.put(*message(0))
        pub = HoldingPublisher()
        assert outbox.pump(pub) == 1 and outbox.pump(pub) == 0
        time.sleep(0.25)
        assert outbox.pump(pub) == 1
        assert pub.ids() == ["m0", "m0"]


# --------------------------------------------------------------------------- device health


PI_STAT = """cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
intr 1462898 28 0 0
"""
PI_STAT_LATER = """cpu  10132253 290696 3084769 46828683 16733 0 25195 0 0 0
cpu0 1393380 32966 572106 13343492 6180 0 17875 0 0 0
"""
OLD_KERNEL_MEMINFO = """MemTotal:        1000000 kB
MemFree:          200000 kB
Buffers:           50000 kB
Cached:           250000 kB
HugePages_Total:       0
"""
JETSON_MEMINFO = """MemTotal:        7859964 kB
MemFree:          512000 kB
MemAvailable:    3929982 kB
"""
STATUS = """Name:\tpython3
VmPeak:\t  812344 kB
VmRSS:\t  153600 kB
Threads:\t12
"""


def test_health_parsers_on_sample_proc_text():
    before, after = parse_cpu_times(PI_STAT), parse_cpu_times(PI_STAT_LATER)
    # busy: +100 user +50 system; idle: +200 idle +50 iowait
    assert after.total - before.total == 400 and after.busy - before.busy == 150
    assert cpu_percent(before, after) == pytest.approx(37.5)
    assert cpu_percent(after, after) is None
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        parse_cpu_times("intr 1 2 3\n")

    assert parse_meminfo(JETSON_MEMINFO)["MemAvailable"] == 3929982 * 1024
    assert memory_percent(parse_meminfo(JETSON_MEMINFO)) == pytest.approx(50.0)
    assert parse_meminfo(OLD_KERNEL_MEMINFO)["HugePages_Total"] == 0
    assert memory_percent(parse_meminfo(OLD_KERNEL_MEMINFO)) == pytest.approx(50.0)  # free+buffers+cached
    assert memory_percent({}) is None
    assert parse_rss_bytes(STATUS) == 153600 * 1024 and parse_rss_bytes("Name:\tx\n") is None
    assert cpu_temperature({}) is None
    assert cpu_temperature({"PMIC-Die": 100.0, "CPU-therm": 41.5, "GPU-therm": 40.0}) == 41.5
    assert cpu_temperature({"acpitz": 30.0, "iwlwifi_1": 45.0}) == 45.0


def test_device_health_reads_a_sample_tree(tmp_path):
    proc, thermal = tmp_path / "proc", tmp_path / "thermal"
    (proc / "self").mkdir(parents=True)
    (proc / "stat").write_text(PI_STAT)
    (proc / "meminfo").write_text(JETSON_MEMINFO)
    (proc / "self" / "status").write_text(STATUS)
    for i, (kind, temp) in enumerate([("PMIC-Die", "100000"), ("CPU-therm", "48500"), ("GPU-therm", "junk")]):
        (thermal / f"thermal_zone{i}").mkdir(parents=True)
        (thermal / f"thermal_zone{i}" / "type").write_text(kind + "\n")
        (thermal / f"thermal_zone{i}" / "temp").write_text(temp + "\n")
    health = DeviceHealth(tmp_path, proc_root=proc, thermal_root=thermal)
    (proc / "stat").write_text(PI_STAT_LATER)
    sample = health.sample()
    assert sample.cpu_percent == pytest.approx(37.5)
    assert sample.memory_percent == pytest.approx(50.0)
    assert sample.process_rss_bytes == 153600 * 1024
    assert sample.temperature_c == 48.5 and sample.temperatures_c == {"PMIC-Die": 100.0, "CPU-therm": 48.5}
    assert abs(sample.disk_free_bytes - shutil.disk_usage(tmp_path).free) < 100 * 2**20
    assert health.sample().cpu_percent == pytest.approx(37.5)  # no tick since: the last figure, not a 0/0

    bare = DeviceHealth(tmp_path, proc_root=tmp_path / "none", thermal_root=tmp_path / "none").sample()
    assert (bare.cpu_percent, bare.memory_percent, bare.temperature_c, bare.process_rss_bytes) == (None,) * 4


def test_device_health_on_this_machine(tmp_path):
    health = DeviceHealth(tmp_path)
    sum(i * i for i in range(300_000))  # let the CPU figure cover some work
    time.sleep(0.05)
    sample = health.sample()
    assert sample.cpu_percent is not None and 0.0 <= sample.cpu_percent <= 100.0
    assert 0.0 < sample.memory_percent < 100.0
    assert sample.process_rss_bytes > 10 * 1024 * 1024  # this interpreter with numpy loaded
    assert sample.disk_free_bytes > 0


# --------------------------------------------------------------------------- a real broker


@pytest.fixture
def persistent_broker(tmp_path_factory):
    """The shared :class:`MosquittoBroker`, with persistence on, so that a restart keeps sessions and queues.

    ``user`` keeps mosquitto from switching to the ``mosquitto`` account when
    started as root, which could not write the persistence file here (it would
    then silently come back with no sessions at all).
    """
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("no mosquitto binary on PATH or in /usr/sbin (apt install mosquitto)")
    broker = MosquittoBroker(binary, tmp_path_factory.mktemp("mosquitto"))
    config = broker.config.read_text().replace("persistence false\n", "")
    broker.config.write_text(config + f"persistence true\npersistence_location {broker.workdir}/\n"
                                      f"user {getpass.getuser()}\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A raw paho QoS 1 subscriber with a persistent MQTT 5 session: what the broker queued for it arrives."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list[bytes] = []
        self.topics: set[str] = set()
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, flags, rc, props: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber did not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append(msg.payload)
            self.topics.add(msg.topic)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)

    def ids(self, key: str = "id") -> list[str]:
        return [json.loads(payload)[key] for payload in self.payloads()]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def client_for(broker: MosquittoBroker, client_id: str) -> MqttClient:
    """A started MqttClient that reconnects quickly, as a device's would after a short outage."""
    config = MqttConfig.from_url(broker.url, client_id=client_id, keepalive=5, reconnect_min=0.1, reconnect_max=0.5)
    client = MqttClient(config)
    client.start()
    assert client.wait_connected(10), f"no connection to {broker.url}"
    return client


def test_broker_outage_loses_nothing(persistent_broker, tmp_path):
    broker = persistent_broker
    subscriber = Subscriber(broker.port, "edge/dev-1/telemetry")
    client = client_for(broker, "dev-1")
    outbox = Outbox(tmp_path / "outbox.db")
    client.add_connect_listener(outbox.reset_in_flight)  # the reporter does this on its own thread

    def pump() -> None:
        if client.connected:
            outbox.pump(client)

    try:
        for i in range(50):  # some of these are in flight when the broker goes
            outbox.put(*message(i))
        pump()
        broker.stop()
        stopped = time.monotonic()
        for i in range(50, 200):
            outbox.put(*message(i))
            pump()
            time.sleep(0.015)
        wait_until(lambda: time.monotonic() - stopped > 3.0, 5, "the outage")
        assert not client.connected
        assert outbox.pending() >= 150  # everything put during the outage waits on disk
        broker.start()
        deadline = time.monotonic() + 30
        while outbox.pending():
            assert time.monotonic() < deadline, f"the outbox did not drain: {outbox!r}"
            pump()
            time.sleep(0.02)
        wanted = {f"m{i}" for i in range(200)}
        wait_until(lambda: set(subscriber.ids()) >= wanted, 15, "all 200 ids at the subscriber")
        assert set(subscriber.ids()) == wanted
    finally:
        client.close()
        subscriber.close()
        outbox.close()


CHILD = r"""
import json, sys, threading, time
sys.path[:0] = [{root!r}]
from edge_sdk.mqtt import MqttClient, MqttConfig
from edge_sdk.telemetry import Outbox

mode, path, url = sys.argv[1], sys.argv[2], sys.argv[3]
outbox = Outbox(path)
client = MqttClient(MqttConfig.from_url(url, client_id="dev-kill", reconnect_min=0.1, reconnect_max=0.5))
client.add_connect_listener(outbox.reset_in_flight)
client.start()
if not client.wait_connected(10):
    sys.exit("no connection")

def put_forever():
    i = 0
    while True:
        message_id = f"k{{i}}"
        outbox.put("edge/dev-kill/telemetry", json.dumps({{"id": message_id}}).encode(), message_id)
        print("put", message_id, flush=True)  # only after put() returned: the message is committed
        i += 1
        time.sleep(0.001)

if mode == "produce":
    threading.Thread(target=put_forever, daemon=True).start()
while True:
    outbox.pump(client, max_batch=5)  # slower than the puts: a backlog, some in flight, at the kill
    if mode == "drain" and outbox.pending() == 0:
        break
    time.sleep(0.02)
client.close()
outbox.close()
"""


@pytest.mark.parametrize("broker_up", [True, False], ids=["broker-up", "broker-down"])
def test_kill_9_while_publishing_loses_nothing_committed(persistent_broker, tmp_path, broker_up):
    """Kill the publishing process mid-put and mid-publish; a fresh process on the same file delivers the rest.

    With the broker down at the kill, the client holds handed-over messages only
    in memory, so an outbox that forgot a message before its ack loses it here.
    """
    broker = persistent_broker
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    path = tmp_path / "outbox.db"
    subscriber = Subscriber(broker.port, "edge/dev-kill/telemetry")
    try:
        child = subprocess.Popen([sys.executable, str(script), "produce", str(path), broker.url],
                                 stdout=subprocess.PIPE, text=True)
        committed: list[str] = []

        def read_stdout() -> None:
            for line in child.stdout:
                if line.startswith("put "):
                    committed.append(line.split()[1])

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        wait_until(lambda: len(subscriber.ids()) >= 50 and len(committed) >= 100, 30,
                   "the child to publish for a while")
        if not broker_up:
            broker.stop()
            before = len(committed)
            wait_until(lambda: len(committed) >= before + 100, 30, "puts during the outage")
        child.send_signal(signal.SIGKILL)  # mid-put and mid-publish: no cleanup of any kind
        child.wait(10)
        reader.join(10)
        assert child.returncode == -signal.SIGKILL
        if not broker_up:
            broker.start()

        db = sqlite3.connect(path)
        left = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        db.close()
        assert left > 0, "nothing was unacknowledged at the kill: the test proved nothing"
        assert not set(committed) <= set(subscriber.ids()), "everything had arrived before the kill"

        drain = subprocess.run([sys.executable, str(script), "drain", str(path), broker.url],
                               capture_output=True, text=True, timeout=60)
        assert drain.returncode == 0, drain.stderr
        wait_until(lambda: set(subscriber.ids()) >= set(committed), 15, "every committed id at the subscriber")
        highest = max(int(i[1:]) for i in committed)
        assert set(subscriber.ids()) <= {f"k{i}" for i in range(highest + 2)}  # plus the put the kill cut short
        by_id: dict[str, set[bytes]] = {}
        for payload in subscriber.payloads():
            by_id.setdefault(json.loads(payload)["id"], set()).add(payload)
        assert all(len(copies) == 1 for copies in by_id.values())  # a duplicate is the same message
    finally:
        subscriber.close()


# --------------------------------------------------------------------------- the reporter


class FakePipeline:
    """Stands in for a running pipeline: a real PipelineStats advancing at ``fps`` frames per second."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.stats = PipelineStats()
        self.start = time.monotonic()

    def snapshot(self) -> dict:
        frames = int((time.monotonic() - self.start) * self.fps)
        for i in range(frames - self.stats.frames_out):
            self.stats.latencies_ms.append(20.0 + (i % 10))
        self.stats.frames_in = self.stats.frames_out = frames
        self.stats.errors = frames // 100
        return self.stats.snapshot()


def test_reporter_sends_telemetry_windows_with_increasing_seq(mosquitto_broker, tmp_path):
    subscriber = Subscriber(mosquitto_broker.port, "edge/+/telemetry")
    client = client_for(mosquitto_broker, "cam-1")
    pipeline = FakePipeline(fps=50.0)
    with Outbox(tmp_path / "outbox.db") as outbox:
        reporter = TelemetryReporter("cam-1", outbox, client, pipeline.snapshot, interval_s=0.25,
                                     model_version_fn=lambda: "1.2.0")
        try:
            with reporter:
                wait_until(lambda: len(subscriber.payloads()) >= 8, 15, "8 telemetry messages")
            wait_until(lambda: outbox.pending() == 0, 5, "the last acks")
        finally:
            client.close()
            subscriber.close()
    assert subscriber.topics == {"edge/cam-1/telemetry"}
    messages = [Telemetry.from_payload(payload) for payload in subscriber.payloads()]
    assert [m.seq for m in messages] == list(range(len(messages)))
    spans = [b.timestamp - a.timestamp for a, b in zip(messages, messages[1:], strict=False)]
    assert sum(m.window_s for m in messages[1:]) == pytest.approx(sum(spans), abs=0.05)  # windows tile the time
    assert len({m.message_id for m in messages}) == len(messages)
    assert all(m.device_id == "cam-1" and m.model_version == "1.2.0" for m in messages)
    for m in messages:
        assert 0.2 <= m.window_s <= 3.0  # 0.25 s, later when a shared machine stalls the thread (or its fsync)
        assert m.fps == pytest.approx(50.0, rel=0.25) and m.frames == pytest.approx(m.fps * m.window_s, abs=1)
        assert 20.0 <= m.latency_ms.p50 <= m.latency_ms.p95 <= m.latency_ms.p99 <= 29.0
        assert 0.0 <= m.cpu_percent <= 100.0 and 0.0 < m.memory_percent < 100.0 and m.disk_free_bytes > 0
        assert m.outbox_dropped == 0
    total_frames = sum(m.frames for m in messages)
    assert sum(m.errors for m in messages) == pytest.approx(total_frames / 100, abs=2)
    assert reporter.failures == 0 and reporter.reports >= len(messages)


def test_reporter_keeps_every_window_across_a_broker_restart(persistent_broker, tmp_path):
    broker = persistent_broker
    subscriber = Subscriber(broker.port, "edge/cam-4/telemetry")
    client = client_for(broker, "cam-4")
    with Outbox(tmp_path / "outbox.db") as outbox:
        reporter = TelemetryReporter("cam-4", outbox, client, FakePipeline(30.0).snapshot, interval_s=0.1)
        try:
            with reporter:
                wait_until(lambda: len(subscriber.payloads()) >= 5, 10, "the first windows")
                broker.stop()
                wait_until(lambda: reporter.reports >= 25 + 5, 10, "windows reported during the outage")
                assert outbox.pending() >= 20  # stored on disk while the broker is away
                broker.start()
                wait_until(lambda: client.connected, 10, "the reconnect")
                wait_until(lambda: outbox.pending() <= 1, 10, "the stored windows to go out")
            wait_until(lambda: outbox.pending() == 0, 5, "the last acks")

            def seqs() -> set[int]:
                return {Telemetry.from_payload(payload).seq for payload in subscriber.payloads()}

            wait_until(lambda: seqs() >= set(range(reporter.reports)), 10, "every window at the subscriber")
        finally:
            client.close()
            subscriber.close()
    assert seqs() == set(range(reporter.reports))  # every window, duplicates allowed


def test_reporter_drains_a_backlog_at_the_brokers_pace(mosquitto_broker, tmp_path):
    """A day stored during an outage must not drain one window per interval: acks refill the window."""
    subscriber = Subscriber(mosquitto_broker.port, "edge/+/telemetry")
    client = client_for(mosquitto_broker, "cam-2")
    with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(1000):
            outbox.put(*message(i, "b"))
        reporter = TelemetryReporter("cam-2", outbox, client, FakePipeline(10.0).snapshot, interval_s=60.0)
        try:
            with reporter:  # at most 100 in flight and one report a minute: only acks can drain this in time
                wait_until(lambda: outbox.pending() == 0, 20, "the backlog to drain")
            wait_until(lambda: len(subscriber.payloads()) >= 1000, 10, "1000 messages")
        finally:
            client.close()
            subscriber.close()
    assert subscriber.ids() == [f"b{i}" for i in range(1000)]  # in order, once each


def test_reporter_skips_a_window_when_the_stats_fail_and_goes_on(tmp_path):
    calls = []

    def flaky() -> dict:
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError("pipeline gone")
        return PipelineStats().snapshot()

    pub = HoldingPublisher()
    with Outbox(tmp_path / "outbox.db") as outbox:
        reporter = TelemetryReporter("cam-3", outbox, pub, flaky, interval_s=1.0)
        assert reporter.report_now() is True
        assert reporter.report_now() is False
        assert reporter.report_now() is True
        assert outbox.pending() == 2 and reporter.failures == 1
        seqs = [json.loads(m.payload)["seq"] for m in outbox.peek()]
        assert seqs == [0, 1]
    with pytest.raises(EdgeSDKError, match="interval_s"):
        TelemetryReporter("cam-3", outbox, pub, flaky, interval_s=0)
    with pytest.raises(EdgeSDKError, match="qos must be 1 or 2"):
        TelemetryReporter("cam-3", outbox, pub, flaky, qos=0)


def test_reporter_reports_what_the_full_outbox_dropped(tmp_path):
    pub = HoldingPublisher()
    with Outbox(tmp_path / "outbox.db", max_messages=3) as outbox:
        for i in range(5):
            outbox.put(*message(i))  # two dropped already
        reporter = TelemetryReporter("cam-5", outbox, pub, PipelineStats().snapshot, interval_s=1.0)
        assert reporter.report_now() and reporter.report_now()
        reports = [json.loads(m.payload) for m in outbox.peek() if m.topic == reporter.topic]
        # the first report carries the 2 earlier drops; storing it dropped one more, which the second carries
        assert [r["outbox_dropped"] for r in reports] == [2, 1]
        assert outbox.take_dropped() == 1  # storing the second dropped another, for the next report
