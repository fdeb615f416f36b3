"""TFLite backend: Keras / SavedModel -> ``.tflite`` with ``tf.lite.TFLiteConverter``, at each quantization mode.

Modes (:data:`MODE_SETUP`):

* ``float32``: plain conversion;
* ``fp16``: float16 weights (``target_spec.supported_types = [tf.float16]``), float compute;
* ``dynamic``: int8 weights, float activations, no calibration;
* ``int8``: full-integer with the calibration samples as representative
  dataset, ``TFLITE_BUILTINS_INT8`` kernels only and the recipe's I/O dtypes
  (float32, int8 or uint8).

``int8`` with ``recipe.keep_float`` leaves those layers in float: the model is
calibrated once and quantized by ``tf.lite.experimental.QuantizationDebugger``
with ``denylisted_nodes``; float kernels (``TFLITE_BUILTINS``) are allowed
next to the int8 ones, and the I/O dtypes are then set as the converter does
it (``tensorflow.lite.python.util.modify_model_io_type``). The names
``keep_float`` takes are those :meth:`TFLiteBackend.layer_errors` reports: the
output tensor names of the calibrated model.

Keras 3 models are exported the way ``TFLiteConverter.from_keras_model`` does
it internally (a ``keras.export.ExportArchive`` of ``model.__call__`` with
``training=False``), at the pinned input shapes and without the artifact
summary Keras prints to stdout, then converted with ``from_saved_model``. A
``from_concrete_functions`` trace of a Keras 3 model is not used: it keeps the
weights as ``VAR_HANDLE`` / ``READ_VARIABLE`` ops instead of constants.
SavedModels are traced from their ``serving_default`` signature at the pinned
input shapes and converted with ``from_concrete_functions``, which freezes the
SavedModel's variables.

A ``.tflite`` source is passed through unchanged when it already is what the
recipe asks for; it cannot be re-quantized.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

import numpy as np

from converters.base import ConversionError, Converted, LayerError, QuantRecipe, SourceModel
from converters.tf_models import import_tensorflow, load_serving_signature, tflite_io, trace_serving_signature
from edge_sdk.errors import MissingDependencyError

if TYPE_CHECKING:
    from converters.calibration import Samples

log = logging.getLogger(__name__)

FORMAT = "tflite"
PURPOSE = "converting models to TFLite"
# Ops that only move values between float and integer; they are not layers.
CAST_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
INTEGER_TYPES = frozenset({"int8", "uint8", "int16"})


class TFLiteBackend:
    """The ``tflite`` output format (see the module docstring)."""

    format = FORMAT

    def convert(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples | None" = None) -> Converted:
        if source.kind == "tflite":
            return _pass_through(source, recipe)
        tf = import_tensorflow(PURPOSE)
        details: dict[str, Any] = {"converter": FORMAT, "tensorflow": tf.__version__, "mode": recipe.mode}
        if recipe.mode == "int8":
            _check_calibration(source, calibration)
        if recipe.mode == "int8" and recipe.keep_float:
            model = _selective_int8(tf, source, recipe, calibration)
            details["ops_float"] = _check_kept_float(source, model, recipe.keep_float)
        else:
            with _converter(tf, source) as converter:
                MODE_SETUP[recipe.mode](tf, converter, recipe, calibration)
                model = _run(source, converter.convert)
        return _converted(source, model, recipe, details)

    def layer_errors(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples") -> list[LayerError]:
        """Per-channel noise-to-signal ratio of each int8 layer's output against float, worst first.

        For every output channel: mean((float - dequantized)^2) / mean(float^2),
        capped at 1, then averaged over channels (the same measure as the ONNX
        backend). An error in quantization steps (RMSE/scale) would miss the
        layer that matters most: one whose per-tensor scale is set by an outlier
        channel has a small error *in its own steps* while every other channel
        is crushed to a few levels. Layers already in ``recipe.keep_float`` stay
        float while measuring, so they are not reported. ``name`` is the layer's
        output tensor name, which ``keep_float`` (``denylisted_nodes``) accepts.
        """
        if source.kind == "tflite":
            raise _cannot_requantize(source, "per-layer quantization errors need the float model")
        tf = import_tensorflow(PURPOSE)
        _check_calibration(source, calibration)
        with _converter(tf, source) as converter:
            _setup_int8(tf, converter, recipe, calibration, allow_float=True, io_types=False)
            debugger = _debugger(tf, source, converter, calibration, recipe.keep_float)
        _run(source, debugger.run)
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
        errors = []
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            nsr = float(row.get("channel_nsr", "nan"))
            if not math.isfinite(nsr):
                log.warning("%s: no quantization error for %r", source.name, row["tensor_name"])
                continue
            errors.append(LayerError(row["tensor_name"], row["op_name"], nsr))
        return sorted(errors, key=lambda e: e.error, reverse=True)

    def ops(self, model: bytes) -> list[str]:
        """Builtin op names of subgraph 0 in execution order (``CONV_2D``, ...); custom ops as ``CUSTOM:<code>``."""
        return [op.name for op in read_graph(model)]


# ---------------------------------------------------------------- converters per source kind


@contextlib.contextmanager
def _converter(tf: Any, source: SourceModel) -> Iterator[Any]:
    """A ``TFLiteConverter`` for ``source``, valid inside the ``with`` (it may read a temporary export)."""
    make = SOURCE_CONVERTERS.get(source.kind)
    if make is None:
        raise ConversionError(source.name, f"the TFLite converter takes Keras, SavedModel or .tflite models, not "
                                           f"{source.kind!r}; use a profile with an ONNX runtime for ONNX models, "
                                           f"or export the model to Keras/SavedModel first")
    with make(tf, source) as converter:
        yield converter


@contextlib.contextmanager
def _keras_converter(tf: Any, source: SourceModel) -> Iterator[Any]:
    """Export the Keras model's inference call (``training=False``) at the pinned shapes, convert the SavedModel.

    This is what ``TFLiteConverter.from_keras_model`` does for Keras 3, except
    that Keras' ``write_out`` is told not to print the artifact summary to
    stdout (which would corrupt ``edge-sdk package --json``).
    """
    import keras

    model = source.obj
    specs = [tf.TensorSpec(info.shape, tf.as_dtype(info.dtype), name=info.name) for info in source.inputs]
    with tempfile.TemporaryDirectory(prefix="edge-sdk-keras-") as export_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                             specs if len(specs) == 1 else [specs])
        _run(source, lambda: archive.write_out(export_dir, verbose=False))
        # The converter reads the directory again in convert(): keep it until the caller is done.
        yield _run(source, lambda: tf.lite.TFLiteConverter.from_saved_model(export_dir))


@contextlib.contextmanager
def _saved_model_converter(tf: Any, source: SourceModel) -> Iterator[Any]:
    loaded, signature = load_serving_signature(Path(source.obj))
    function = trace_serving_signature(signature, source.inputs, source.name)
    # The loaded object owns the variables; the converter freezes them from it.
    yield tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)


SOURCE_CONVERTERS: dict[str, Callable[[Any, SourceModel], ContextManager[Any]]] = {
    "keras": _keras_converter,
    "saved_model": _saved_model_converter,
}


# ---------------------------------------------------------------- modes


def _setup_float32(tf: Any, converter: Any, recipe: QuantRecipe, calibration: "Samples | None") -> None:
    """Nothing to set: the converter's default is a float32 model."""


