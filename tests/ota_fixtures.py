"""Real bundles, real digit images and real agent processes for the OTA, agent and fleet tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.bundle import write_bundle
from edge_sdk.bundle.manifest import Manifest
from edge_sdk.mqtt import MqttClient, MqttConfig, OtaProgress, Status, Topics

REPO = Path(__file__).resolve().parents[1]

# (state the device stopped in, how the job ends after the restart, the version it then runs) when 1.0.0 runs
# and 1.1.0 is being installed: before the commit nothing of the new model is trusted, downloads resume.
RESTART_OUTCOMES = [
    ("downloading", "committed", "1.1.0"),
    ("verifying", "committed", "1.1.0"),
    ("staged", "committed", "1.1.0"),
    ("activating", "failed", "1.0.0"),
    ("health_check", "rolled_back", "1.0.0"),
]


@dataclass(frozen=True)
class Bundles:
    v1: Path
    v2: Path
    v3_broken: Path  # signed, valid, but its weights answer wrongly: fails the golden check
    v0_old: Path  # an older version, for downgrade tests
    other_profile: Path  # a valid bundle built for jetson-orin-nano
    big: Path  # 1.1.5 with 6 MiB of extra payload, to catch a download mid-way
    images: Path  # a directory of real digit images (PNG)


def make_bundles(directory: Path, signing_key) -> Bundles:
    """Digits classifiers (softmax regression as ONNX, trained on scikit-learn's digits) in several versions."""
    from converters.samples import SoftmaxClassifier, load_digits_split, softmax_bundle, train_softmax

    directory.mkdir(parents=True, exist_ok=True)
    split = load_digits_split()
    good = train_softmax(split)
    broken = SoftmaxClassifier(-good.weights, good.bias)  # answers wrongly; its golden pair says what good says

    def build(version: str, classifier=good, profile: str = "generic-x86", **options) -> Path:
        return softmax_bundle(classifier, split, directory / f"digits-{version}-{profile}.edgepkg", signing_key,
                              version=version, profile=profile, golden_from=good, **options)

    images = directory / "images"
    images.mkdir(exist_ok=True)
    for i, (image, label) in enumerate(zip(split.test_images[:40], split.test_labels[:40])):
        cv2.imwrite(str(images / f"{i:03d}_{label}.png"), np.squeeze(image).astype(np.uint8))
    return Bundles(build("1.0.0"), build("1.1.0"), build("1.2.0", broken), build("0.9.0"),
                   build("1.1.0", profile="jetson-orin-nano"), build("1.1.5", extra_bytes=6 << 20), images)


def bundle_variant(source: Path, output: Path, signing_key, drop=(), add=None, **changes) -> Path:
    """A copy of ``source`` with manifest fields changed, files dropped or added, signed by ``signing_key``."""
    with zipfile.ZipFile(source) as zf:
        manifest = Manifest.from_bytes(zf.read("manifest.json"))
        files = {e.name: zf.read(e.name) for e in manifest.files if e.name not in drop}
    return write_bundle(replace(manifest, **changes), {**files, **(add or {})}, output, signing_key)


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


def tampered_copy(source: Path, output: Path, entry: str = "model.onnx") -> Path:
    """``source`` with one bit flipped in the middle of ``entry``'s stored data (what its sha256 pin must catch)."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as zf:
        info = zf.getinfo(entry)
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x01
    output.write_bytes(bytes(data))
    return output
