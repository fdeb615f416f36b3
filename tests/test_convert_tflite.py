"""The TFLite converter backend and the TensorFlow-family loaders, on a real CNN trained on scikit-learn's digits.

Every converted model runs in the real LiteRT interpreter on the held-out
digits; integer inputs are quantized here with the model's own scale and zero
point, integer outputs dequantized, so the numbers are what a device sees.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import numpy as np
import pytest

from converters.base import ConversionError, QuantRecipe, SourceModel
from converters.calibration import Samples
from converters.samples import load_digits_split, train_digits_cnn
from edge_sdk.errors import MissingDependencyError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs tensorflow (the 'host' extra) and ai-edge-litert",
)

DIGITS_OPS = ["CONV_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def keras_model(digits):
    return train_digits_cnn(digits)


@pytest.fixture(scope="module")
def test_x(digits) -> np.ndarray:
    return digits.test_images.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def calibration(digits) -> Samples:
    x = digits.train_images[:200].astype(np.float32) / 255.0
    return Samples(tuple(image[None] for image in x), source="digits-train")


@pytest.fixture(scope="module")
def reference(keras_model, test_x) -> np.ndarray:
    return keras_model.predict(test_x, batch_size=1, verbose=0)


@pytest.fixture(scope="module")
def backend():
    from converters.backends.tflite import TFLiteBackend

    return TFLiteBackend()


@pytest.fixture(scope="module")
def source(keras_model):
    from converters.tf_models import load_keras

    return load_keras(keras_model)


@pytest.fixture(scope="module")
def float_model(backend, source):
    return backend.convert(source, QuantRecipe("float32"), None)


@pytest.fixture(scope="module")
def float_accuracy(float_model, test_x, digits) -> float:
    return accuracy(run_tflite(float_model.model, test_x), digits.test_labels)


def run_tflite(model: bytes, images: np.ndarray) -> np.ndarray:
    """Float outputs of ``model`` for each image, one at a time, in the real LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:
        x = image[None]
        if inp["dtype"] != np.float32:
            scale, zero_point = inp["quantization"]
            limits = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero_point), limits.min, limits.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        results.append(y[0])
    return np.stack(results)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def tensor_dtypes(model: bytes) -> dict[str, type]:
    from ai_edge_litert.interpreter import Interpreter

    return {t["name"]: t["dtype"] for t in Interpreter(model_content=model).get_tensor_details()}


