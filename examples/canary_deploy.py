"""Roll a new model out to a group of devices over the air, canary first.

Three device agents (in this process, each with its own MQTT connection, A/B slots and state directory, the
way ``edge-sdk agent`` runs on a device) run digits 1.0.0 in group ``line-1``. The fleet side is the Python
API behind ``edge-sdk deploy``: a :class:`BundleServer` serves the bundle over HTTP (with Range, so downloads
resume), a :class:`FleetMonitor` keeps a :class:`Registry` of what every device reports, and a
:class:`Rollout` publishes the OTA job to the canary wave (34% of the group, rounded up) first and to the
rest only once every canary has committed.

Each device downloads, verifies the signature and every hash, stages the bundle in its other slot, checks the
bundle's golden input, hot-swaps it into its running pipeline, watches it for a health window and commits.
Then a deliberately broken 1.2.0 (signed and valid, but its weights answer wrongly) goes the same way: the
canaries refuse it on the golden check and stay on 1.1.0, the rollout halts, and the device outside the
canary wave never receives the job.

Needs: pip install 'edge-deploy-sdk[host]' for the sample models (a device needs only [onnxruntime]), and
Mosquitto or the [broker] extra for the embedded broker.

    python examples/canary_deploy.py [--broker mqtt://host:1883] [--canary 34%] [--workdir DIR]
"""

from __future__ import annotations

import contextlib
import sys
import time

import _common
from _common import heading, table

GROUP = "line-1"
DEVICES = ("cam-1", "cam-2", "cam-3")


def build_bundles(work, key_path):
    """digits 1.0.0 (running), 1.1.0 (trained longer) and a broken 1.2.0, plus the images the devices watch."""
    from converters.samples import SoftmaxClassifier, load_digits_split, softmax_bundle, train_softmax
    from edge_sdk.bundle import SigningKey

    key = SigningKey.from_file(key_path)
    split = load_digits_split()
    v1, v2 = train_softmax(split, epochs=100), train_softmax(split, epochs=300)
    broken = SoftmaxClassifier(-v2.weights, v2.bias)  # runs, but answers wrongly: its golden check fails
    (work / "bundles").mkdir(parents=True, exist_ok=True)
    bundles = {version: softmax_bundle(model, split, work / "bundles", key, version=version)
               for version, model in (("1.0.0", v1), ("1.1.0", v2))}
    # The broken build carries the golden pair of the good one, as a build that went wrong after testing would.
    bundles["1.2.0"] = softmax_bundle(broken, split, work / "bundles", key, version="1.2.0", golden_from=v2)
    for version, model in (("1.0.0", v1), ("1.1.0", v2)):
        print(f"   digits {version}: test accuracy {model.accuracy(split.test_images, split.test_labels):.1%}")
    images = _common.write_images(work / "camera", split.test_images[:40], size=64)
    return bundles, images


def start_agents(url, prefix, work, trusted, first_bundle, images, health_window):
    from edge_sdk.agent import Agent, AgentConfig
    from edge_sdk.mqtt import MqttConfig
    from edge_sdk.ota.health import HealthPolicy

    return [Agent(AgentConfig(
        device_id=device, profile="generic-x86", mqtt=MqttConfig.from_url(url, prefix=prefix),
        state_dir=work / "devices" / device, groups=(GROUP,), trusted_dir=trusted, initial_bundle=first_bundle,
        source=str(images), source_fps=15, telemetry_interval_s=2.0,
        health=HealthPolicy(window_s=health_window),  # how long a new model is watched before it is committed
    )).start() for device in DEVICES]


def deploy(client, registry, server, bundle, trusted, canary, running: list) -> dict:
    """One rollout to every online device of the group, as ``edge-sdk deploy BUNDLE --group GROUP`` does.

    ``running`` receives the rollout, so that the fleet monitor can hand it the devices' progress messages.
    """
    from edge_sdk.fleet import Rollout, bundle_ref

    ref = bundle_ref(bundle, trusted=trusted)  # verify on the host: never ship what devices would refuse
    targets = [d.device_id for d in registry.devices(GROUP) if d.state == "online" and d.profile == ref.profile]
    rollout = Rollout(client, ref, server.add(bundle, ref.sha256), canary=canary, max_failure_rate=0.0,
                      timeout_s=60, on_event=_say)
    running.append(rollout)
    result = rollout.run(targets)
    table([(d, "canary" if o.wave == 0 and canary else f"wave {o.wave + 1}", o.state,
            f"{o.seconds:.1f}" if o.seconds is not None else "-", o.error or "")
           for d, o in sorted(result.outcomes.items())], ("device", "wave", "state", "seconds", "error"))
    print(f"   {len(result.committed)} committed, {len(result.failed)} failed"
          + (f"; HALTED: {result.reason}" if result.halted else ""))
    return result.to_dict()


