"""Packaging promises: a light import, the right extras, and the quick start demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path


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
    # the quick start trains and packages on the host and runs the Pi profile's engine, with or without Mosquitto
    assert {"scikit-learn", "tensorflow-cpu", "ai-edge-litert", "amqtt"} <= {
        d.split(">")[0].split("=")[0] for d in extras["demo"]}
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
