"""``edge-sdk demo``: the whole loop on one machine, on embedded defaults, in a few minutes.

1. a development signing key (reused from the work directory on a second run);
2. a small CNN trained on scikit-learn's handwritten digits (data shipped in the wheel), packaged for
   ``raspberry-pi-4``: int8 with calibration images, the accuracy gate, the compatibility report, signed;
3. an embedded MQTT broker, the bundle server and a device agent on loopback; the agent runs the pipeline on
   a 25 fps stream of real digit images (the test split, never seen in training);
4. live telemetry from the broker, with the accuracy on the labelled stream;
5. version 2 (trained longer), deployed over the air: downloaded, verified, staged, hot-swapped, health-checked
   and committed while the stream runs;
6. version 3, a broken build (untrained weights shipped with a validated build's golden pair), deployed the
   same way: the device's golden check refuses it before it serves a frame and the job rolls back;
7. a summary table, and everything started is stopped.

Models and bundles are kept in the work directory and reused by the next run (``--fresh`` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from edge_sdk.cli._output import human_bytes, step, table

PROFILE = "raspberry-pi-4"
NAME = "digits-cnn"
STEPS = 7
STREAM_FPS = 25.0
VERSIONS = {"1.0.0": 3, "1.1.0": 12}  # version -> training epochs


_PRINT = threading.Lock()


def say(text: str) -> None:
    """One whole line on stdout: progress comes from the MQTT thread and the main thread at once."""
    with _PRINT:
        sys.stdout.write(f"      {text}\n")
        sys.stdout.flush()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the quick-start demo: package, run, telemetry, OTA update and automatic rollback",
        description="Trains a digit classifier on scikit-learn's shipped digits, packages it int8 for a "
        "Raspberry Pi 4 profile, starts an embedded broker, a bundle server and a device agent on loopback, "
        "shows live telemetry, deploys version 2 over the air and a broken version 3 that is rolled back. "
        "Everything stays on this machine; everything started is stopped.",
    )
    p.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where keys, models and bundles go")
    p.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing the work directory")
    p.add_argument("--watch", type=float, default=6.0, help="seconds of telemetry shown per version (default 6)")
    p.add_argument("--broker-engine", choices=("auto", "mosquitto", "python"), default="auto",
                   help="the embedded broker: mosquitto when installed (auto), else the pure-Python amqtt")
    p.set_defaults(func=run_demo)


@dataclass
class Built:
    version: str
    path: Path
    report: dict
    reused: bool

    @property
    def validation(self) -> dict:
        return self.report.get("gate", {}).get("validation", {})


@dataclass
class Stream:
    """What the device's pipeline produced: accuracy per model version and the frame indices seen."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    correct: dict = field(default_factory=dict)
    total: dict = field(default_factory=dict)
    indices: list = field(default_factory=list)

    def record(self, version: str, index: int, ok: bool) -> None:
        with self.lock:
            self.total[version] = self.total.get(version, 0) + 1
            self.correct[version] = self.correct.get(version, 0) + int(ok)
            self.indices.append(index)

    def accuracy(self, version: str) -> tuple[float | None, int]:
        with self.lock:
            n = self.total.get(version, 0)
            return (self.correct.get(version, 0) / n if n else None), n

    def lost(self) -> tuple[int, int]:
        """Frames missing between the first and the last result, and the frames seen."""
        with self.lock:
            seen = sorted(set(self.indices))
        return (seen[-1] - seen[0] + 1 - len(seen), len(seen)) if seen else (0, 0)


def run_demo(args: argparse.Namespace) -> int:
    work: Path = args.workdir.absolute()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    key = _keys(work)
    split = _data(work)
    step(f"[2/{STEPS}] building {NAME} {', '.join(VERSIONS)} and a deliberately broken 1.2.0 for {PROFILE} "
         "(reused when already built)")
    built = {version: _build(work, split, key, version, epochs) for version, epochs in VERSIONS.items()}
    broken = _build_broken(work, split, key, built["1.1.0"])
    with ExitStack() as stack:
        fleet = _start(work, built["1.0.0"], stack, args.broker_engine)
        _watch(fleet, args.watch, "1.0.0")
        rollouts = {}
        step(f"[5/{STEPS}] deploying {NAME} 1.1.0 over the air (trained longer) while the stream runs")
        rollouts["1.1.0"] = _deploy(fleet, built["1.1.0"].path)
        _watch(fleet, args.watch, "1.1.0")
        step(f"[6/{STEPS}] deploying {NAME} 1.2.0, a broken build: untrained weights shipped with 1.1.0's golden pair")
        rollouts["1.2.0"] = _deploy(fleet, broken.path)
        _watch(fleet, min(args.watch, 3.0), "1.1.0")
        running = fleet.agent.host.running().version
        lost = fleet.stream.lost()
    _summary(work, built, broken, rollouts, fleet, running, lost, time.perf_counter() - started)
    return 0 if rollouts["1.1.0"] == "committed" and rollouts["1.2.0"] == "rolled_back" and not lost[0] else 1


