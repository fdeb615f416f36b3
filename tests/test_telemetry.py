"""Telemetry: the durable outbox, device health parsing, the reporter, all against a real Mosquitto broker.

The broker tests start a private ``mosquitto`` on a free port with persistence
on, stop it to make an outage, and start it again on the same port and
persistence file, so a subscriber with a persistent session misses nothing
that reached the broker. The kill -9 test runs the publishing side in real
child processes and kills one of them mid-stream.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.schemas import Telemetry
from edge_sdk.telemetry import DeviceHealth, Outbox, TelemetryReporter
from edge_sdk.telemetry.metrics import (
    CpuTimes,
    cpu_percent,
    cpu_temperature,
    memory_percent,
    parse_cpu_times,
    parse_meminfo,
    parse_rss_bytes,
)
from edge_sdk.vision.pipeline import PipelineStats

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="needs the mosquitto broker binary")

mqtt = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


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
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.acks: list = []

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private mosquitto with persistence, so that stopping and starting it keeps sessions and queued messages."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.conf.write_text(textwrap.dedent(f"""\
            listener {self.port} 127.0.0.1
            user {getpass.getuser()}
            allow_anonymous true
            persistence true
            persistence_location {directory}/
            persistence_file mosquitto.db
            log_dest file {self.log}
            log_type error
            log_type warning
            log_type notice
            """))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.process.stderr.read().decode()!r}")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto writes its persistence file on the way out
            self.process.wait(10)
        self.process = None


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("needs the mosquitto broker binary")
    directory = tmp_path / "broker"
    directory.mkdir()
    b = Broker(directory)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A QoS 1 subscriber with a persistent MQTT v5 session: what the broker queued for it while away arrives."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
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

    def ids(self, key: str = "id") -> list[str]:
        with self.lock:
            return [json.loads(payload)[key] for payload in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PahoPublisher:
    """The client API the outbox codes against, over raw paho (stand-in until edge_sdk.mqtt.MqttClient lands)."""

    def __init__(self, port: int, client_id: str) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, object] = {}  # mid -> on_ack
        self._early: set[int] = set()  # acks that came before publish() returned
        self._listeners: list = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def add_connect_listener(self, fn) -> None:
        self._listeners.append(fn)

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if not rc.is_failure:
            for fn in self._listeners:
                fn()

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._lock:
            on_ack = self._pending.pop(mid, None)
            if on_ack is None:
                self._early.add(mid)
        if on_ack is not None:
            on_ack()

    def publish(self, topic, payload, qos=1, retain=False, on_ack=None) -> bool:
        if not self.client.is_connected():
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return False
        with self._lock:
            early = info.mid in self._early
            self._early.discard(info.mid)
            if not early and on_ack is not None:
                self._pending[info.mid] = on_ack
        if early and on_ack is not None:
            on_ack()
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _pump_until(outbox: Outbox, publisher, done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; {outbox!r}")
        outbox.pump(publisher)
        time.sleep(0.02)


@needs_broker
def test_broker_outage_loses_nothing(broker, tmp_path):
    topic = "edge/dev-1/telemetry"
    subscriber = Subscriber(broker.port, topic)
    publisher = PahoPublisher(broker.port, "dev-1")
    outbox = Outbox(tmp_path / "outbox.db")
    publisher.add_connect_listener(outbox.reset_in_flight)
    try:
        wait_until(publisher.client.is_connected, 10, "the publisher to connect")
        for i in range(50):  # some of these are in flight when the broker goes
            outbox.put(*message(i))
        outbox.pump(publisher)
        broker.stop()
        stopped = time.monotonic()
        for i in range(50, 200):
            outbox.put(*message(i))
            outbox.pump(publisher)
            time.sleep(0.015)
        wait_until(lambda: time.monotonic() - stopped > 3.0, 5, "the outage")
        assert outbox.pending() > 150  # everything put during the outage is still waiting
        broker.start()
        _pump_until(outbox, publisher, lambda: outbox.pending() == 0, 30, "the outbox to drain")
        wanted = {f"m{i}" for i in range(200)}
        wait_until(lambda: set(subscriber.ids()) >= wanted, 15, "all 200 ids at the subscriber")
        assert set(subscriber.ids()) == wanted
    finally:
        publisher.close()
        subscriber.close()
        outbox.close()


CHILD = r"""
import json, sys, threading, time
sys.path[:0] = [{root!r}, {tests!r}]
from test_telemetry import PahoPublisher
from edge_sdk.telemetry import Outbox

mode, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
outbox = Outbox(path)
publisher = PahoPublisher(port, "dev-kill")
publisher.add_connect_listener(outbox.reset_in_flight)
deadline = time.monotonic() + 10
while not publisher.client.is_connected():
    if time.monotonic() > deadline:
        sys.exit("no connection")
    time.sleep(0.01)

def put_forever():
    i = 0
    while True:
        topic, payload, message_id = "edge/dev-kill/telemetry", json.dumps({{"id": f"k{{i}}"}}).encode(), f"k{{i}}"
        outbox.put(topic, payload, message_id)
        print("put", message_id, flush=True)  # only after put() returned: the message is committed
        i += 1
        time.sleep(0.002)