def io_details(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


# ---------------------------------------------------------------- modes


def test_float32_agrees_with_keras(float_model, reference, test_x, backend, digits):
    assert float_model.format == "tflite"
    assert np.abs(run_tflite(float_model.model, test_x) - reference).max() < 1e-4
    assert accuracy(reference, digits.test_labels) > 0.9
    assert backend.ops(float_model.model) == DIGITS_OPS
    inp, out = io_details(float_model.model)
    assert float_model.inputs[0].name == inp["name"]
    assert float_model.inputs[0].shape == (1, 8, 8, 1) and float_model.inputs[0].dtype == "float32"
    assert float_model.outputs[0].name == out["name"] and float_model.outputs[0].shape == (1, 10)
    assert float_model.details["mode"] == "float32" and float_model.details["converter"] == "tflite"
    assert float_model.details["tensorflow"]


def test_fp16_keeps_float16_weights(backend, source, float_model, float_accuracy, reference, test_x, digits):
    fp16 = backend.convert(source, QuantRecipe("fp16"), None)
    assert np.float16 in set(tensor_dtypes(fp16.model).values())
    assert len(fp16.model) < 0.6 * len(float_model.model)
    probs = run_tflite(fp16.model, test_x)
    assert np.abs(probs - reference).max() < 1e-2
    assert accuracy(probs, digits.test_labels) >= float_accuracy - 0.01
    assert fp16.inputs[0].dtype == "float32"


def test_conversion_writes_nothing_to_stdout(backend, source, capfd):
    """``edge-sdk package --json`` prints its JSON on stdout; Keras' export summary must not end up there."""
    capfd.readouterr()
    backend.convert(source, QuantRecipe("float32"), None)
    assert capfd.readouterr().out == ""


def test_dynamic_has_int8_weights_and_float_io(backend, source, float_model, float_accuracy, test_x, digits):
    dynamic = backend.convert(source, QuantRecipe("dynamic"), None)
    assert np.int8 in set(tensor_dtypes(dynamic.model).values())
    assert len(dynamic.model) <= 0.4 * len(float_model.model)
    assert (dynamic.inputs[0].dtype, dynamic.outputs[0].dtype) == ("float32", "float32")
    assert accuracy(run_tflite(dynamic.model, test_x), digits.test_labels) >= float_accuracy - 0.01


@pytest.mark.parametrize("io_dtype", ["float32", "int8", "uint8"])
def test_int8_full_integer(io_dtype, backend, source, calibration, float_model, float_accuracy, test_x, digits):
    converted = backend.convert(source, QuantRecipe("int8", input_dtype=io_dtype, output_dtype=io_dtype), calibration)
    inp, out = io_details(converted.model)
    assert np.dtype(inp["dtype"]).name == io_dtype and np.dtype(out["dtype"]).name == io_dtype
    assert converted.inputs[0].dtype == io_dtype and converted.outputs[0].dtype == io_dtype
    if io_dtype != "float32":
        assert (converted.inputs[0].scale, converted.inputs[0].zero_point) == pytest.approx(inp["quantization"])
        # Pixels 0..1 map onto the whole integer range.
        assert converted.inputs[0].scale == pytest.approx(1 / 255, rel=1e-3)
        assert converted.inputs[0].zero_point == (0 if io_dtype == "uint8" else -128)
    # Every activation is integer: the only float tensors are float I/O.
    floats = {name for name, dtype in tensor_dtypes(converted.model).items() if dtype == np.float32}
    assert floats == ({inp["name"], out["name"]} if io_dtype == "float32" else set())
    ops = backend.ops(converted.model)
    assert [op for op in ops if op not in ("QUANTIZE", "DEQUANTIZE")] == DIGITS_OPS
    assert ("QUANTIZE" in ops) == (io_dtype != "int8")
    assert len(converted.model) <= 0.4 * len(float_model.model)
    int8_accuracy = accuracy(run_tflite(converted.model, test_x), digits.test_labels)
    assert int8_accuracy >= float_accuracy - 0.01, (int8_accuracy, float_accuracy)


def test_int8_needs_calibration(backend, source, calibration):
    with pytest.raises(ConversionError, match="--calibration") as info:
        backend.convert(source, QuantRecipe("int8"), None)
    assert info.value.source == source.name
    wrong = Samples((np.zeros((1, 16, 16, 1), np.float32),), source="big.npy")
    with pytest.raises(ConversionError, match=r"big\.npy.*\[1, 16, 16, 1\].*\[1, 8, 8, 1\]"):
        backend.convert(source, QuantRecipe("int8"), wrong)


# ---------------------------------------------------------------- per-layer errors and float fallback


def test_layer_errors_then_keep_worst_layer_float(backend, source, calibration, int8_model, float_accuracy, test_x,
                                                  digits):
    errors = backend.layer_errors(source, QuantRecipe("int8"), calibration)
    assert len(errors) == len(DIGITS_OPS)  # one per layer of the digits CNN
    assert [e.error for e in errors] == sorted((e.error for e in errors), reverse=True)
    assert all(e.error >= 0 for e in errors) and errors[0].error > 0.05  # RMSE in quantization steps
    assert sorted(e.op for e in errors) == sorted(DIGITS_OPS)
    worst = errors[0]
    assert tensor_dtypes(int8_model.model)[worst.name] == np.int8

    recipe = QuantRecipe("int8", "int8", "int8", keep_float=(worst.name,))
    mixed = backend.convert(source, recipe, calibration)
    assert tensor_dtypes(mixed.model)[worst.name] == np.float32
    assert mixed.details["ops_float"] == [worst.op]
    assert accuracy(run_tflite(mixed.model, test_x), digits.test_labels) >= float_accuracy - 0.01

    # Measured again with the worst layer in float, it is no longer reported.
    again = backend.layer_errors(source, recipe, calibration)
    assert worst.name not in {e.name for e in again} and len(again) == len(errors) - 1


@pytest.fixture(scope="module")
def int8_model(backend, source, calibration):
    return backend.convert(source, QuantRecipe("int8", "int8", "int8"), calibration)


def _layer_outputs(model: bytes) -> list[str]:
    from converters.backends.tflite import read_graph

    return [op.output_names[0] for op in read_graph(model)]


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_keep_float_inner_layer_keeps_integer_io(io_dtype, backend, source, calibration, int8_model, test_x, digits,
                                                 float_accuracy):
    dense = _layer_outputs(int8_model.model)[DIGITS_OPS.index("FULLY_CONNECTED")]
    mixed = backend.convert(source, QuantRecipe("int8", io_dtype, io_dtype, keep_float=(dense,)), calibration)
    assert (mixed.inputs[0].dtype, mixed.outputs[0].dtype) == (io_dtype, io_dtype)
    assert tensor_dtypes(mixed.model)[dense] == np.float32
    ops = [op for op in backend.ops(mixed.model) if op != "QUANTIZE"]
    # The float layer sits between a DEQUANTIZE and a QUANTIZE.
    at = ops.index("DEQUANTIZE")
    assert ops[at + 1] == "FULLY_CONNECTED" and ops.count("DEQUANTIZE") == 1
    assert accuracy(run_tflite(mixed.model, test_x), digits.test_labels) >= float_accuracy - 0.01


def test_keep_float_first_layer_leaves_input_float(backend, source, calibration, int8_model, test_x, caplog):
    first_conv = _layer_outputs(int8_model.model)[0]
    with caplog.at_level("WARNING", logger="converters.backends.tflite"):
        mixed = backend.convert(source, QuantRecipe("int8", "int8", "int8", keep_float=(first_conv,)), calibration)
    assert (mixed.inputs[0].dtype, mixed.outputs[0].dtype) == ("float32", "int8")
    assert "float32 input" in caplog.text
    assert backend.ops(mixed.model)[0] == "CONV_2D" and tensor_dtypes(mixed.model)[first_conv] == np.float32
    assert run_tflite(mixed.model, test_x[:10]).shape == (10, 10)


def test_keep_float_unknown_layer_is_an_error(backend, source, calibration):
    with pytest.raises(ConversionError, match="no_such_layer"):
        backend.convert(source, QuantRecipe("int8", keep_float=("no_such_layer",)), calibration)


# ---------------------------------------------------------------- sources


def test_keras_files_load_and_convert(tmp_path, keras_model, backend, reference, test_x):
    from converters.tf_models import load_keras

    for suffix in (".keras", ".h5"):
        path = tmp_path / f"digits{suffix}"
        keras_model.save(path)
        loaded = load_keras(path)
        assert (loaded.kind, loaded.name, loaded.path) == ("keras", path.name, path)
        assert [(i.name, i.shape, i.dtype) for i in loaded.inputs] == [("image", (1, 8, 8, 1), "float32")]
        assert [(o.name, o.shape) for o in loaded.outputs] == [("probs", (1, 10))]
        converted = backend.convert(loaded, QuantRecipe("float32"), None)
        assert np.abs(run_tflite(converted.model, test_x[:50]) - reference[:50]).max() < 1e-4


def test_saved_model_converts(tmp_path, keras_model, backend, calibration, reference, test_x, digits, float_accuracy):
    from converters.tf_models import load_saved_model

    export = tmp_path / "digits_saved_model"
    keras_model.export(str(export))  # its signature has a free batch: None x 8 x 8 x 1
    loaded = load_saved_model(export)
    assert (loaded.kind, loaded.obj) == ("saved_model", str(export))
    assert [(i.name, i.shape) for i in loaded.inputs] == [("image", (1, 8, 8, 1))]
    assert [o.shape for o in loaded.outputs] == [(1, 10)]
    converted = backend.convert(loaded, QuantRecipe("float32"), None)
    assert backend.ops(converted.model) == DIGITS_OPS  # batch pinned: no SHAPE/STRIDED_SLICE for a dynamic batch
    assert converted.inputs[0].shape == (1, 8, 8, 1)
    assert np.abs(run_tflite(converted.model, test_x) - reference).max() < 1e-4
    quantized = backend.convert(loaded, QuantRecipe("int8", "int8", "int8"), calibration)
    assert quantized.inputs[0].dtype == "int8"
    assert accuracy(run_tflite(quantized.model, test_x), digits.test_labels) >= float_accuracy - 0.01


@pytest.fixture(scope="module")
def dynamic_keras():
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(1)
    inp = keras.Input(shape=(None, None, 1), name="img")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(x), name="any_size")