def _setup_fp16(tf: Any, converter: Any, recipe: QuantRecipe, calibration: "Samples | None") -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _setup_dynamic(tf: Any, converter: Any, recipe: QuantRecipe, calibration: "Samples | None") -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _setup_int8(tf: Any, converter: Any, recipe: QuantRecipe, calibration: "Samples", *,
                allow_float: bool = False, io_types: bool = True) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration.batches
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
        [tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float else [])
    if io_types:
        converter.inference_input_type = _tf_dtype(tf, recipe.input_dtype)
        converter.inference_output_type = _tf_dtype(tf, recipe.output_dtype)
    # No public option; the converter and QuantizationDebugger both read this attribute.
    converter._experimental_disable_per_channel = not recipe.per_channel


MODE_SETUP: dict[str, Callable[..., None]] = {
    "float32": _setup_float32,
    "fp16": _setup_fp16,
    "dynamic": _setup_dynamic,
    "int8": _setup_int8,
}


def _tf_dtype(tf: Any, name: str) -> Any:
    dtypes = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
    if name not in dtypes:
        raise ConversionError(name, f"TFLite model inputs/outputs can be {', '.join(dtypes)}, not {name!r}")
    return dtypes[name]


def _selective_int8(tf: Any, source: SourceModel, recipe: QuantRecipe, calibration: "Samples") -> bytes:
    """int8 with the ``keep_float`` layers in float, then the recipe's I/O dtypes."""
    with _converter(tf, source) as converter:
        _setup_int8(tf, converter, recipe, calibration, allow_float=True, io_types=False)
        debugger = _debugger(tf, source, converter, calibration, recipe.keep_float)
    model = _run(source, debugger.get_nondebug_quantized_model)
    if (recipe.input_dtype, recipe.output_dtype) == ("float32", "float32"):
        return model
    # What TFLiteConverter itself does for inference_input_type / inference_output_type; no public API for
    # a model that QuantizationDebugger produced.
    from tensorflow.lite.python.util import modify_model_io_type

    return _run(source, lambda: modify_model_io_type(
        model, _tf_dtype(tf, recipe.input_dtype), _tf_dtype(tf, recipe.output_dtype)))