if mode == "produce":
    threading.Thread(target=put_forever, daemon=True).start()
while True:
    outbox.pump(publisher, max_batch=5)
    if mode == "drain" and outbox.pending() == 0:
        break
    time.sleep(0.01)
print("drained", flush=True)
publisher.close()
outbox.close()
"""


@needs_broker
def test_kill_9_while_publishing_loses_nothing_committed(broker, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), tests=str(ROOT / "tests")))
    path = tmp_path / "outbox.db"
    subscriber = Subscriber(broker.port, "edge/dev-kill/telemetry")
    try:
        child = subprocess.Popen([sys.executable, str(script), "produce", str(path), str(broker.port)],
                                 stdout=subprocess.PIPE, text=True)
        committed: list[str] = []

        def read_stdout() -> None:
            for line in child.stdout:
                if line.startswith("put "):
                    committed.append(line.split()[1])

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        wait_until(lambda: len(subscriber.ids()) >= 100 and len(committed) >= 200, 30,
                   "the child to publish for a while")
        child.send_signal(signal.SIGKILL)  # mid-put and mid-publish: no cleanup of any kind
        child.wait(10)
        reader.join(10)
        assert child.returncode == -signal.SIGKILL

        db = sqlite3.connect(path)
        left = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        db.close()
        received_before_restart = set(subscriber.ids())
        assert left > 0, "nothing was unacknowledged at the kill: the test proved nothing"
        assert not set(committed) <= received_before_restart

        drain = subprocess.run([sys.executable, str(script), "drain", str(path), str(broker.port)],
                               capture_output=True, text=True, timeout=60)
        assert drain.returncode == 0, drain.stderr
        wait_until(lambda: set(subscriber.ids()) >= set(committed), 15, "every committed id at the subscriber")
        received = subscriber.ids()
        highest = max(int(i[1:]) for i in committed)
        assert set(received) <= {f"k{i}" for i in range(highest + 2)}  # at most the one put the kill interrupted
        assert len(received) >= len(set(received))  # duplicates are allowed, each under its own id
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


@needs_broker
def test_reporter_sends_telemetry_windows_with_increasing_seq(broker, tmp_path):
    subscriber = Subscriber(broker.port, "edge/+/telemetry")
    publisher = PahoPublisher(broker.port, "cam-1")
    pipeline = FakePipeline(fps=50.0)
    with Outbox(tmp_path / "outbox.db") as outbox:
        reporter = TelemetryReporter("cam-1", outbox, publisher, pipeline.snapshot, interval_s=0.25,
                                     model_version_fn=lambda: "1.2.0")
        try:
            wait_until(publisher.client.is_connected, 10, "the publisher to connect")
            with reporter:
                wait_until(lambda: len(subscriber.messages) >= 8, 15, "8 telemetry messages")
            wait_until(lambda: outbox.pending() == 0, 5, "the last acks")
        finally:
            publisher.close()
            subscriber.close()
    messages = [Telemetry.from_payload(payload) for payload in subscriber.messages]
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert len({m.message_id for m in messages}) == len(messages)
    assert all(m.device_id == "cam-1" and m.model_version == "1.2.0" for m in messages)
    for m in messages:
        assert m.window_s == pytest.approx(0.25, abs=0.1)
        assert m.fps == pytest.approx(50.0, rel=0.25) and m.frames == pytest.approx(m.fps * m.window_s, abs=1)
        assert 20.0 <= m.latency_ms.p50 <= m.latency_ms.p95 <= m.latency_ms.p99 <= 29.0
        assert 0.0 <= m.cpu_percent <= 100.0 and 0.0 < m.memory_percent < 100.0 and m.disk_free_bytes > 0
        assert m.outbox_dropped == 0
    total_frames = sum(m.frames for m in messages)
    assert sum(m.errors for m in messages) == pytest.approx(total_frames / 100, abs=2)
    assert reporter.failures == 0 and reporter.reports >= len(messages)


@needs_broker
def test_reporter_drains_a_backlog_at_the_brokers_pace(broker, tmp_path):
    """A day stored during an outage must not drain one window per interval: acks refill the window."""
    subscriber = Subscriber(broker.port, "edge/+/telemetry")
    publisher = PahoPublisher(broker.port, "cam-2")
    with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(1000):
            outbox.put(*message(i, "b"))
        reporter = TelemetryReporter("cam-2", outbox, publisher, FakePipeline(10.0).snapshot, interval_s=60.0)
        try:
            wait_until(publisher.client.is_connected, 10, "the publisher to connect")
            with reporter:  # max 100 in flight, interval 60 s: only acks can make this finish in time
                wait_until(lambda: outbox.pending() == 0, 20, "the backlog to drain")
            wait_until(lambda: len(subscriber.messages) >= 1000, 10, "1000 messages")
        finally:
            publisher.close()
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
    pub.add_connect_listener = lambda fn: None
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