def _say(text: str) -> None:
    """Live progress from the rollout (called from its thread and the MQTT thread: one write per line)."""
    sys.stdout.write(f"   {text}\n")
    sys.stdout.flush()


def wait_for_versions(registry, expected: dict, timeout: float = 15.0) -> dict:
    """The model version each device reports in its retained status, once they are as expected (or time out)."""
    deadline = time.monotonic() + timeout
    while True:
        versions = {d.device_id: d.model_version for d in registry.devices(GROUP) if d.state == "online"}
        if versions == expected or time.monotonic() > deadline:
            return versions
        time.sleep(0.1)


def main(args) -> int:
    import json
    import shutil

    from edge_sdk.fleet import BundleServer, FleetMonitor, Registry, parse_fraction
    from edge_sdk.mqtt import MqttClient, MqttConfig
    from edge_sdk.mqtt.broker import EmbeddedBroker

    work = args.workdir
    canary = parse_fraction(args.canary, "--canary")
    key, trusted = _common.development_keys(work)
    # Three fresh devices every run: forget what the previous run's devices and registry recorded.
    shutil.rmtree(work / "devices", ignore_errors=True)
    (work / "fleet.db").unlink(missing_ok=True)
    heading("building three versions of the digits bundle")
    bundles, images = build_bundles(work, key)

    with contextlib.ExitStack() as stack:
        url = args.broker or stack.enter_context(EmbeddedBroker(port=0)).url
        heading(f"starting {len(DEVICES)} agents in group {GROUP!r} on digits 1.0.0 (broker {url})")
        for agent in start_agents(url, args.topic_prefix, work, trusted, bundles["1.0.0"], images,
                                  args.health_window):
            stack.callback(agent.stop)

        # The fleet side: one MQTT connection feeding the registry, and the HTTP server devices download from.
        registry = Registry(work / "fleet.db")
        stack.callback(registry.close)
        client = MqttClient(MqttConfig.from_url(url, prefix=args.topic_prefix, client_id="example-deploy"))
        running: list = []  # the rollout in progress gets every OTA progress message the monitor sees
        FleetMonitor(client, registry, on_progress=lambda progress: running and running[-1].on_progress(progress))
        client.start()
        stack.callback(client.close)
        server = stack.enter_context(BundleServer())
        online = wait_for_versions(registry, {d: "1.0.0" for d in DEVICES})
        print(f"   online: {online}")

        heading(f"deploying digits 1.1.0 to group {GROUP!r} with a {args.canary} canary")
        good = deploy(client, registry, server, bundles["1.1.0"], trusted, canary, running)
        after_good = wait_for_versions(registry, {d: "1.1.0" for d in DEVICES})

        heading("deploying a broken digits 1.2.0 the same way")
        bad = deploy(client, registry, server, bundles["1.2.0"], trusted, canary, running)
        after_bad = wait_for_versions(registry, {d: "1.1.0" for d in DEVICES}, timeout=5)

        heading("final versions, as the devices report them")
        table([(r.device_id, r.state, f"{r.model_name} {r.model_version}", r.job_state or "-")
               for r in registry.devices(GROUP)], ("device", "state", "model", "last job"))

    (work / "rollouts.json").write_text(json.dumps({"1.1.0": good, "1.2.0": bad, "after_1.1.0": after_good,
                                                    "after_1.2.0": after_bad}, indent=2, sort_keys=True))
    heading("done")
    print(f"   results: {work / 'rollouts.json'}; fleet registry: {work / 'fleet.db'}")
    broker = args.broker or "mqtt://127.0.0.1:1883"  # the embedded broker is gone now: 'edge-sdk broker' is one
    print("   the same from the shell (agents started with 'edge-sdk agent ... --group line-1'):\n"
          + ("" if args.broker else "     edge-sdk broker &\n")
          + f"     edge-sdk deploy {bundles['1.1.0']} --group {GROUP} --canary {args.canary} --broker {broker} "
          f"--trusted-dir {trusted} --registry {work / 'fleet.db'}\n"
          f"     edge-sdk fleet status --broker {broker} --registry {work / 'fleet.db'}")
    ok = (good["committed"] == len(DEVICES) and not good["halted"] and bad["halted"] and bad["committed"] == 0
          and after_bad == {d: "1.1.0" for d in DEVICES})
    return 0 if ok else 1


if __name__ == "__main__":
    p = _common.parser("canary_deploy", __doc__)
    p.add_argument("--broker", default=None, help="an MQTT broker URL (default: start an embedded one)")
    p.add_argument("--topic-prefix", default="edge", help="MQTT topic prefix (default edge)")
    p.add_argument("--canary", default="34%", help="share of the group updated first (default 34%%)")
    p.add_argument("--health-window", type=float, default=1.0,
                   help="seconds each device watches a new model before committing it (default 1)")
    _common.run(main, p.parse_args())