def test_dynamic_shape_needs_input_shape(dynamic_keras, backend):
    from converters.tf_models import load_keras

    with pytest.raises(ConversionError, match=r"input 'img' has dynamic shape \[-1, -1, -1, 1\]; pass --input-shape"):
        load_keras(dynamic_keras)

    pinned = load_keras(dynamic_keras, input_shape=(1, 16, 16, 1))
    assert pinned.inputs[0].shape == (1, 16, 16, 1) and pinned.inputs[0].name == "img"
    assert [(o.name, o.shape) for o in pinned.outputs] == [("scores", (1, 3))]
    converted = backend.convert(pinned, QuantRecipe("float32"), None)
    inp, _ = io_details(converted.model)
    assert list(inp["shape_signature"]) == [1, 16, 16, 1]
    x = np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32)
    expected = np.concatenate([dynamic_keras.predict(image[None], verbose=0) for image in x])
    assert np.abs(run_tflite(converted.model, x) - expected).max() < 1e-4


def test_input_shape_must_match_fixed_dims(keras_model, dynamic_keras):
    from converters.tf_models import load_keras

    with pytest.raises(ConversionError, match=r"'image' has shape \[1, 8, 8, 1\]; --input-shape 1,16,16,1 does not "
                                              r"match it \(dimension 1 is 8, not 16\)"):
        load_keras(keras_model, input_shape=(1, 16, 16, 1))
    with pytest.raises(ConversionError, match=r"rank 4.*--input-shape 1,16,16 has rank 3"):
        load_keras(dynamic_keras, input_shape=(1, 16, 16))
    with pytest.raises(ConversionError, match="batch 1"):
        load_keras(dynamic_keras, input_shape=(8, 16, 16, 1))


