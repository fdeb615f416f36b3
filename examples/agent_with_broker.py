"""Run a device agent against an MQTT broker and watch its status and telemetry arrive.

The agent (``edge_sdk.agent.Agent``) is what runs on each device: it installs its first bundle into an A/B
slot, runs the model over a source (here a folder of real handwritten digit images, paced like a 20 fps
camera), and reports over MQTT: a retained ``status`` (online, profile, running model; also its last will,
so the fleet sees ``offline`` if it dies) and ``telemetry`` every few seconds (fps, latency percentiles,
drops, errors, CPU, memory) through a durable SQLite outbox. The "fleet side" here is a plain subscriber.

Without ``--broker`` the example starts an embedded development broker on a free loopback port (Mosquitto
when it is installed, else the pure-Python amqtt from the ``broker`` extra) and stops it at the end.

Needs: pip install 'edge-deploy-sdk[host]' for the sample model (a device needs only [onnxruntime]), and
Mosquitto or the [broker] extra for the embedded broker.

    python examples/agent_with_broker.py [--broker mqtt://host:1883] [--messages 3] [--workdir DIR]
"""

from __future__ import annotations

import contextlib
import queue
import time

import _common
from _common import heading


def main(args) -> int:
    from converters.samples import load_digits_split, softmax_bundle, train_softmax
    from edge_sdk.agent import Agent, AgentConfig
    from edge_sdk.bundle import SigningKey
    from edge_sdk.mqtt import MqttClient, MqttConfig, Status, Telemetry
    from edge_sdk.mqtt.broker import EmbeddedBroker

    work = args.workdir
    key, trusted = _common.development_keys(work)

    heading("a digits bundle for generic-x86 and a folder of digit images for the agent's 'camera'")
    split = load_digits_split()
    bundle = softmax_bundle(train_softmax(split), split, work / "digits-1.0.0.edgepkg", SigningKey.from_file(key))
    images = _common.write_images(work / "camera", split.test_images[:60], size=64)
    print(f"   bundle: {bundle}\n   images: {images} (60 PNG files)")

    with contextlib.ExitStack() as stack:
        if args.broker:
            url = args.broker
        else:
            broker = stack.enter_context(EmbeddedBroker(port=0))
            url = broker.url
        heading(f"broker {url}" + ("" if args.broker else f" (embedded, {broker.kind})"))

        # The fleet side: subscribe to every device's status and telemetry under the topic prefix.
        messages: queue.Queue = queue.Queue()
        watcher = MqttClient(MqttConfig.from_url(url, prefix=args.topic_prefix, client_id="example-watcher"))
        topics = watcher.topics
        watcher.subscribe(topics.subscription("status"),
                          lambda topic, payload: payload and messages.put(Status.from_payload(payload)))
        watcher.subscribe(topics.subscription("telemetry"),
                          lambda topic, payload: messages.put(Telemetry.from_payload(payload)))
        watcher.start()
        stack.callback(watcher.close)
        if not watcher.wait_connected(10):
            print(f"   cannot connect to {url}")
            return 1
        print(f"   subscribed to {topics.subscription('status')} and {topics.subscription('telemetry')}")

        heading(f"starting agent {args.device_id!r}")
        agent = Agent(AgentConfig(
            device_id=args.device_id,
            profile="generic-x86",
            mqtt=MqttConfig.from_url(url, prefix=args.topic_prefix),
            state_dir=work / "device",  # A/B slots, the OTA record and the telemetry outbox live here
            trusted_dir=trusted,  # the device accepts bundles signed by these keys only
            initial_bundle=bundle,
            source=str(images),
            source_fps=args.fps,
            telemetry_interval_s=args.interval,
        ))
        agent.start()
        stack.callback(agent.stop)

        received = 0
        deadline = time.monotonic() + args.interval * (args.messages + 2) + 15
        while received < args.messages and time.monotonic() < deadline:
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(message, Status):
                _print_status(message)
            elif message.frames > 0:  # the first window may close before the model has seen a frame
                received += 1
                lat = message.latency_ms
                print(f"   telemetry #{message.seq} from {message.device_id}: {message.fps:.1f} fps "
                      f"({message.frames} frames in {message.window_s:.1f} s), latency p50 {lat.p50:.2f} ms "
                      f"p95 {lat.p95:.2f} ms p99 {lat.p99:.2f} ms, {message.dropped} dropped, {message.errors} "
                      f"errors, CPU {message.cpu_percent:.0f}%, memory {message.memory_percent:.0f}%, "
                      f"model {message.model_version}")

        heading("stopping the agent (it publishes 'offline'; unsent telemetry would wait in its outbox)")
        agent.stop()
        offline = None
        with contextlib.suppress(queue.Empty):
            while offline is None:
                message = messages.get(timeout=10)
                if isinstance(message, Status) and message.state == "offline":
                    offline = message
        if offline is not None:
            _print_status(offline)

    heading("done")
    print(f"   {received} telemetry message(s) received; device state in {work / 'device'}")
    print(f"   the same from the shell:\n     edge-sdk broker --port 1883 &\n     edge-sdk agent --broker "
          f"mqtt://127.0.0.1:1883 --device-id {args.device_id} --profile generic-x86 --state-dir {work / 'device'} "
          f"--trusted-dir {trusted} --bundle {bundle} --source {images} --fps {args.fps:g}")
    if received < args.messages or offline is None:
        print(f"   FAILED: expected {args.messages} telemetry messages and an offline status")
        return 1
    return 0


def _print_status(status) -> None:
    model = f"{status.model.name} {status.model.version}" if status.model else "no model"
    print(f"   status from {status.device_id}: {status.state}, profile {status.profile}, {model}, "
          f"groups {list(status.groups)}, sdk {status.sdk_version}")


if __name__ == "__main__":
    p = _common.parser("agent_with_broker", __doc__)
    p.add_argument("--broker", default=None, help="an MQTT broker URL (default: start an embedded one)")
    p.add_argument("--topic-prefix", default="edge", help="MQTT topic prefix (default edge)")
    p.add_argument("--device-id", default="cam-1", help="the device id (default cam-1)")
    p.add_argument("--messages", type=int, default=3, help="telemetry messages to print before stopping (default 3)")
    p.add_argument("--interval", type=float, default=1.0, help="telemetry interval in seconds (default 1)")
    p.add_argument("--fps", type=float, default=20.0, help="frames per second read from the images (default 20)")
    _common.run(main, p.parse_args())