# -- building -------------------------------------------------------------------------------------


def _keys(work: Path):
    from edge_sdk.bundle.signing import SigningKey, TrustStore, generate_keypair

    key_dir, trusted_dir = work / "keys", work / "trusted-keys"
    if (key_dir / "signing.key").exists():
        step(f"[1/{STEPS}] reusing the development signing key in {key_dir}")
    else:
        step(f"[1/{STEPS}] generating a development Ed25519 signing key in {key_dir}")
        generate_keypair(key_dir)
    key = SigningKey.from_file(key_dir / "signing.key")
    TrustStore({}).add_file(key_dir / "signing.pub", trusted_dir)
    print(f"      key id {key.key_id}; the device trusts the keys in {trusted_dir}", flush=True)
    return key


def _data(work: Path):
    """The digits split; calibration images (train split) and the device's stream (test split) as PNG files."""
    import cv2

    from converters.samples import load_digits_split

    split = load_digits_split()
    for folder, images, labels in (("calibration", split.train_images[:400], split.train_labels[:400]),
                                   ("stream", split.test_images, split.test_labels)):
        directory = work / folder
        if directory.is_dir() and sum(1 for _ in directory.rglob("*.png")) == len(labels):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            target = directory / str(label) / f"{i:04d}.png" if folder == "calibration" else \
                directory / f"{i:04d}_{label}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), image)
    return split


def _reusable(path: Path, trusted: Path) -> dict | None:
    from edge_sdk.bundle import open_bundle
    from edge_sdk.errors import EdgeSDKError

    if not path.exists():
        return None
    try:
        return json.loads(open_bundle(path, trusted=trusted).read("report.json"))
    except (EdgeSDKError, KeyError, ValueError):
        return None


def _build(work: Path, split, key, version: str, epochs: int) -> Built:
    from converters import package
    from converters.samples import DIGIT_LABELS, train_digits_cnn

    path = work / "bundles" / f"{NAME}-{version}-{PROFILE}.edgepkg"
    report = _reusable(path, work / "trusted-keys")
    if report is not None:
        print(f"      {version}: reusing {path} (signed, verified)", flush=True)
        return Built(version, path, report, True)
    print(f"      {version}: training the digits CNN ({epochs} epochs on {len(split.train_labels)} images), then "
          f"packaging it int8 with calibration images, the accuracy gate and the compatibility check", flush=True)
    model = train_digits_cnn(split, epochs=epochs)
    result = package(model, PROFILE, work / "calibration", output=path, signing_key=key, labels=DIGIT_LABELS,
                     name=NAME, version=version, max_accuracy_drop=1.0,
                     progress=lambda name: print(f"        - {name}", flush=True))
    v = result.report["gate"]["validation"]
    print(f"      {path.name}: {human_bytes(path.stat().st_size)}, int8 accuracy {v['quantized_accuracy']:.1%} vs "
          f"float {v['float_accuracy']:.1%} on {v['samples']} held-out images; compatible with {PROFILE}: "
          f"{result.report['compatibility']['compatible']}", flush=True)
    return Built(version, path, result.report, False)


