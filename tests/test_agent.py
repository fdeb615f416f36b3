"""Agents as real processes on a real (private) Mosquitto broker: deploys, kills, refusals, canaries, last will.

Every agent here is ``python -m edge_sdk agent`` in its own process, so that
``kill -9`` is a real kill; the fleet side is the real ``edge-sdk deploy`` and
``edge-sdk fleet status`` commands. Each test uses its own topic prefix.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from edge_sdk.bundle.signing import SigningKey, TrustStore, generate_keypair
from edge_sdk.fleet import BundleServer
from edge_sdk.fleet.rollout import plan_waves
from edge_sdk.mqtt import BundleRef, OtaJob
from edge_sdk.ota import file_sha256
from mqtt_fixtures import private_broker
from ota_fixtures import REPO, RESTART_OUTCOMES, AgentProcess, Collector, make_bundles, tampered_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from private_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    pair = generate_keypair(root / "keys")
    trusted = root / "trusted"
    TrustStore.from_dir(trusted).add_file(pair.public_path, trusted)
    bundles = make_bundles(root / "bundles", SigningKey.from_file(pair.private_path))
    return {"root": root, "trusted": trusted, "bundles": bundles, "key": pair.private_path}


@pytest.fixture(scope="module")
def server():
    with BundleServer() as s:
        yield s


@pytest.fixture
def fleet(broker, world, tmp_path):
    """Start agents with ``fleet.agent(...)``; everything started is stopped after the test."""

    class Fleet:
        prefix = f"t{uuid.uuid4().hex[:8]}"

        def __init__(self):
            self.agents: list[AgentProcess] = []
            self.collector = Collector(broker.url, self.prefix)

        def agent(self, device, *extra, trusted=None, source=True, initial=True) -> AgentProcess:
            args = ["--topic-prefix", self.prefix, "--health-window", "1", "--telemetry-interval", "1", *extra]
            if initial:
                args += ["--bundle", str(world["bundles"].v1)]
            if source:
                args += ["--source", str(world["bundles"].images), "--fps", "20"]
            a = AgentProcess(broker.url, device, tmp_path / device, trusted or world["trusted"], *args)
            self.agents.append(a)
            return a.start()

        def online(self, *devices, version="1.0.0", timeout=60):
            def ready():  # version None: online without a model
                return all((s := self.collector.status.get(d)) is not None and s.state == "online" and (
                    s.model.version == version if s.model else version is None) for d in devices)
            self.collector.wait_for(ready, timeout, f"{devices} online on {version}")

        def publish_job(self, device, path, url, version="1.1.0", job_id=None, profile="generic-x86"):
            job = OtaJob(job_id or f"job-{uuid.uuid4().hex[:8]}",
                         BundleRef("digits", version, file_sha256(path), path.stat().st_size, profile), url, False,
                         time.time())
            self.collector.client.publish(self.collector.topics.ota_job(device), job.to_payload(), qos=1)
            return job

        def cli(self, *args, timeout=180):
            return subprocess.run([sys.executable, "-m", "edge_sdk", *args, "--broker", broker.url,
                                   "--topic-prefix", self.prefix], capture_output=True, text=True, timeout=timeout,
                                  cwd=REPO)

    f = Fleet()
    yield f
    for a in f.agents:
        a.stop()
    f.collector.close()


def _logs(fleet) -> str:
    return "\n".join(f"--- {a.device}\n{a.log()[-3000:]}" for a in fleet.agents)


# -- end to end --------------------------------------------------------------------------------


def test_deploy_to_a_group_commits_everywhere_and_telemetry_flows(fleet, world, tmp_path):
    devices = ["cam-1", "cam-2", "cam-3"]
    for d in devices:
        fleet.agent(d, "--group", "line-1")
    fleet.online(*devices)
    registry = tmp_path / "fleet.db"
    done = fleet.cli("deploy", str(world["bundles"].v2), "--group", "line-1", "--canary", "33%",
                     "--trusted-dir", str(world["trusted"]), "--registry", str(registry), "--timeout", "90", "--json")
    assert done.returncode == 0, done.stderr + _logs(fleet)
    result = json.loads(done.stdout)
    assert result["committed"] == 3 and not result["halted"]
    assert sorted(d["wave"] for d in result["devices"].values()) == [0, 1, 1]  # one canary, then the rest
    assert "canary wave" in done.stderr
    fleet.online(*devices, version="1.1.0")
    c = fleet.collector
    c.wait_for(lambda: {t["device_id"] for t in c.telemetry if t["model_version"] == "1.1.0" and t["frames"] > 0}
               == set(devices), 30, "telemetry from the new model")
    # the states each device went through, in order, all persisted and reported
    for d in devices:
        states = [s for s in c.states(result["job_id"], d) if s != "downloading"]
        assert states == ["verifying", "staged", "activating", "health_check", "committed"]
    status = fleet.cli("fleet", "status", "--registry", str(registry), "--json", "--listen", "2")
    assert status.returncode == 0, status.stderr
    listed = {d["device_id"]: d for d in json.loads(status.stdout)["devices"]}
    assert set(listed) == set(devices)
    for d in devices:
        row = listed[d]
        assert (row["state"], row["model_version"], row["job_state"]) == ("online", "1.1.0", "committed")
        assert row["groups"] == ["line-1"] and row["profile"] == "generic-x86"
    text = fleet.cli("fleet", "status", "--registry", str(registry), "--listen", "0")
    assert "3 device(s), 3 online" in text.stdout and "digits 1.1.0" in text.stdout
    live = fleet.cli("fleet", "monitor", "--registry", str(registry), "--duration", "2.5", "--every", "1")
    assert live.returncode == 0, live.stderr
    rows = [line for line in live.stdout.splitlines() if line.startswith("cam-")]
    assert len(rows) >= 6 and all("online" in r and "digits 1.1.0" in r for r in rows)  # a table per second


def test_canary_halt_leaves_the_devices_outside_the_canary_untouched(fleet, world, tmp_path):
    devices = ["pi-a", "pi-b", "pi-c", "pi-d"]
    canaries = plan_waves(devices, 0.5, None)[0]
    assert len(canaries) == 2
    untrusting = tmp_path / "no-keys"
    untrusting.mkdir()
    bad = canaries[0]  # a canary that does not trust the publisher's key (a fresh device, no model yet): it fails
    for d in devices:
        fleet.agent(d, "--group", "yard", trusted=untrusting if d == bad else None, source=False, initial=d != bad)
    fleet.online(*(d for d in devices if d != bad))
    fleet.online(bad, version=None)
    done = fleet.cli("deploy", str(world["bundles"].v2), "--group", "yard", "--canary", "50%",
                     "--max-failure-rate", "20%", "--trusted-dir", str(world["trusted"]),
                     "--registry", str(tmp_path / "fleet.db"), "--timeout", "90", "--json")
    assert done.returncode == 3, done.stdout + done.stderr + _logs(fleet)  # halted
    result = json.loads(done.stdout)
    assert result["halted"] and "1 of 2 device(s) failed" in result["reason"]
    states = {d: v["state"] for d, v in result["devices"].items()}
    assert states[canaries[0]] == "failed" and "not trusted here" in result["devices"][canaries[0]]["error"]
    assert states[canaries[1]] == "committed"
    rest = [d for d in devices if d not in canaries]
    assert all(states[d] == "not sent" for d in rest)
    time.sleep(1.0)
    c = fleet.collector
    assert not [p for p in c.progress if p.device_id in rest]  # they never heard of the job
    assert all(c.status[d].model.version == "1.0.0" for d in rest) and c.status[bad].model is None
    assert c.status[canaries[1]].model.version == "1.1.0"


# -- kill -9 at every state ----------------------------------------------------------------------


@pytest.mark.parametrize("state,outcome,version", [*RESTART_OUTCOMES, ("committed", "committed", "1.1.0")])
def test_kill_9_in_every_state_ends_on_a_complete_verified_model(fleet, world, server, state, outcome, version):
    agent = fleet.agent("k9", "--hold-at", f"{state}=60")
    fleet.online("k9")
    v2 = world["bundles"].v2
    job = fleet.publish_job("k9", v2, server.add(v2))
    c = fleet.collector
    c.wait_for(lambda: state in c.states(job.job_id), 60, f"state {state}")
    agent.kill()
    c.wait_for(lambda: c.status["k9"].state == "offline", 10, "the last will")
    agent.args = [a for a in agent.args if a != "--hold-at" and a != f"{state}=60"]
    agent.start()
    final = c.final(job.job_id, "k9")
    assert final.state == outcome, final.error
    fleet.online("k9", version=version)
    slots = (agent.log_path.parent / "k9")
    pointer = json.loads((slots / "active.json").read_text())
    assert pointer["version"] == version
    assert file_sha256(slots / "slots" / pointer["slot"] / "bundle.edgepkg") == pointer["sha256"]
    assert not list((slots / "download").glob("*.part"))
    if state in ("activating", "health_check"):
        assert "the agent stopped during" in final.error


def test_kill_9_mid_download_resumes_with_a_range_request(fleet, world, broker):
    big = world["bundles"].big
    with BundleServer(rate_limit=2 << 20) as slow:
        agent = fleet.agent("dl", source=False)
        fleet.online("dl")
        job = fleet.publish_job("dl", big, slow.add(big), version="1.1.5")
        c = fleet.collector
        c.wait_for(lambda: any(p.job_id == job.job_id and p.state == "downloading" and p.bytes_done >= 2 << 20
                               for p in c.progress), 60, "a partial download")
        agent.kill()
        agent.start()
        final = c.final(job.job_id, "dl", timeout=90)
        assert final.state == "committed", final.error + agent.log()
        resumed = [start for path, start in slow.requests if start]
        assert resumed and resumed[-1] >= 1 << 20  # the restart asked only for what was missing
        assert slow.bytes_served < 2 * big.stat().st_size


# -- refusals, malformed payloads, MQTT chunks, last will ----------------------------------------


def test_bad_bundles_and_payloads_are_refused_while_the_model_keeps_serving(fleet, world, server, tmp_path, broker):
    b = world["bundles"]
    agent = fleet.agent("gate", "--group", "g")
    fleet.online("gate")
    c = fleet.collector
    tampered = tampered_copy(b.v2, tmp_path / "tampered.edgepkg")
    truncated = tmp_path / "truncated.edgepkg"
    truncated.write_bytes(b.v2.read_bytes()[: b.v2.stat().st_size // 2])
    jobs = {
        "tampered": fleet.publish_job("gate", tampered, server.add(tampered)),
        "truncated": fleet.publish_job("gate", truncated, server.add(truncated)),
        "wrong profile": fleet.publish_job("gate", b.other_profile, server.add(b.other_profile),
                                           profile="jetson-orin-nano"),
        "downgrade": fleet.publish_job("gate", b.v0_old, server.add(b.v0_old), version="0.9.0"),
        "broken model": fleet.publish_job("gate", b.v3_broken, server.add(b.v3_broken), version="1.2.0"),
    }
    for name, job in jobs.items():
        final = c.final(job.job_id, "gate")
        assert final.state == ("rolled_back" if name == "broken model" else "failed"), name
        assert final.error, name
    t = fleet.collector.topics
    garbage = [b"", b"{", b"\xff\xfe", b'{"schema": 2, "type": "ota_job"}', b'{"schema": 1, "type": "ota_job"}',
               json.dumps({"schema": 1, "type": "ota_job", "job_id": "../x"}).encode(), b"A" * (2 << 20),
               b"EDC1" + b"\x05jobid" + b"\x00" * 40]
    for topic in (t.ota_job("gate"), t.group_ota_job("g"), t.ota_chunk_data("gate")):
        for payload in garbage:
            c.client.publish(topic, payload, qos=1)
    c.client.flush(10)
    frames = lambda: [x["frames"] for x in c.telemetry if x["device_id"] == "gate"]  # noqa: E731
    seen = len(frames())
    c.wait_for(lambda: len(frames()) >= seen + 2 and frames()[-1] > 0, 20, "telemetry still flowing")
    assert agent.proc.poll() is None
    assert all(x["model_version"] == "1.0.0" for x in c.telemetry if x["device_id"] == "gate")
    log = agent.log()
    assert log.count("ignored a malformed ota_job") >= 12 and log.count("ignored a malformed ota_chunk_data") >= 6
    # still fully functional: a job on the group topic commits, then an update over MQTT chunks
    group_job = OtaJob("group-job-1", BundleRef("digits", "1.1.0", file_sha256(b.v2), b.v2.stat().st_size,
                                                "generic-x86"), server.add(b.v2), False, time.time())
    c.client.publish(t.group_ota_job("g"), group_job.to_payload(), qos=1)
    assert c.final("group-job-1", "gate").state == "committed"
    fleet.online("gate", version="1.1.0")
    done = fleet.cli("deploy", str(b.big), "--device", "gate", "--transport", "mqtt", "--trusted-dir",
                     str(world["trusted"]), "--registry", str(tmp_path / "fleet.db"), "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr + agent.log()[-3000:]
    fleet.online("gate", version="1.1.5")


def test_the_fleet_sees_a_vanished_device_offline_within_one_and_a_half_keepalives(fleet, world):
    agent = fleet.agent("ka", "--keepalive", "2", source=False)
    fleet.online("ka")
    c = fleet.collector
    agent.proc.send_signal(signal.SIGSTOP)  # a frozen device or a cut network: no FIN, only silence
    try:
        started = time.monotonic()
        c.wait_for(lambda: c.status["ka"].state == "offline", 15, "offline")
        elapsed = time.monotonic() - started
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    # 1.5 x keepalive, plus the period at which Mosquitto 2.0 scans keepalives (a few seconds; see test_mqtt.py)
    assert 0.8 <= elapsed <= 1.5 * 2 + 6.5, elapsed
    fleet.online("ka")  # it comes back by itself
    agent.kill()
    c.wait_for(lambda: c.status["ka"].state == "offline", 2, "offline after kill -9")
