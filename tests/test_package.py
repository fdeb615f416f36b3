"""Packaging promises: a light import, the right extras, and the quick start demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "onnx", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tflite_micro", "torch",
         "cv2", "sklearn")


def test_import_edge_sdk_stays_light():
    code = (
        "import sys, json, edge_sdk, edge_sdk.bundle, edge_sdk.cli.main, device_profiles;"
        "device_profiles.list_profiles();"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout) == []


def test_extras_keep_heavy_dependencies_off_devices():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for heavy in ("tensorflow", "onnx", "torch", "tf2onnx"):
        assert heavy not in base
    extras = project["optional-dependencies"]
    assert any(d.startswith("ai-edge-litert") for d in extras["litert"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["jetson"])
    assert any(d.startswith("tflite-micro") for d in extras["tflm"])
    assert any(d.startswith("tensorflow") for d in extras["host"])
    assert project["scripts"]["edge-sdk"] == "edge_sdk.cli.main:main"
    assert project["name"] == "edge-deploy-sdk"


def test_missing_dependency_error_names_the_extra():
    from edge_sdk.errors import MissingDependencyError

    err = MissingDependencyError("onnx", "host", "writing ONNX models")
    assert isinstance(err, ImportError)
    assert "pip install 'edge-deploy-sdk[host]'" in str(err)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test"]
    assert "make test" in readme and "make demo" in readme


def test_demo_runs_end_to_end_and_reuses_its_work(tmp_path):
    pytest.importorskip("sklearn", reason="the demo extra (scikit-learn) is not installed")
    pytest.importorskip("onnx", reason="the demo extra (onnx) is not installed")
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "edge_sdk", "demo", "--workdir", str(work)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "generating a development Ed25519 signing key" in first.stderr
    bundle = work / "bundles" / "digits-1.0.0-generic-x86.edgepkg"
    assert bundle.is_file()
    assert "bad bundles refused  3/3" in first.stdout
    assert "does not match its sha256" in first.stdout
    assert "built for profile 'generic-x86' but this device is 'raspberry-pi-4'" in first.stdout
    assert "which is not trusted" in first.stdout
    if "onnxruntime not installed" not in first.stdout:
        assert "golden input matches its expected output" in first.stdout
        run_line = next(line for line in first.stdout.splitlines() if "pipeline over" in line)
        assert "pipeline over 359 real digit images" in run_line and "0 dropped" in run_line
        assert float(run_line.split("accuracy ")[1].split("%")[0]) > 90.0
    accuracy = float(first.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90.0
    key_before = (work / "keys" / "signing.key").read_bytes()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "reusing development signing key" in second.stderr
    assert (work / "keys" / "signing.key").read_bytes() == key_before
    from edge_sdk.bundle import open_bundle

    verified = open_bundle(bundle, trusted=work / "trusted-keys", profile="generic-x86")
    assert verified.manifest.task.kind == "classification"