def _build_broken(work: Path, split, key, good: Built) -> Built:
    """A signed 1.2.0 whose model is an untrained network but whose golden pair is the good build's."""
    import zipfile
    from dataclasses import replace

    from converters import package
    from converters.samples import DIGIT_LABELS, train_digits_cnn
    from edge_sdk.bundle import Manifest, write_bundle

    path = work / "bundles" / f"{NAME}-1.2.0-{PROFILE}.edgepkg"
    report = _reusable(path, work / "trusted-keys")
    if report is not None:
        print(f"      1.2.0: reusing {path} (broken on purpose)", flush=True)
        return Built("1.2.0", path, report, True)
    print("      1.2.0: packaging an untrained network and giving it 1.1.0's golden pair (broken on purpose)",
          flush=True)
    untrained = package(train_digits_cnn(split, epochs=0), PROFILE, work / "calibration", output=work / "build",
                        signing_key=key, labels=DIGIT_LABELS, name=NAME, version="1.2.0", max_accuracy_drop=100.0)
    with zipfile.ZipFile(untrained.path) as bad, zipfile.ZipFile(good.path) as ok:
        manifest = Manifest.from_bytes(bad.read("manifest.json"))
        files = {e.name: (ok if e.role == "golden" else bad).read(e.name) for e in manifest.files}
    write_bundle(replace(manifest, metadata={"demo": "broken on purpose"}), files, path, key)
    shutil.rmtree(work / "build", ignore_errors=True)
    return Built("1.2.0", path, untrained.report, False)


# -- the device and the fleet ---------------------------------------------------------------------


@dataclass
class Fleet:
    agent: object
    server: object
    client: object
    registry: object
    stream: Stream
    telemetry: list
    progress: list
    holder: list


def _start(work: Path, first: Built, stack: ExitStack, engine: str = "auto") -> Fleet:
    from edge_sdk.agent import Agent, AgentConfig
    from edge_sdk.fleet import BundleServer, FleetMonitor, Registry
    from edge_sdk.mqtt import MqttClient, MqttConfig, Telemetry
    from edge_sdk.mqtt.broker import EmbeddedBroker
    from edge_sdk.ota.health import HealthPolicy

    step(f"[3/{STEPS}] starting an embedded MQTT broker, the bundle server and a device agent (loopback only)")
    broker = stack.enter_context(EmbeddedBroker(port=0, engine=engine))
    server = stack.enter_context(BundleServer())
    device_dir = work / "device"
    shutil.rmtree(device_dir, ignore_errors=True)  # a fresh device every run: it boots on 1.0.0
    stream = Stream()

    def on_result(frame, prediction) -> None:
        truth = Path(frame.path or "").stem.rpartition("_")[2]
        top = prediction.top
        stream.record(agent.host.running().version, frame.index, top is not None and top.label == truth)

    agent = Agent(AgentConfig(
        device_id="demo-pi", profile=PROFILE, mqtt=MqttConfig.from_url(broker.url, keepalive=10),
        state_dir=device_dir, groups=("demo",), trusted_dir=work / "trusted-keys", initial_bundle=first.path,
        source=str(work / "stream"), source_fps=STREAM_FPS, telemetry_interval_s=1.0,
        health=HealthPolicy(window_s=3.0),
    ), on_result=on_result)
    stack.callback(agent.stop)
    agent.start()
    registry = Registry(work / "fleet.db")
    stack.callback(registry.close)
    telemetry: list = []
    progress: list = []
    holder: list = []
    client = MqttClient(MqttConfig.from_url(broker.url, client_id="demo-fleet"))

    def on_progress(p) -> None:
        progress.append(p)
        say(f"device {p.device_id}: {p.state:<12} {p.bytes_done:>7}/{p.bytes_total} bytes"
            + (f"  ({p.error})" if p.error else ""))
        if holder:
            holder[0].on_progress(p)

    FleetMonitor(client, registry, on_progress=on_progress)
    client.subscribe(client.topics.subscription("telemetry"),
                     lambda topic, payload: telemetry.append(Telemetry.from_payload(payload)))
    client.start()
    stack.callback(client.close)
    client.wait_connected(10)
    print(f"      broker {broker.url} ({broker.kind}), bundles served at http://127.0.0.1:{server.port}/, "
          f"agent 'demo-pi' running {NAME} 1.0.0 from {device_dir}", flush=True)
    print(f"      the pipeline reads {work / 'stream'} (real handwritten digits) at {STREAM_FPS:g} fps", flush=True)
    return Fleet(agent, server, client, registry, stream, telemetry, progress, holder)