def channel_nsr(float_tensors, quant_tensors, scale: float, zero_point: int) -> float:
    """Noise-to-signal per output channel (last axis), capped at 1, averaged over the channels that carry signal."""
    reference = np.concatenate([np.asarray(t, np.float64).reshape(-1, np.shape(t)[-1]) for t in float_tensors])
    quantized = np.concatenate([np.asarray(t, np.float64).reshape(-1, np.shape(t)[-1]) for t in quant_tensors])
    dequantized = (quantized - zero_point) * scale
    signal = np.mean(reference**2, axis=0)
    noise = np.mean((reference - dequantized) ** 2, axis=0)
    live = signal > 1e-12
    if not live.any():
        return 0.0
    return float(np.mean(np.minimum(noise[live] / signal[live], 1.0)))


def _debugger(tf: Any, source: SourceModel, converter: Any, calibration: "Samples", keep_float: tuple[str, ...]) -> Any:
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(keep_float) or None, layer_direct_compare_metrics={"channel_nsr": channel_nsr})
    return _run(source, lambda: tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration.batches, debug_options=options))


def _check_kept_float(source: SourceModel, model: bytes, keep_float: tuple[str, ...]) -> list[str]:
    """The ops left in float; every ``keep_float`` name must be the output of one of them."""
    float_ops = [op for op in read_graph(model) if op.name not in CAST_OPS and "float32" in op.output_types]
    float_tensors = {name for op in float_ops for name in op.output_names}
    unknown = [name for name in keep_float if name not in float_tensors]
    if unknown:
        raise ConversionError(source.name, f"cannot keep {unknown!r} in float: no layer has that output tensor; "
                                           f"use the names layer_errors reports")
    return [op.name for op in float_ops]


def _check_calibration(source: SourceModel, calibration: "Samples | None") -> None:
    if calibration is None or len(calibration) == 0:
        raise ConversionError(source.name, "int8 needs calibration data: pass --calibration (a directory of "
                                           "representative images or a .npy file)")
    if len(source.inputs) != 1:
        raise ConversionError(source.name, f"int8 calibration feeds one input; this model has {len(source.inputs)}")
    expected, got = source.inputs[0].shape, tuple(calibration.tensors[0].shape)
    if got != expected:
        raise ConversionError(source.name, f"calibration samples ({calibration.source}) have shape {list(got)!r} but "
                                           f"input {source.inputs[0].name!r} takes {list(expected)!r}")


def _run(source: SourceModel, step: Callable[[], Any]) -> Any:
    """``step()``, with the converter's own failures turned into a :class:`ConversionError`."""
    try:
        from tensorflow.lite.python.convert_phase import ConverterError
    except ImportError:  # private module moved: still catch what the converter raises most
        ConverterError = RuntimeError
    try:
        return step()
    except (ConverterError, ValueError, RuntimeError, TypeError) as exc:
        raise ConversionError(source.name, f"TFLite conversion failed: {exc}") from exc


