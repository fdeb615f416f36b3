"""The README's main command: ``edge-sdk demo`` end to end, twice (the second run reuses what the first built)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from edge_sdk.bundle import open_bundle

pytestmark = pytest.mark.slow


def _broker_port(stdout: str) -> int:
    return int(re.search(r"broker mqtt://127\.0\.0\.1:(\d+)", stdout).group(1))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_shows_the_whole_loop_and_reuses_its_work(tmp_path):
    pytest.importorskip("tensorflow", reason="the demo extra (tensorflow-cpu) is not installed")
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "edge_sdk", "demo", "--workdir", str(work), "--watch", "3"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = first.stdout
    assert first.returncode == 0, out[-4000:] + first.stderr[-4000:]
    assert "generating a development Ed25519 signing key" in first.stderr
    for step in range(1, 8):
        assert f"[{step}/7]" in first.stderr
    # packaged int8 for the Pi, with the gate and the compatibility check
    assert "- convert int8" in out and "- validate float vs quantized" in out and "compatible with raspberry-pi-4: True" in out
    # live telemetry from the broker, first from 1.0.0, then from 1.1.0 after the update
    telemetry = [line for line in out.splitlines() if line.strip().startswith("telemetry")]
    versions = [re.search(r"model (\S+)", line).group(1) for line in telemetry]
    assert versions[0] == "1.0.0" and "1.1.0" in versions and "1.2.0" not in versions
    assert all("errors 0" in line for line in telemetry)
    # the update went through every state and committed; the broken one was rolled back on its golden check
    states = re.findall(r"device demo-pi: (\w+)", out)
    assert states.count("committed") == 1 and states.count("rolled_back") == 1
    assert states[:states.index("committed") + 1][-6:] == ["downloading", "verifying", "staged", "activating",
                                                            "health_check", "committed"]
    assert "1.2.0 rolled back because: golden output mismatch" in out
    lost, seen = map(int, re.search(r"frames lost during the two updates: (\d+) of (\d+)", out).groups())
    assert lost == 0 and seen > 100
    row = next(line for line in out.splitlines() if line.startswith("digits-cnn 1.1.0"))
    stream_accuracy = float(re.search(r"(\d+\.\d)% \(\d+\)", row).group(1))
    assert stream_accuracy > 90.0 and row.rstrip().endswith("committed")
    # what it leaves behind: verified bundles, the device on 1.1.0, and nothing running
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        bundle = work / "bundles" / f"digits-cnn-{version}-raspberry-pi-4.edgepkg"
        manifest = open_bundle(bundle, trusted=work / "trusted-keys", profile="raspberry-pi-4").manifest
        assert manifest.quantization["mode"] == "int8"
    assert json.loads((work / "device" / "active.json").read_text())["version"] == "1.1.0"
    assert not _listening(_broker_port(out))
    key_before = (work / "keys" / "signing.key").read_bytes()

    # the second run on the pure-Python broker, as on a machine without Mosquitto
    second = subprocess.run([*cmd, "--broker-engine", "python"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "reusing the development signing key" in second.stderr
    assert second.stdout.count("reusing ") >= 3 and "training the digits CNN" not in second.stdout
    assert (work / "keys" / "signing.key").read_bytes() == key_before
    assert "frames lost during the two updates: 0 of" in second.stdout
