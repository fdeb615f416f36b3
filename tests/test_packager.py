"""converters.package end to end: a real CNN on real handwriting, packaged for every kind of profile,
loaded back by the device runtime, plus the accuracy gate on a model built to have one fragile layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="packaging needs the host extra (TensorFlow)")
cv2 = pytest.importorskip("cv2")

from converters import AccuracyGateError, package  # noqa: E402
from converters.base import ConversionError  # noqa: E402
from converters.samples import DIGIT_LABELS, load_digits_split, train_digits_cnn  # noqa: E402
from edge_sdk.cli.main import main  # noqa: E402

PRE = dict(labels=DIGIT_LABELS, max_accuracy_drop=1.0)


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


@pytest.fixture(scope="module")
def cnn(split):
    return train_digits_cnn(split)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, split):
    """Real digit images as PNG files in class subfolders (the folder names give the labels)."""
    root = tmp_path_factory.mktemp("calib")
    for i, (image, label) in enumerate(zip(split.test_images[:300], split.test_labels[:300])):
        folder = root / str(label)
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return root


def _accuracy(bundle, keys_dir, split, n=200, **load):
    import edge_sdk

    with edge_sdk.load(bundle, trusted=keys_dir, **load) as model:
        got = np.array([model.predict(img).top.index for img in split.test_images[300:300 + n]])
        golden = model.golden_check()
    return float((got == split.test_labels[300:300 + n]).mean()), golden


@pytest.mark.parametrize("profile, fmt, quant", [
    ("raspberry-pi-4", "tflite", "int8"),
    ("esp32-s3", "tflite", "int8"),
    ("coral-usb", "tflite", "int8"),
])
def test_digits_cnn_packaged_for_tflite_profiles(tmp_path, keys, cnn, split, calib_dir, profile, fmt, quant):
    result = package(cnn, profile, calib_dir, output=tmp_path, signing_key=keys.key, **PRE)
    manifest = result.manifest
    assert (manifest.profile, manifest.format, manifest.quantization["mode"]) == (profile, fmt, quant)
    gate = result.report["gate"]
    validation = gate["validation"]
    assert gate["passed"] and validation["accuracy_drop_points"] <= 1.0
    assert validation["quantized_accuracy"] > 0.9 and validation["samples"] >= 80
    assert {"float_latency_ms", "quantized_latency_ms", "quantized_is_slower"} <= set(validation)
    assert result.report["compatibility"]["compatible"]
    sizes = result.report["sizes"]
    assert sizes["model_bytes"] < sizes["float_reference_bytes"] * (0.5 if quant == "int8" else 1.01)
    spec = manifest.inputs[0]
    from device_profiles import load_profile

    assert spec.dtype == load_profile(profile).runtime.input_dtype
    if spec.dtype != "float32":
        assert spec.scale and spec.zero_point is not None
    load = {"allow_cpu_fallback": True} if profile == "coral-usb" else {}
    accuracy, golden = _accuracy(result.path, keys.trusted_dir, split, **load)
    assert accuracy >= 0.9 and golden <= 1.0
    from edge_sdk.bundle import open_bundle

    stored = json.loads(open_bundle(result.path, trusted=keys.trust).read("report.json"))
    assert stored["gate"]["passed"] and stored["profile"] == profile


def test_gate_keeps_a_fragile_layer_in_float_where_the_profile_allows(tmp_path, keys, split, calib_dir):
    fragile = _fragile_cnn(split)
    result = package(fragile, "raspberry-pi-4", calib_dir, output=tmp_path, signing_key=keys.key, **PRE)
    gate = result.report["gate"]
    assert len(gate["rounds"]) >= 2 and gate["rounds"][0]["accuracy_drop"] > 1.0
    assert gate["passed"] and result.manifest.quantization["keep_float"]
    # The per-channel noise-to-signal ranking names the fragile layer in the first round.
    assert any("fragile" in name for name in gate["rounds"][1]["keep_float"])
    with pytest.raises(AccuracyGateError) as err:
        package(fragile, "coral-usb", calib_dir, output=tmp_path / "coral", signing_key=keys.key, **PRE)
    assert "runs integer ops only" in str(err.value) and err.value.worst_layers
    assert err.value.drop > 1.0


def _fragile_cnn(split):
    """The digits CNN with one layer whose activations carry a huge outlier channel.

    Per-tensor int8 activation scales are set by the outlier, which crushes the
    other 63 channels into a few levels: int8 loses accuracy unless that layer
    stays in float.
    """
    base = train_digits_cnn(split, seed=1)
    x = tf.keras.Input(shape=(8, 8, 1), batch_size=1, name="image")
    h = x
    for layer in base.layers[:-2]:
        h = layer(h)
    dense, head = base.layers[-2], base.layers[-1]
    w, b = dense.get_weights()
    boosted = tf.keras.layers.Dense(w.shape[1] + 1, activation="relu", name="fragile")
    boosted.build((1, w.shape[0]))
    boosted.set_weights([np.concatenate([w, np.full((w.shape[0], 1), 400.0, np.float32)], 1),
                         np.concatenate([b, [2000.0]]).astype(np.float32)])
    h = boosted(h)
    hw, hb = head.get_weights()
    new_head = tf.keras.layers.Dense(10, activation="softmax", name="probs")
    new_head.build((1, w.shape[1] + 1))
    new_head.set_weights([np.concatenate([hw, np.zeros((1, 10), np.float32)], 0), hb])
    return tf.keras.Model(x, new_head(h), name="fragile_cnn")


def test_onnx_profiles_from_an_onnx_model(tmp_path, keys, split, calib_dir):
    from converters.samples import softmax_to_onnx, train_softmax

    onnx_path = softmax_to_onnx(train_softmax(split), tmp_path / "digits.onnx")
    for profile, act in (("generic-x86", "uint8"), ("jetson-orin-nano", "int8")):
        result = package(onnx_path, profile, calib_dir, output=tmp_path / profile, signing_key=keys.key,
                         quantization="int8", **PRE)
        assert result.manifest.format == "onnx" and result.manifest.quantization["activation_type"] == act
        assert result.report["gate"]["passed"]
        load = {"allow_cpu_fallback": True} if profile.startswith("jetson") else {}
        accuracy, _ = _accuracy(result.path, keys.trusted_dir, split, **load)
        assert accuracy >= 0.9


def test_bad_inputs_are_clear_errors(tmp_path, keys, cnn, calib_dir):
    with pytest.raises(ConversionError, match="model file not found"):
        package(tmp_path / "missing.onnx", "generic-x86", calib_dir, signing_key=keys.key)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ConversionError, match="junk.keras"):
        package(junk, "raspberry-pi-4", calib_dir, signing_key=keys.key)
    weird = tmp_path / "model.pt"
    weird.write_bytes(b"x")
    with pytest.raises(ConversionError, match="unsupported model format '.pt'"):
        package(weird, "raspberry-pi-4", calib_dir, signing_key=keys.key)
    from edge_sdk.errors import ProfileNotFoundError

    with pytest.raises(ProfileNotFoundError, match="no-such-board"):
        package(cnn, "no-such-board", calib_dir, signing_key=keys.key)
    with pytest.raises(ConversionError, match="needs calibration data"):
        package(cnn, "raspberry-pi-4", None, signing_key=keys.key)
    with pytest.raises(ConversionError, match="not allowed for this profile"):
        package(cnn, "coral-usb", calib_dir, signing_key=keys.key, quantization="float32")


def test_cli_package_prints_report_and_json(tmp_path, keys, cnn, calib_dir, capsys):
    model_path = tmp_path / "digits.keras"
    cnn.save(model_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(DIGIT_LABELS))
    key = keys.key_dir / "signing.key"
    code = main(["package", str(model_path), "--profile", "raspberry-pi-4", "--calibration", str(calib_dir),
                 "--labels", str(labels), "--key", str(key), "-o", str(tmp_path / "out"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["report"]["gate"]["passed"]
    assert out["bundle"].endswith("-1.0.0-raspberry-pi-4.edgepkg")
    code = main(["package", str(model_path), "--profile", "raspberry-pi-4", "--calibration", str(calib_dir),
                 "--key", str(key), "-o", str(tmp_path / "out2")])
    text = capsys.readouterr()
    assert code == 0 and "gate passed" in text.out and "speed:" in text.out
    with pytest.raises(SystemExit) as exit_:
        main(["package", str(model_path), "--profile", "raspberry-pi-4", "--input-shape", "1,x"])
    assert exit_.value.code == 2 and "expected a shape" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_model_packaged_for_a_tflite_profile_through_the_bridge(tmp_path, keys, cnn, split, calib_dir):
    """An NCHW ONNX CNN -> onnx2tf (isolated tool) -> our TFLite int8 with our calibration -> Raspberry Pi bundle."""
    import onnx

    from test_bridges import _onnx_from_keras_cnn

    path = tmp_path / "digits_nchw.onnx"
    onnx.save(_onnx_from_keras_cnn(cnn), str(path))
    result = package(path, "raspberry-pi-4", calib_dir, output=tmp_path, signing_key=keys.key,
                     preprocessing=__import__("converters").Preprocessing(layout="NCHW"), **PRE)
    assert result.manifest.format == "tflite" and result.manifest.name == "digits_nchw"
    assert result.manifest.inputs[0].layout == "NHWC"
    assert "onnx2tf" in result.report["source"]["converted_via"]
    assert result.report["gate"]["passed"]
    accuracy, golden = _accuracy(result.path, keys.trusted_dir, split)
    assert accuracy >= 0.9 and golden <= 1.0


def test_extra_files_travel_hashed_and_signed_in_the_bundle(tmp_path, keys, cnn, calib_dir):
    from edge_sdk.bundle import open_bundle

    image = tmp_path / "app.signed.bin"
    image.write_bytes(b"\x3d\xb8\xf3\x96" + bytes(range(256)) * 8)  # an MCUboot-looking blob
    result = package(cnn, "raspberry-pi-4", calib_dir, output=tmp_path, signing_key=keys.key,
                     extra_files={"firmware/app.signed.bin": image}, **PRE)
    verified = open_bundle(result.path, trusted=keys.trust)
    assert verified.read("firmware/app.signed.bin") == image.read_bytes()
    assert verified.manifest.file("firmware/app.signed.bin").role == "extra"
    with pytest.raises(ConversionError, match="'labels.txt' is taken by the bundle itself"):
        package(cnn, "raspberry-pi-4", calib_dir, output=tmp_path / "x", signing_key=keys.key,
                extra_files={"labels.txt": image}, **PRE)
    with pytest.raises(SystemExit) as usage:
        main(["package", "m.onnx", "--profile", "raspberry-pi-4", "--extra", "../escape=" + str(image)])
    assert usage.value.code == 2


def test_calibration_class_folders_are_matched_to_the_labels_by_name(tmp_path, keys, cnn, split):
    """Folders named after the classes sort differently from the label list ("eight" < "five" < ... < "zero");
    accuracy must still be measured against the right classes."""
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    root = tmp_path / "named"
    for i, (image, label) in enumerate(zip(split.test_images[:300], split.test_labels[:300])):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    result = package(cnn, "raspberry-pi-4", root, output=tmp_path, signing_key=keys.key, labels=names,
                     max_accuracy_drop=1.0)
    validation = result.report["gate"]["validation"]
    assert validation["measure"] == "top-1 accuracy drop"
    assert validation["float_accuracy"] > 0.9 and validation["quantized_accuracy"] > 0.9