def _watch(fleet: Fleet, seconds: float, version: str) -> None:
    if version == "1.0.0":
        step(f"[4/{STEPS}] live telemetry from the broker (every second), accuracy on the labelled stream")
    seen = len(fleet.telemetry)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        while seen < len(fleet.telemetry):
            t = fleet.telemetry[seen]
            seen += 1
            accuracy, n = fleet.stream.accuracy(t.model_version or "")
            shown = f"{accuracy:6.1%} of {n:>4} frames" if accuracy is not None else "   -"
            say(f"telemetry  model {t.model_version}  fps {t.fps:5.1f}  latency p50 {t.latency_ms.p50:5.2f} ms "
                f"p99 {t.latency_ms.p99:5.2f} ms  dropped {t.dropped}  errors {t.errors}  cpu {t.cpu_percent:4.0f}%"
                f"  accuracy {shown}")


def _deploy(fleet: Fleet, bundle: Path) -> str:
    from edge_sdk.fleet import Rollout, bundle_ref

    ref = bundle_ref(bundle, trusted=fleet.agent.trust)
    rollout = Rollout(fleet.client, ref, fleet.server.add(bundle, ref.sha256), timeout_s=60,
                      on_event=lambda text: say(f"rollout: {text}"))
    fleet.holder[:] = [rollout]
    result = rollout.run(["demo-pi"])
    fleet.holder.clear()
    return result.outcomes["demo-pi"].state


def _summary(work, built, broken, rollouts, fleet, running, lost, seconds) -> None:
    step(f"[7/{STEPS}] summary (everything started was stopped)")
    latencies = {}
    for t in fleet.telemetry:
        if t.frames:
            latencies.setdefault(t.model_version, []).append((t.latency_ms.p50, t.latency_ms.p99))
    rows = []
    for version, b in built.items():
        v, sizes = b.validation, b.report.get("sizes", {})
        accuracy, n = fleet.stream.accuracy(version)
        lat = latencies.get(version) or [(0.0, 0.0)]
        p50 = sorted(x[0] for x in lat)[len(lat) // 2]
        p99 = max(x[1] for x in lat)
        rows.append((f"{NAME} {version}", human_bytes(sizes.get("float_reference_bytes")),
                     human_bytes(sizes.get("model_bytes")), f"{v.get('float_accuracy', 0):.1%}",
                     f"{v.get('quantized_accuracy', 0):.1%}", f"{accuracy:.1%} ({n})" if accuracy is not None else "-",
                     f"{p50:.2f} / {p99:.2f}", rollouts.get(version, "initial install")))
    rows.append((f"{NAME} 1.2.0 (broken)", "-", human_bytes(broken.report.get("sizes", {}).get("model_bytes")),
                 "-", "-", "never served", "-", rollouts["1.2.0"]))
    table(rows, ("bundle", "float size", "int8 size", "float acc", "int8 acc", "stream acc (frames)",
                 "p50 / p99 ms", "OTA result"))
    why = next((p.error for p in reversed(fleet.progress) if p.state == "rolled_back"), None)
    print(f"\n  running now: {NAME} {running}; 1.2.0 rolled back because: {why}")
    print(f"  frames lost during the two updates: {lost[0]} of {lost[1]} (goal 0)")
    print(f"  bundles: {work / 'bundles'}\n  signing key: {work / 'keys' / 'signing.key'} (development only; "
          f"devices trust {work / 'trusted-keys'})\n  device state (slots, OTA record, outbox): {work / 'device'}")
    print(f"  demo took {seconds:.0f} s\n\n  next, try:")
    bundle = built["1.1.0"].path
    for command in (
        f"edge-sdk inspect {bundle} --trusted-dir {work / 'trusted-keys'}",
        f"edge-sdk bench {bundle} --trusted-dir {work / 'trusted-keys'} --vs-bare",
        f"edge-sdk run {bundle} --source {work / 'stream'} --trusted-dir {work / 'trusted-keys'} --max-frames 100",
        "edge-sdk broker   # then, in other terminals:",
        f"edge-sdk agent --device-id pi-1 --profile {PROFILE} --bundle {built['1.0.0'].path} "
        f"--source {work / 'stream'} --fps 10 --trusted-dir {work / 'trusted-keys'} --state-dir /tmp/pi-1",
        f"edge-sdk deploy {bundle} --device pi-1 --trusted-dir {work / 'trusted-keys'}",
        "edge-sdk fleet status",
    ):
        print(f"    {command}")
