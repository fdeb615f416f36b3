"""Real bundles, real digit images and real agent processes for the OTA, agent and fleet tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conftest import npy_bytes
from edge_sdk.bundle import GoldenSpec, InputSpec, OutputSpec, TaskSpec, write_bundle
from edge_sdk.bundle.manifest import Manifest
from edge_sdk.mqtt import MqttClient, MqttConfig, OtaProgress, Status, Topics

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bundles:
    v1: Path
    v2: Path
    v3_broken: Path  # signed, valid, but its weights answer wrongly: fails the golden check
    v0_old: Path  # an older version, for downgrade tests
    other_profile: Path  # a valid bundle built for jetson-orin-nano
    big: Path  # 1.1.5 with 6 MiB of extra payload, to catch a download mid-way
    images: Path  # a directory of real digit images (PNG)


def _manifest(name: str, version: str, profile: str, engine: str, fmt: str, model: str, batch: int) -> Manifest:
    return Manifest(
        name=name, version=version, created="2026-11-23T00:00:00Z", profile=profile, engine=engine, format=fmt, model=model,
        files=(),
        inputs=(InputSpec("image", (batch, 8, 8, 1), "float32", color_order="GRAY", std=(255.0,)),),
        outputs=(OutputSpec("probs", (batch, 10), "float32"),),
        task=TaskSpec("classification", labels="labels.txt", params={"top_k": 3}),
        golden=GoldenSpec({"image": "golden/in.npy"}, {"probs": "golden/out.npy"}, atol=1e-5, rtol=1e-4),
    )


def make_bundles(directory: Path, signing_key) -> Bundles:
    """Digits classifiers (softmax regression as ONNX, trained on scikit-learn's digits) in several versions."""
    from converters.samples import SoftmaxClassifier, load_digits_split, softmax_to_onnx, train_softmax

    directory.mkdir(parents=True, exist_ok=True)
    split = load_digits_split()
    good = train_softmax(split)
    golden_in = split.test_images[:1].astype(np.float32) / np.float32(255)
    golden_out = good.predict_proba(split.test_images[:1])

    def build(version: str, classifier, profile: str = "generic-x86", extra: int = 0) -> Path:
        onnx_path = softmax_to_onnx(classifier, directory / f"digits-{version}-{profile}.onnx", batch=1)
        manifest = _manifest("digits", version, profile, "onnxruntime", "onnx", "model.onnx", 1)
        files = {"model.onnx": onnx_path, "labels.txt": "\n".join(map(str, range(10))).encode(),
                 "golden/in.npy": npy_bytes(golden_in), "golden/out.npy": npy_bytes(golden_out)}
        if extra:
            files["extra/padding.bin"] = np.random.default_rng(1).integers(0, 256, extra, np.uint8).tobytes()
        return write_bundle(manifest, files, directory / f"digits-{version}-{profile}.edgepkg", signing_key)

    images = directory / "images"
    images.mkdir(exist_ok=True)
    for i, (image, label) in enumerate(zip(split.test_images[:40], split.test_labels[:40])):
        cv2.imwrite(str(images / f"{i:03d}_{label}.png"), np.squeeze(image).astype(np.uint8))
    broken = SoftmaxClassifier(-good.weights, good.bias)
    return Bundles(build("1.0.0", good), build("1.1.0", good), build("1.2.0", broken), build("0.9.0", good),
                   build("1.1.0", good, "jetson-orin-nano"), build("1.1.5", good, extra=6 << 20), images)


class Collector:
    """Subscribes to every status and OTA progress message of the fleet and keeps them, decoded."""

    def __init__(self, url: str, prefix: str = "edge") -> None:
        self.topics = Topics(prefix)
        self.client = MqttClient(MqttConfig.from_url(url, prefix=prefix))
        self.progress: list[OtaProgress] = []
        self.status: dict[str, Status] = {}
        self.telemetry: list[dict] = []
        self._changed = threading.Condition()
        self.client.subscribe(self.topics.subscription("ota_progress"), self._on_progress)
        self.client.subscribe(self.topics.subscription("status"), self._on_status)
        self.client.subscribe(self.topics.subscription("telemetry"), self._on_telemetry)
        self.client.start()
        assert self.client.wait_connected(10)

    def _on_progress(self, topic: str, payload: bytes) -> None:
        with self._changed:
            self.progress.append(OtaProgress.from_payload(payload))
            self._changed.notify_all()

    def _on_status(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        with self._changed:
            status = Status.from_payload(payload)
            self.status[status.device_id] = status
            self._changed.notify_all()

    def _on_telemetry(self, topic: str, payload: bytes) -> None:
        with self._changed:
            self.telemetry.append(json.loads(payload))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; progress so far: "
                                         f"{[(p.device_id, p.job_id, p.state, p.error) for p in self.progress]}")
                self._changed.wait(min(left, 0.5))

    def states(self, job_id: str, device: str | None = None) -> list[str]:
        return [p.state for p in self.progress if p.job_id == job_id and (device is None or p.device_id == device)]

    def final(self, job_id: str, device: str, timeout: float = 60.0) -> OtaProgress:
        terminal = {"committed", "rolled_back", "failed"}
        return self.wait_for(lambda: next((p for p in reversed(self.progress) if p.job_id == job_id
                                           and p.device_id == device and p.state in terminal), None),
                             timeout, f"job {job_id} to end on {device}")

    def close(self) -> None:
        self.client.close()


class AgentProcess:
    """``edge-sdk agent`` as a real subprocess (so that it can be killed with SIGKILL)."""

    def __init__(self, url: str, device: str, state_dir: Path, trusted: Path, *extra: str,
                 profile: str = "generic-x86", log_path: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "edge_sdk", "-v", "agent", "--broker", url, "--device-id", device,
                     "--profile", profile, "--state-dir", str(state_dir), "--trusted-dir", str(trusted),
                     "--keepalive", "5", *extra]
        self.device = device
        self.log_path = log_path or state_dir.parent / f"{device}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *more: str) -> "AgentProcess":
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.args, *more], stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return -9
        return self.proc.returncode if self.proc else 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