def _converted(source: SourceModel, model: bytes, recipe: QuantRecipe, details: dict[str, Any]) -> Converted:
    inputs, outputs = tflite_io(model, source.name)
    if recipe.mode == "int8":
        have = (inputs[0].dtype if inputs else None, outputs[0].dtype if outputs else None)
        if have != (recipe.input_dtype, recipe.output_dtype):
            # A float layer at the very start or end keeps float I/O (QuantizationDebugger's model).
            log.warning("%s: the int8 model has %s input / %s output, not %s / %s, because a layer next to the I/O "
                        "stays in float", source.name, *have, recipe.input_dtype, recipe.output_dtype)
    return Converted(bytes(model), FORMAT, inputs, outputs, recipe, details)


# ---------------------------------------------------------------- .tflite sources


def _pass_through(source: SourceModel, recipe: QuantRecipe) -> Converted:
    model: bytes = source.obj
    have = tflite_mode(model)
    io_have = (source.inputs[0].dtype, source.outputs[0].dtype) if source.inputs and source.outputs else ("?", "?")
    if have != recipe.mode or recipe.keep_float or io_have != (recipe.input_dtype, recipe.output_dtype):
        want = f"{recipe.mode} with {recipe.input_dtype}/{recipe.output_dtype} I/O" + (
            f" and {list(recipe.keep_float)!r} in float" if recipe.keep_float else "")
        raise _cannot_requantize(source, f"this .tflite is {have} with {io_have[0]}/{io_have[1]} I/O; the profile "
                                         f"needs {want}")
    return Converted(model, FORMAT, source.inputs, source.outputs, recipe,
                     {"converter": FORMAT, "mode": have, "passthrough": True})


def _cannot_requantize(source: SourceModel, what: str) -> ConversionError:
    return ConversionError(str(source.path or source.name),
                           f"{what}, and a .tflite model cannot be re-quantized; convert from the original "
                           f"Keras, SavedModel or ONNX model instead")


def tflite_mode(model: bytes) -> str:
    """What quantization a ``.tflite`` has: float32, fp16, dynamic, int8, or mixed (int8 with float layers)."""
    ops = [op for op in read_graph(model) if op.name not in CAST_OPS]
    tensor_types = set(read_tensor_types(model))
    if "float16" in tensor_types:
        return "fp16"
    if not tensor_types & INTEGER_TYPES:
        return "float32"
    float_layers = any("float32" in op.output_types for op in ops)
    int_layers = any(set(op.output_types) & INTEGER_TYPES for op in ops)
    if not float_layers:
        return "int8"
    return "mixed" if int_layers else "dynamic"


# ---------------------------------------------------------------- reading .tflite flatbuffers


@dataclass(frozen=True)
class GraphOp:
    """One operator of subgraph 0: its op name and its output tensors' names and dtypes."""

    name: str
    output_names: tuple[str, ...]
    output_types: tuple[str, ...]


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError as exc:
            raise MissingDependencyError("ai-edge-litert", "litert", "reading .tflite models") from exc
    return schema


def _root(model: bytes) -> tuple[Any, Any]:
    if len(model) < 8 or bytes(model[4:8]) != b"TFL3":
        raise ConversionError("<tflite bytes>", "not a TFLite model (no 'TFL3' flatbuffer identifier)")
    schema = _schema()
    root = schema.Model.GetRootAs(model, 0)
    if root.SubgraphsLength() < 1:
        raise ConversionError("<tflite bytes>", "the TFLite model has no subgraph")
    return schema, root


def read_graph(model: bytes) -> list[GraphOp]:
    """The operators of subgraph 0 in order, parsed from the flatbuffer (no interpreter, no delegates)."""
    schema, root = _root(model)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = root.Subgraphs(0)
    result = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = root.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # codes > 127 live only in BuiltinCode
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            name = f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
        else:
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
        outputs = [graph.Tensors(op.Outputs(j)) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        result.append(GraphOp(
            name,
            tuple(t.Name().decode() for t in outputs),
            tuple(type_names.get(t.Type(), str(t.Type())) for t in outputs),
        ))
    return result


def read_tensor_types(model: bytes) -> list[str]:
    """The dtype of every tensor in subgraph 0 (weights and activations)."""
    schema, root = _root(model)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = root.Subgraphs(0)
    return [type_names.get(graph.Tensors(i).Type(), str(graph.Tensors(i).Type())) for i in range(graph.TensorsLength())]
