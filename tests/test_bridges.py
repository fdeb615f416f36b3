"""ONNX -> TFLite through the isolated onnx2tf tool: real model, real tool, real LiteRT, checked against ONNX Runtime.

The tests marked ``slow`` use onnx2tf's own environment under the edge-sdk
cache (installed from the package index on first use, about a minute; cached
afterwards).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from converters import bridges
from converters.base import ConversionError, QuantRecipe, SourceModel
from converters.calibration import Samples
from converters.samples import load_digits_split, train_digits_cnn
from edge_sdk.runtime.base import TensorInfo

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "ai_edge_litert", "onnx", "onnxruntime")),
    reason="needs tensorflow, onnx, onnxruntime (the 'host' extra) and ai-edge-litert",
)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def onnx_cnn(digits):
    """The sample digits CNN rebuilt as an NCHW ONNX graph from its trained Keras weights."""
    return _onnx_from_keras_cnn(train_digits_cnn(digits))


@pytest.fixture(scope="module")
def source(onnx_cnn):
    from converters.onnx_models import load_onnx

    return load_onnx(onnx_cnn.SerializeToString())


@pytest.fixture(scope="module")
def bridged(source, tmp_path_factory):
    return bridges.bridge(source, "tflite", tmp_path_factory.mktemp("bridge"))


def _onnx_from_keras_cnn(keras_model):
    """Conv-Relu-Conv-Relu-MaxPool-Flatten-Gemm-Relu-Gemm-Softmax on a (1, 1, 8, 8) NCHW input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    convs = [layer.get_weights() for layer in keras_model.layers if type(layer).__name__ == "Conv2D"]
    dense = [layer.get_weights() for layer in keras_model.layers if type(layer).__name__ == "Dense"]
    (w1, b1), (w2, b2) = convs
    (d1, db1), (d2, db2) = dense
    # Keras flattens the pooled (4, 4, C) map in HWC order, ONNX's Flatten in CHW order.
    channels = w2.shape[3]
    d1 = d1.reshape(4, 4, channels, -1).transpose(2, 0, 1, 3).reshape(4 * 4 * channels, -1)
    weights = {"w1": w1.transpose(3, 2, 0, 1), "b1": b1, "w2": w2.transpose(3, 2, 0, 1), "b2": b2,  # HWIO -> OIHW
               "d1": d1, "db1": db1, "d2": d2, "db2": db2}
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            node("Relu", ["c1"], ["r1"], name="relu1"),
            node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
            node("Relu", ["c2"], ["r2"], name="relu2"),
            node("MaxPool", ["r2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
            node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
            node("Gemm", ["flat", "d1", "db1"], ["g1"], name="dense1"),
            node("Relu", ["g1"], ["hidden"], name="relu3"),
            node("Gemm", ["hidden", "d2", "db2"], ["logits"], name="dense2"),
            node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
        ],
        "digits_cnn_nchw",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-sdk-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _nchw(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)


def _nhwc(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def _ort_probs(model, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _nchw(images)
    return np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])


def _litert_probs(model: bytes, images: np.ndarray) -> np.ndarray:
    """Run every image through LiteRT, quantizing/dequantizing integer I/O with the model's own parameters."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for x in _nhwc(images):
        x = x[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y.reshape(1, -1))
    return np.concatenate(results)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean() * 100.0)


# ---------------------------------------------------------------- ONNX -> TFLite


@pytest.mark.slow
def test_bridged_source_is_an_nhwc_saved_model_named_after_the_onnx_model(source, bridged):
    assert source.inputs[0].shape == (1, 1, 8, 8)
    assert bridged.kind == "saved_model"
    assert bridged.inputs[0].shape == (1, 8, 8, 1)  # onnx2tf moved the channels last
    assert bridged.inputs[0].dtype == "float32"
    assert [o.shape for o in bridged.outputs] == [(1, 10)]
    assert bridged.name == f"{source.name} (via onnx2tf {bridges.ONNX2TF_VERSION})"
    assert (Path(bridged.obj) / "saved_model.pb").is_file()


@pytest.mark.slow
def test_float_tflite_matches_onnx_runtime(onnx_cnn, bridged, digits):
    from converters.backends.tflite import TFLiteBackend

    converted = TFLiteBackend().convert(bridged, QuantRecipe("float32"), None)
    assert converted.inputs[0].shape == (1, 8, 8, 1)

    expected = _ort_probs(onnx_cnn, digits.test_images)
    got = _litert_probs(converted.model, digits.test_images)

    assert _accuracy(expected, digits.test_labels) > 90.0  # a real model, not noise
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.slow
def test_int8_with_our_calibration_keeps_accuracy(onnx_cnn, bridged, digits):
    from converters.backends.tflite import TFLiteBackend

    calibration = Samples(tuple(x[None] for x in _nhwc(digits.train_images[:200])))
    converted = TFLiteBackend().convert(bridged, QuantRecipe("int8", input_dtype="int8", output_dtype="int8"),
                                        calibration)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converted.model)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert {op["op_name"] for op in interpreter._get_ops_details()} >= {"CONV_2D", "FULLY_CONNECTED"}

    float_accuracy = _accuracy(_ort_probs(onnx_cnn, digits.test_images), digits.test_labels)
    int8_accuracy = _accuracy(_litert_probs(converted.model, digits.test_images), digits.test_labels)
    assert int8_accuracy >= float_accuracy - 1.0, (float_accuracy, int8_accuracy)


# ---------------------------------------------------------------- errors


@pytest.mark.slow
def test_model_onnx2tf_cannot_convert_names_the_model(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.custom", name="frob")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example.custom", 1)])
    shape = (1, 3, 8, 8)
    custom = SourceModel("onnx", "custom_op.onnx", model, (TensorInfo("x", shape, "float32"),),
                         (TensorInfo("y", shape, "float32"),))

    with pytest.raises(ConversionError) as caught:
        bridges.bridge(custom, "tflite", tmp_path)

    assert caught.value.source == "custom_op.onnx"
    assert f"onnx2tf {bridges.ONNX2TF_VERSION} cannot convert" in caught.value.reason
    assert "Frobnicate" in caught.value.reason  # the log tail names the operator
    assert (tmp_path / "onnx2tf.log").is_file()
    assert not (tmp_path / bridges.SAVED_MODEL_DIR / "saved_model.pb").exists()


@pytest.mark.slow
def test_failed_install_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SDK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(bridges, "TOOL_REQUIREMENTS", ("onnx2tf==0.0.0.dev999",))  # no such release

    with pytest.raises(ConversionError) as caught:
        bridges.ensure_onnx2tf()

    assert "package index" in caught.value.reason
    assert "onnx2tf==0.0.0.dev999" in caught.value.reason  # pip's own last lines
    assert list((tmp_path / "cache" / "tools").iterdir()) == []


def test_no_bridge_for_tflite_to_onnx(tmp_path):
    source = SourceModel("tflite", "model.tflite", b"TFL3", (), ())

    with pytest.raises(ConversionError) as caught:
        bridges.bridge(source, "onnx", tmp_path)

    assert caught.value.source == "model.tflite"
    assert "'tflite' model cannot be converted to 'onnx'" in caught.value.reason
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kind", "target"), [("keras", "tflite"), ("saved_model", "tflite"), ("tflite", "tflite"),
                                              ("onnx", "onnx"), ("keras", "onnx"), ("saved_model", "onnx")])
def test_no_bridge_needed_returns_the_source_itself(kind, target, tmp_path, monkeypatch):
    monkeypatch.setattr(bridges, "ensure_onnx2tf", lambda *_: pytest.fail("the tool must not be touched"))
    source = SourceModel(kind, f"model.{kind}", object(), (), ())

    assert bridges.bridge(source, target, tmp_path) is source
