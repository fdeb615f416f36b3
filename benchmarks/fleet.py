"""A fleet on one machine: as many real agents as fit, one Mosquitto, and the time from deploy to all committed.

Each agent is the real ``edge_sdk.agent.Agent`` (its own MQTT connection, durable outbox, OTA manager and slots
on disk, the digits classifier loaded in ONNX Runtime with one thread), many per process to fit hundreds on two
cores; only the pipeline is left out (no camera here). At most --per-process agents share a process: paho's
network loop uses select(), which cannot watch file descriptors above 1023, and an agent holds about ten (its
socket, paho's wake-up socket pair, the outbox's SQLite files and lock). The fleet side is the real Rollout, FleetMonitor and
BundleServer that ``edge-sdk deploy`` uses. Two rollouts run one after the other:

  all at once   every device gets the job in one wave
  canary 10%    the canary wave first, the rest once the canaries committed

For each, printed: time from the first job published to the last device committed, the per-device time from its
job to its commit (p50 / p99 / max), and the agents' CPU time per update. Here 500 devices share two cores, so the
wall times are mostly that CPU queue (CPU per update x devices / cores); on a real fleet every device has its own. Every device runs the full update: HTTP download, sha256, signature and
manifest checks, staging, loading, golden check, swap, commit. The agents' own health window is set to 0 s here
(there is no pipeline to watch); the golden check still runs.

    python benchmarks/fleet.py [--agents 500] [--broker mqtt://127.0.0.1:1883]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import cpu_model, usable_cores  # noqa: E402

from edge_sdk.agent import Agent, AgentConfig  # noqa: E402
from edge_sdk.bundle.signing import SigningKey, TrustStore  # noqa: E402
from edge_sdk.fleet import BundleServer, FleetMonitor, Registry, Rollout, bundle_ref  # noqa: E402
from edge_sdk.mqtt import MqttClient, MqttConfig  # noqa: E402
from edge_sdk.ota.health import HealthPolicy  # noqa: E402


def build_bundles(work: Path):
    from converters.samples import load_digits_split, softmax_bundle, train_softmax

    key = SigningKey.generate()
    trusted = work / "trusted"
    trusted.mkdir()
    (trusted / f"{key.key_id}.pub").write_bytes(_public_pem(key))
    split = load_digits_split()
    classifier = train_softmax(split)
    bundles = [softmax_bundle(classifier, split, work / f"digits-{v}.edgepkg", key, version=v)
               for v in ("1.0.0", "1.1.0", "1.2.0")]
    return bundles, trusted


def _public_pem(key: SigningKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rollout(config: MqttConfig, devices: list[str], bundle: Path, trusted: Path, server: BundleServer,
            canary: float, work: Path) -> dict:
    ref = bundle_ref(bundle, trusted=TrustStore.from_dir(trusted))
    registry = Registry(work / f"fleet-{uuid.uuid4().hex[:6]}.db")
    client = MqttClient(config.replace(client_id=f"bench-deploy-{uuid.uuid4().hex[:6]}", max_inflight=1000,
                                       max_queued=100000))
    holder: list[Rollout] = []
    FleetMonitor(client, registry, on_progress=lambda p: holder and holder[0].on_progress(p))
    client.start()
    assert client.wait_connected(10)
    job = Rollout(client, ref, server.add(bundle), canary=canary, max_failure_rate=0.0, timeout_s=600)
    holder.append(job)
    started = time.monotonic()
    result = job.run(devices)
    wall = time.monotonic() - started
    client.close()
    registry.close()
    seconds = np.asarray([o.seconds for o in result.outcomes.values() if o.seconds is not None])
    return {"wall": wall, "committed": len(result.committed), "failed": result.failed, "halted": result.halted,
            "p50": float(np.percentile(seconds, 50)), "p99": float(np.percentile(seconds, 99)),
            "max": float(seconds.max())}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def run_agents(first: int, count: int, config: MqttConfig, work: Path, v1: Path, trusted: Path, ready, stop,
               results) -> None:
    """A worker process: ``count`` agents from ``dev-<first>``; reports when connected, stops when told."""
    from device_profiles import load_profile

    generic = load_profile("generic-x86")
    profile = dataclasses.replace(generic, runtime=dataclasses.replace(generic.runtime, num_threads=1))
    agents = []
    for i in range(first, first + count):
        agents.append(Agent(AgentConfig(
            device_id=f"dev-{i:04d}", profile=profile, mqtt=config, state_dir=work / "devices" / f"dev-{i:04d}",
            groups=("bench",), trusted_dir=trusted, initial_bundle=v1, telemetry_interval_s=3600.0,
            health=HealthPolicy(window_s=0.0),
        )).start())
    deadline = time.monotonic() + 120
    while not all(a.client.connected for a in agents) and time.monotonic() < deadline:
        time.sleep(0.1)
    ready.put((sum(a.client.connected for a in agents), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    stop.wait()
    results.put(sorted({a.host.running().version for a in agents}))
    for agent in agents:
        agent.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--per-process", type=int, default=80, help="agents per worker process (default 80)")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    args = parser.parse_args()
    prefix = f"bench-fleet-{uuid.uuid4().hex[:6]}"
    config = MqttConfig.from_url(args.broker, prefix=prefix, keepalive=60)
    workers = -(-args.agents // args.per_process)
    print(f"fleet benchmark on {cpu_model()}, {usable_cores()} core(s): {args.agents} agents in {workers} "
          f"process(es) on {config.url}", flush=True)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edge-sdk-bench-fleet-") as tmp:
        work = Path(tmp)
        (v1, v2, v3), trusted = build_bundles(work)
        ready, results, stop = context.Queue(), context.Queue(), context.Event()
        started = time.monotonic()
        processes = []
        for w in range(workers):
            first = w * args.per_process
            count = min(args.per_process, args.agents - first)
            process = context.Process(target=run_agents, args=(first, count, config, work, v1, trusted, ready, stop,
                                                               results))
            process.start()
            processes.append(process)
        reports = [ready.get(timeout=300) for _ in processes]
        connected = sum(r[0] for r in reports)
        rss_mb = sum(r[1] for r in reports) / 1024
        start_s = time.monotonic() - started
        devices = [f"dev-{i:04d}" for i in range(args.agents)]
        pids = [p.pid for p in processes]
        with BundleServer() as server:
            before = cpu_seconds(pids)
            flat = rollout(config, devices, v2, trusted, server, 0.0, work)
            flat["cpu_ms"] = (cpu_seconds(pids) - before) / args.agents * 1e3
            before = cpu_seconds(pids)
            canary = rollout(config, devices, v3, trusted, server, 0.1, work)
            canary["cpu_ms"] = (cpu_seconds(pids) - before) / args.agents * 1e3
        stop.set()
        versions = sorted({v for _ in processes for v in results.get(timeout=120)})
        for process in processes:
            process.join(60)
    print(f"\n  agents started and connected   {connected}/{args.agents} in {start_s:.1f} s, peak RSS "
          f"{rss_mb:.0f} MB in all ({rss_mb / args.agents:.1f} MB per agent)")
    for name, r in (("all at once", flat), ("canary 10%", canary)):
        print(f"  rollout {name:<12}  {r['committed']}/{args.agents} committed in {r['wall']:6.1f} s; per device "
              f"job -> commit p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, max {r['max']:.2f} s; agent CPU "
              f"{r['cpu_ms']:.0f} ms per update"
              + (f"; FAILED {r['failed'][:5]}" if r["failed"] else ""))
    print(f"  running afterwards: {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
