"""OTA costs, measured: frames lost and the longest frame gap while updates hot-swap the model, and bundle
transfer over MQTT chunks against plain paho publishes of the same bytes.

1. Swap: a real Pipeline (PipelineHost, as the agent runs it) over 640x480 frames cut from scikit-image photos,
   delivered at --fps like a camera, runs a float MobileNetV2 224x224 bundle (benchmarks/_models.py) on LiteRT.
   Meanwhile the real OtaManager installs --updates new versions of it, one after another, each through the whole
   state machine: HTTP download from a BundleServer, sha256 + signature verification, staging into the other slot,
   load + warm-up, swap, a health window, commit. Printed: frames in vs frames out (lost, goal 0), the median frame
   period, and the longest gap between two results inside any update's window vs that period (goal <= 2x).

2. Transfer: a --mb MiB bundle-sized file fetched with the agent's ChunkDownloader from the fleet's ChunkServer
   (1 MiB chunks, a window of 8 requests, a sha256 per chunk checked on arrival, fsynced checkpoints) against a
   bare paho client publishing the same bytes as 1 MiB QoS 1 messages to a bare paho subscriber, through the same
   broker (--broker, default the local Mosquitto). The ChunkServer encodes the bundle's chunks once when the job is
   added (a rollout serves the same chunks to every device), before the timing starts. Interleaved, median of
   --repeats; printed as MB/s and ours/raw (goal >= 0.8). Twice: on bare loopback, where the raw side is bounded
   by memory copies alone (the least favourable setting for the chunk protocol's per-chunk work: two sha256, a
   request round trip, a file write), and through a proxy that gives every connection a --link-mbit link (default
   100 Mbit/s, a device's Ethernet), as a device's network does.

    python benchmarks/ota.py [--fps 20] [--updates 5] [--mb 64] [--link-mbit 100] [--link-mb 16] [--repeats 5] [--broker mqtt://127.0.0.1:1883]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import mobilenet_v2_bundle  # noqa: E402
from pipeline import cpu_model, make_frames, usable_cores  # noqa: E402

from edge_sdk.agent import PipelineHost  # noqa: E402
from edge_sdk.bundle import write_bundle  # noqa: E402
from edge_sdk.fleet import BundleServer, ChunkServer  # noqa: E402
from edge_sdk.mqtt import BundleRef, ChunkData, MqttClient, MqttConfig, OtaJob, OtaProgress  # noqa: E402
from edge_sdk.ota import ChunkDownloader, HealthPolicy, OtaManager, file_sha256  # noqa: E402
from edge_sdk.ota.download import CHUNK_BYTES  # noqa: E402
from edge_sdk.vision.sources import ArraySource  # noqa: E402


def paced(frames: list[np.ndarray], fps: float, stop: threading.Event, counter: list[int]):
    period = 1.0 / fps
    next_at = time.monotonic()
    i = 0
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += period
        counter[0] += 1
        yield frames[i % len(frames)]
        i += 1


def swap_benchmark(args, work: Path) -> dict:
    from device_profiles import load_profile

    bench = mobilenet_v2_bundle(work / "bundles")
    model_bytes = bench.tflite.read_bytes()
    labels = "\n".join(f"class_{i:04d}" for i in range(1000)).encode()
    versions = []
    for n in range(1, args.updates + 1):
        manifest = replace(bench.manifest, version=f"1.0.{n}")
        versions.append(write_bundle(manifest, {"model.tflite": model_bytes, "labels.txt": labels},
                                     work / "bundles" / f"mobilenet-1.0.{n}.edgepkg", bench.key))
    frames = make_frames(60)
    stop = threading.Event()
    produced = [0]
    results: list[float] = []
    host = PipelineHost(lambda: [ArraySource(paced(frames, args.fps, stop, produced), name="camera")],
                        on_result=lambda frame, prediction: results.append(time.monotonic()))
    progress: list[OtaProgress] = []
    manager = OtaManager(work / "device", "bench", load_profile(bench.manifest.profile), bench.trusted, host,
                         progress.append, policy=HealthPolicy(window_s=args.health_window, require_golden=False))
    manager.install_initial(bench.bundle)
    host.swap(manager.load_active())
    windows: list[tuple[float, float]] = []
    with BundleServer() as server:
        time.sleep(2.0)  # steady state before the first update
        for path in versions:
            version = path.name.split("-")[1].removesuffix(".edgepkg")
            job = OtaJob(f"job-{uuid.uuid4().hex[:8]}", BundleRef(bench.manifest.name, version, file_sha256(path),
                         path.stat().st_size, bench.manifest.profile), server.add(path), False, time.time())
            started = time.monotonic()
            manager._begin(job)
            windows.append((started, time.monotonic()))
            if progress[-1].state != "committed":
                raise SystemExit(f"update to {version} did not commit: {progress[-1].error}")
            time.sleep(1.0)
    stop.set()
    pipeline = host.pipeline
    pipeline.wait(10)
    host.stop()
    times = np.asarray(results)
    gaps = np.diff(times)
    period = float(np.median(gaps))
    in_windows = [g for t0, g in zip(times[1:], gaps) if any(a - 0.2 <= t0 <= b + 0.2 for a, b in windows)]
    return {
        "frames_in": produced[0], "frames_out": len(results), "lost": produced[0] - len(results),
        "period_ms": period * 1e3, "max_gap_ms": max(in_windows) * 1e3, "max_gap_ratio": max(in_windows) / period,
        "update_s": statistics.median(b - a for a, b in windows), "updates": len(windows),
        "swaps": pipeline.stats.swaps, "reprepared": pipeline.stats.reprepared,
    }


class LinkProxy:
    """A TCP proxy in front of the broker that gives each connection a link of ``rate`` bytes/s each way.

    What a device's network does to both sides of the comparison alike: every connection (the raw
    publisher and subscriber, the fleet and the device) crosses its own rate-limited link to the broker.
    """

    def __init__(self, host: str, port: int, rate: float) -> None:
        self.target = (host, port)
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        free_at = time.monotonic()
        try:
            while data := source.recv(64 * 1024):
                free_at = max(free_at, time.monotonic()) + len(data) / self.rate
                target.sendall(data)
                delay = free_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


def transfer_ours(config: MqttConfig, path: Path, work: Path) -> float:
    fleet, device = MqttClient(config.replace(client_id=f"bench-fleet-{uuid.uuid4().hex[:6]}")), \
        MqttClient(config.replace(client_id=f"bench-dev-{uuid.uuid4().hex[:6]}"))
    server = ChunkServer(fleet)
    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    server.add_job(job_id, path)

    class Transport:
        def request_chunk(self, request):
            device.publish(config.topics.ota_chunk_request("bench"), request.to_payload(), qos=1)

    downloader = ChunkDownloader(Transport())
    device.subscribe(config.topics.ota_chunk_data("bench"),
                     lambda topic, payload: downloader.deliver(ChunkData.from_payload(payload)))
    for c in (fleet, device):
        c.start()
        assert c.wait_connected(10)
    time.sleep(0.3)  # subscriptions in place
    target = work / f"{job_id}.part"
    started = time.perf_counter()
    downloader.fetch(job_id, target, path.stat().st_size, 0, lambda done, etag: None, threading.Event())
    elapsed = time.perf_counter() - started
    fleet.close()
    device.close()
    if file_sha256(target) != file_sha256(path):
        raise SystemExit("chunk transfer corrupted the file")
    target.unlink()
    return elapsed


def transfer_raw(config: MqttConfig, path: Path) -> float:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    data = path.read_bytes()
    pieces = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    topic = f"bench-raw/{uuid.uuid4().hex[:8]}"
    received = [0]
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, message):
        received[0] += len(message.payload)
        if received[0] >= len(data):
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(config.host, config.port)
    sub.subscribe(topic, 1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_inflight_messages_set(20)
    pub.connect(config.host, config.port)
    pub.loop_start()
    subscribed.wait(10)
    started = time.perf_counter()
    for piece in pieces:
        pub.publish(topic, piece, qos=1)
    if not done.wait(120):
        raise SystemExit("raw paho transfer did not complete")
    elapsed = time.perf_counter() - started
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return elapsed


def print_swap(args, swap: dict) -> None:
    print(f"\nhot swap during a running pipeline: mobilenet_v2 224x224 float32, LiteRT, camera at {args.fps:g} fps,"
          f" {swap['updates']} OTA updates (download, verify, stage, load, swap, {args.health_window:g} s health "
          "window, commit)")
    print(f"  frames in {swap['frames_in']}, frames out {swap['frames_out']}, lost {swap['lost']}  (goal 0)")
    print(f"  frame period (median)               {swap['period_ms']:7.1f} ms")
    print(f"  longest gap during an update        {swap['max_gap_ms']:7.1f} ms  {swap['max_gap_ratio']:.2f}x "
          "the period  (goal <= 2x)")
    print(f"  one update, job to commit (median)  {swap['update_s']:7.2f} s  (swaps {swap['swaps']}, frames "
          f"re-prepared for the new model {swap['reprepared']})")


def compare_transfers(config: MqttConfig, blob: Path, work: Path, repeats: int) -> tuple[float, float, float]:
    """Median seconds of ours and of raw paho, and the median of the per-repeat throughput ratios."""
    ours, raw = [], []
    transfer_ours(config, blob, work)  # untimed warm-up of both
    transfer_raw(config, blob)
    for i in range(repeats):
        for name in (("ours", "raw") if i % 2 == 0 else ("raw", "ours")):
            if name == "ours":
                ours.append(transfer_ours(config, blob, work))
            else:
                raw.append(transfer_raw(config, blob))
    return statistics.median(ours), statistics.median(raw), statistics.median(r / o for o, r in zip(ours, raw))


def print_transfer(args, work: Path) -> None:
    config = MqttConfig.from_url(args.broker, prefix="bench-ota")
    settings = [(f"{config.url}, loopback, no link limit", config, args.mb)]
    proxy = LinkProxy(config.host, config.port, args.link_mbit * 1e6 / 8) if args.link_mbit else None
    if proxy is not None:
        settings.append((f"a {args.link_mbit:g} Mbit/s link per connection (a device's network)",
                         config.replace(host="127.0.0.1", port=proxy.port), args.link_mb))
    try:
        for label, setting, mb in settings:
            blob = work / f"blob-{mb}.bin"
            blob.write_bytes(np.random.default_rng(0).integers(0, 256, mb << 20, dtype=np.uint8).tobytes())
            ours, raw, ratio = compare_transfers(setting, blob, work, args.repeats)
            size_mb = (mb << 20) / 1e6
            print(f"\nbundle transfer over MQTT, {mb} MiB through {label}, median of {args.repeats} interleaved")
            print(f"  plain paho publishes (QoS 1, 1 MiB)     {size_mb / raw:7.1f} MB/s")
            print(f"  ChunkServer -> ChunkDownloader          {size_mb / ours:7.1f} MB/s  "
                  "(request window 8, sha256 per chunk, fsynced checkpoints)")
            print(f"  ours / raw throughput                   {ratio:.3f}x  (goal >= 0.8)")
    finally:
        if proxy is not None:
            proxy.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=20.0, help="camera frame rate (default 20)")
    parser.add_argument("--updates", type=int, default=5, help="OTA updates during the run (default 5)")
    parser.add_argument("--health-window", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--mb", type=int, default=64, help="MiB transferred per run (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="transfer repeats (default 5)")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--only", choices=("swap", "transfer"), default=None, help="run one part")
    parser.add_argument("--link-mbit", type=float, default=100.0,
                        help="also compare through a link of this many Mbit/s per connection (0: skip)")
    parser.add_argument("--link-mb", type=int, default=16, help="MiB per run through the link (default 16)")
    args = parser.parse_args()
    print(f"OTA benchmark on {cpu_model()}, {usable_cores()} core(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="edge-sdk-bench-ota-") as tmp:
        work = Path(tmp)
        if args.only != "transfer":
            print_swap(args, swap_benchmark(args, work))
        if args.only != "swap":
            print_transfer(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