@pytest.mark.parametrize("loader, name", [
    ("load_keras", "missing.keras"), ("load_keras", "missing.h5"), ("load_tflite", "missing.tflite"),
    ("load_saved_model", "missing_saved_model"),
])
def test_missing_model_file(tmp_path, loader, name):
    from converters import tf_models

    path = tmp_path / name
    with pytest.raises(ConversionError, match="not found") as info:
        getattr(tf_models, loader)(path)
    assert info.value.source == str(path)


@pytest.mark.parametrize("loader, name, reason", [
    ("load_keras", "model.keras", "not a zip archive"),
    ("load_keras", "model.h5", "not an HDF5 file"),
    ("load_tflite", "model.tflite", "not a TFLite model"),
])
def test_garbage_model_file(tmp_path, loader, name, reason):
    from converters import tf_models

    path = tmp_path / name
    path.write_bytes(b"these bytes are not a model \x00\x01\x02" * 10)
    with pytest.raises(ConversionError, match=reason) as info:
        getattr(tf_models, loader)(path)
    assert info.value.source == str(path)


def test_files_that_are_not_models(tmp_path, keras_model):
    from converters.tf_models import load_keras, load_saved_model, load_tflite

    not_a_model = tmp_path / "archive.keras"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ConversionError, match="cannot load it as a Keras model"):
        load_keras(not_a_model)

    weights = tmp_path / "only.weights.h5"
    keras_model.save_weights(weights)
    with pytest.raises(ConversionError, match="cannot load it as a Keras model") as info:
        load_keras(weights)
    assert info.value.source == str(weights)

    directory = tmp_path / "empty_dir"
    directory.mkdir()
    with pytest.raises(ConversionError, match="no saved_model.pb"):
        load_saved_model(directory)
    (directory / "saved_model.pb").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ConversionError, match="cannot load the SavedModel"):
        load_saved_model(directory)

    # A flatbuffer identifier but no valid model behind it.
    with pytest.raises(ConversionError, match="LiteRT cannot load this model"):
        load_tflite(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(ConversionError, match="expected a Keras model"):
        load_keras(object())


# ---------------------------------------------------------------- .tflite sources


def test_tflite_source_passes_through_or_refuses(tmp_path, backend, float_model, int8_model, calibration):
    from converters.tf_models import load_tflite

    path = tmp_path / "digits_float.tflite"
    path.write_bytes(float_model.model)
    loaded = load_tflite(path)
    assert (loaded.kind, loaded.path, loaded.obj) == ("tflite", path, float_model.model)
    assert loaded.inputs == float_model.inputs and loaded.outputs == float_model.outputs

    same = backend.convert(loaded, QuantRecipe("float32"), None)
    assert same.model == float_model.model and same.details["passthrough"] is True
    for recipe in (QuantRecipe("int8"), QuantRecipe("dynamic"), QuantRecipe("fp16")):
        with pytest.raises(ConversionError, match="cannot be re-quantized.*original Keras, SavedModel or ONNX") as info:
            backend.convert(loaded, recipe, calibration)
        assert info.value.source == str(path)
    with pytest.raises(ConversionError, match="cannot be re-quantized"):
        backend.layer_errors(loaded, QuantRecipe("int8"), calibration)

    loaded_int8 = load_tflite(int8_model.model)
    assert loaded_int8.inputs[0].dtype == "int8" and loaded_int8.inputs[0].scale
    kept = backend.convert(loaded_int8, QuantRecipe("int8", "int8", "int8"), calibration)
    assert kept.model == int8_model.model and kept.inputs == int8_model.inputs
    with pytest.raises(ConversionError, match=r"is int8 with int8/int8 I/O; the profile needs int8 with uint8/uint8 I/O"):
        backend.convert(loaded_int8, QuantRecipe("int8", "uint8", "uint8"), calibration)


def test_onnx_source_is_not_for_this_backend(backend, source):
    onnx_source = SourceModel("onnx", "model.onnx", object(), source.inputs, source.outputs)
    with pytest.raises(ConversionError, match="not 'onnx'"):
        backend.convert(onnx_source, QuantRecipe("float32"), None)


def test_ops_of_garbage_bytes(backend):
    with pytest.raises(ConversionError, match="not a TFLite model"):
        backend.ops(b"garbage bytes")


def test_missing_tensorflow_names_the_extra(monkeypatch, keras_model, backend, source):
    from converters.tf_models import load_keras

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(MissingDependencyError, match=r"edge-deploy-sdk\[host\]") as info:
        load_keras(keras_model)
    assert info.value.package == "tensorflow"
    with pytest.raises(MissingDependencyError, match="tensorflow"):
        backend.convert(source, QuantRecipe("float32"), None)
