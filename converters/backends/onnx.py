"""ONNX output: float32, fp16, dynamic int8 and static int8 (QDQ) models through onnxruntime's tools.

Static int8 uses the QDQ format: ``QuantizeLinear``/``DequantizeLinear`` pairs
around each quantized operator, which ONNX Runtime (CPU, CUDA, TensorRT) fuses
into integer kernels. The model's inputs and outputs stay float32, so a
profile asking for integer I/O cannot be served by this backend.

The backend works from the cleaned graph of :mod:`converters.onnx_models`:
node names there are what :attr:`QuantRecipe.keep_float` and
:meth:`OnnxBackend.layer_errors` use, and they do not change between the
float reference, the quantized model and the layer report. Keras models and
SavedModels are first converted with tf2onnx.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converters.base import Converted, ConversionError, LayerError, QuantRecipe, SourceModel
from converters.onnx_models import (
    require_onnx,
    require_onnxruntime,
    clean_onnx,
    graph_inputs,
    keras_to_onnx,
    opset_of,
    saved_model_to_onnx,
)

if TYPE_CHECKING:
    import onnx

    from converters.calibration import Samples

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
_EPS = 1e-12


class _SamplesReader:
    """onnxruntime's ``CalibrationDataReader`` over :class:`Samples` (duck-typed: ``get_next`` is all it checks)."""

    def __init__(self, names: list[str], calibration: "Samples", limit: int | None = None) -> None:
        self._names = names
        self._batches = list(calibration.batches())[:limit]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return dict(zip(self._names, batch))

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


class OnnxBackend:
    """Converter backend for ``runtime.format = "onnx"`` profiles.

    ``calibrate_method`` picks onnxruntime's range estimator for int8
    (``minmax``, ``entropy`` or ``percentile``); ``layer_error_samples`` bounds
    how many calibration samples :meth:`layer_errors` runs (it keeps every
    intermediate tensor of two models per sample).
    """

    format = "onnx"

    def __init__(self, *, calibrate_method: str = "minmax", layer_error_samples: int = 16) -> None:
        if calibrate_method not in CALIBRATION_METHODS:
            raise ConversionError(
                "OnnxBackend",
                f"calibrate_method must be one of {', '.join(CALIBRATION_METHODS)}, got {calibrate_method!r}",
            )
        if layer_error_samples < 1:
            raise ConversionError("OnnxBackend", f"layer_error_samples must be at least 1, got {layer_error_samples!r}")
        self.calibrate_method = calibrate_method
        self.layer_error_samples = layer_error_samples
        self._converted: tuple[SourceModel, "onnx.ModelProto", dict[str, str]] | None = None  # the last tf2onnx result

    # ------------------------------------------------------------------------------------------ convert

    def convert(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples | None") -> Converted:
        """``source`` as an ONNX model quantized per ``recipe``; int8 needs ``calibration``."""
        _check_io_dtypes(source, recipe)
        model, origin = self._float_model(source)
        _check_keep_float(source, model, recipe)
        if recipe.mode == "float32":
            result, details = model, {"converter": "onnx"}
        elif recipe.mode == "fp16":
            result, details = _to_fp16(source, model, recipe)
        elif recipe.mode == "dynamic":
            result, details = _quantize_dynamic(source, model, recipe)
        else:
            result, details = _quantize_static(source, model, recipe, calibration, self.calibrate_method)
        data = result.SerializeToString()
        inputs, outputs = _session_io(source, data)
        ort = require_onnxruntime()
        details = {**details, "onnxruntime": ort.__version__, "opset": opset_of(result), **origin}
        return Converted(model=data, format=self.format, inputs=inputs, outputs=outputs, recipe=recipe, details=details)

    def _float_model(self, source: SourceModel) -> tuple["onnx.ModelProto", dict[str, str]]:
        """The cleaned float ONNX graph of ``source``.

        A Keras model or SavedModel goes through tf2onnx once: the packager
        converts the same source several times (float reference, int8, layer
        errors, int8 again with layers kept in float), and node names must not
        change between those.
        """
        if source.kind == "onnx":
            return source.obj, {}
        if self._converted is not None and self._converted[0] is source:
            return self._converted[1], self._converted[2]
        shapes = [tuple(t.shape) for t in source.inputs]
        if source.kind == "keras":
            proto = keras_to_onnx(source.obj, shapes)
        elif source.kind == "saved_model":
            if len(shapes) != 1:
                raise ConversionError(source.name, "only single-input SavedModels can be converted to ONNX")
            proto = saved_model_to_onnx(source.path or source.obj, shapes[0])
        else:
            raise ConversionError(
                source.name, f"cannot make an ONNX model from a {source.kind!r} model; "
                             "give the original Keras model, SavedModel or ONNX file"
            )
        model = clean_onnx(proto, None, source.name)
        origin = {"source_converter": f"{proto.producer_name} {proto.producer_version}".strip()}
        self._converted = (source, model, origin)
        return model, origin

    # ------------------------------------------------------------------------------------- layer errors

    def layer_errors(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples") -> list[LayerError]:
        """How much quantizing each node hurts under ``recipe`` (as int8), worst first.

        The float model runs on up to ``layer_error_samples`` calibration
        samples with every intermediate tensor saved
        (``onnxruntime.quantization.qdq_loss_debug``); each tensor the QDQ
        model quantizes is quantized alone with its scale and zero point, and
        its error is the noise-to-signal power ratio that adds, averaged over
        its channels; each weight's error is the same ratio of its dequantized
        values (``create_weight_matching``). A node scores the worst of the
        tensors it touches. Ratios are scale-free, so nodes compare; names are
        node names, what ``keep_float`` takes.
        """
        from onnxruntime.quantization import qdq_loss_debug as qdq

        _check_io_dtypes(source, recipe)
        model, _ = self._float_model(source)
        _check_keep_float(source, model, recipe)
        int8 = replace(recipe, mode="int8")
        quantized, _ = _quantize_static(source, model, int8, calibration, self.calibrate_method)
        onnx = require_onnx()
        with tempfile.TemporaryDirectory(prefix="edge-sdk-qdq-") as tmp:
            float_path, qdq_path, augmented = (str(Path(tmp) / n) for n in ("float.onnx", "qdq.onnx", "augmented.onnx"))
            onnx.save(model, float_path)
            onnx.save(quantized, qdq_path)
            qdq.modify_model_output_intermediate_tensors(float_path, augmented)
            noise = _activation_noise(augmented, quantized, model, calibration, self.layer_error_samples)
            weights = _weight_noise(qdq.create_weight_matching(float_path, qdq_path), model)
        return _rank_nodes(model, noise, weights)

    # -------------------------------------------------------------------------------------------- ops

    def ops(self, model: bytes) -> list[str]:
        """``op_type`` of every node, subgraphs (If/Loop bodies) included, in graph order."""
        onnx = require_onnx()
        from google.protobuf.message import DecodeError

        try:
            proto = onnx.load_model_from_string(model)
        except (DecodeError, ValueError) as exc:
            raise ConversionError("<onnx bytes>", f"not an ONNX model: {exc}") from exc
        return list(_walk_ops(proto.graph))


# ----------------------------------------------------------------------------------------- recipe checks


def _check_io_dtypes(source: SourceModel, recipe: QuantRecipe) -> None:
    allowed = ("float32", "float16") if recipe.mode == "fp16" else ("float32",)
    for what, dtype in (("input", recipe.input_dtype), ("output", recipe.output_dtype)):
        if dtype not in allowed:
            raise ConversionError(
                source.name,
                f"ONNX {recipe.mode} models keep float {what}s, but the recipe asks for {what}_dtype {dtype!r}: "
                "in the QDQ format QuantizeLinear/DequantizeLinear nodes inside the graph do the integer conversion; "
                f"set the profile's {what}_dtype to 'float32'",
            )
    if recipe.mode == "fp16" and recipe.input_dtype != recipe.output_dtype:
        raise ConversionError(
            source.name, f"fp16 ONNX models keep inputs and outputs in one type; got input_dtype "
                         f"{recipe.input_dtype!r} and output_dtype {recipe.output_dtype!r}"
        )


def _check_keep_float(source: SourceModel, model: "onnx.ModelProto", recipe: QuantRecipe) -> None:
    names = {n.name for n in model.graph.node}
    unknown = [n for n in recipe.keep_float if n not in names]
    if unknown:
        some = ", ".join(repr(n) for n in sorted(names)[:12])
        raise ConversionError(
            source.name, f"keep_float names {unknown!r}, which are not nodes of this model; node names are like {some}"
        )


# ------------------------------------------------------------------------------------------- conversions


def _to_fp16(source: SourceModel, model: "onnx.ModelProto", recipe: QuantRecipe):
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ConversionError(source.name, f"this onnxruntime has no float16 converter: {exc}") from exc
    keep_io = recipe.input_dtype == "float32"
    try:
        result = convert_float_to_float16(model, keep_io_types=keep_io, node_block_list=list(recipe.keep_float) or None)
    except Exception as exc:  # the converter raises ValueError/KeyError/AssertionError on graphs it cannot handle
        raise ConversionError(source.name, f"float16 conversion failed: {exc}") from exc
    return result, {"converter": "onnxruntime.transformers.float16", "keep_io_types": keep_io,
                    "excluded_nodes": list(recipe.keep_float)}


def _quantize_dynamic(source: SourceModel, model: "onnx.ModelProto", recipe: QuantRecipe):
    onnx = require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = _quant_type(source, QuantType, recipe.weight_type, "weight_type")
    with tempfile.TemporaryDirectory(prefix="edge-sdk-dyn-") as tmp:
        target = Path(tmp) / "dynamic.onnx"
        try:
            quantize_dynamic(
                _preprocessed(model), target, per_channel=recipe.per_channel, weight_type=weight_type,
                nodes_to_exclude=list(recipe.keep_float),
            )
        except Exception as exc:  # onnxruntime.quantization raises ValueError/RuntimeError/KeyError on odd graphs
            raise ConversionError(source.name, f"dynamic quantization failed: {exc}") from exc
        result = onnx.load(str(target))
    return result, {"converter": "onnxruntime.quantization", "method": "quantize_dynamic",
                    "weight_type": recipe.weight_type, "per_channel": recipe.per_channel,
                    "excluded_nodes": list(recipe.keep_float)}


def _quantize_static(source, model, recipe: QuantRecipe, calibration: "Samples | None", calibrate_method: str):
    onnx = require_onnx()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration is None or len(calibration) == 0:
        raise ConversionError(
            source.name,
            "int8 quantization needs calibration data (a directory of representative images or a .npy file)",
        )
    names = _check_calibration(source, model, calibration)
    activation_type = _quant_type(source, QuantType, recipe.activation_type, "activation_type")
    weight_type = _quant_type(source, QuantType, recipe.weight_type, "weight_type")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    extra = {"ActivationSymmetric": recipe.symmetric_activations, "WeightSymmetric": True}
    with tempfile.TemporaryDirectory(prefix="edge-sdk-qdq-") as tmp:
        target = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                _preprocessed(model), target, _SamplesReader(names, calibration),
                quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
                activation_type=activation_type, weight_type=weight_type,
                nodes_to_exclude=list(recipe.keep_float), calibrate_method=method, extra_options=extra,
            )
        except Exception as exc:  # onnxruntime.quantization raises ValueError/RuntimeError/KeyError on odd graphs
            raise ConversionError(source.name, f"int8 quantization failed: {exc}") from exc
        result = onnx.load(str(target))
    return result, {
        "converter": "onnxruntime.quantization", "method": "quantize_static", "quant_format": "QDQ",
        "activation_type": recipe.activation_type, "weight_type": recipe.weight_type,
        "per_channel": recipe.per_channel, "symmetric_activations": recipe.symmetric_activations,
        "calibrate_method": calibrate_method, "calibration_samples": len(calibration),
        "excluded_nodes": list(recipe.keep_float),
    }


def _preprocessed(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy marked as pre-processed for quantization.

    ``clean_onnx`` already did what ``quant_pre_process`` does (shape
    inference, ONNX Runtime's basic optimisation); running it again would
    rename the nodes ``keep_float`` refers to.
    """
    onnx = require_onnx()
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    add_pre_process_metadata(copy)
    return copy


def _quant_type(source: SourceModel, quant_types, name: str, field: str):
    try:
        return getattr(quant_types, _QUANT_TYPES[name])
    except KeyError:
        raise ConversionError(
            source.name, f"{field} must be one of {', '.join(_QUANT_TYPES)} for ONNX, got {name!r}"
        ) from None


def _check_calibration(source: SourceModel, model: "onnx.ModelProto", calibration: "Samples") -> list[str]:
    """The model's input names, after checking the samples fit them."""
    from onnx import helper

    inputs = graph_inputs(model)
    expected = [tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in inputs]
    for n, batch in enumerate(calibration.batches()):
        if len(batch) != len(inputs):
            raise ConversionError(
                source.name, f"calibration sample {n} has {len(batch)} tensor(s) but the model has {len(inputs)} "
                             f"input(s) {[i.name for i in inputs]!r}"
            )
        for tensor, info, shape in zip(batch, inputs, expected):
            dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise ConversionError(
                    source.name, f"calibration sample {n} is {tensor.dtype} {tuple(tensor.shape)!r} but input "
                                 f"{info.name!r} takes {dtype} {shape!r} (check the layout: NCHW or NHWC)"
                )
    return [i.name for i in inputs]


def _session_io(source: SourceModel, data: bytes):
    """The converted model's I/O as ONNX Runtime (the engine devices run) sees it; fails if it cannot load it."""
    from edge_sdk.errors import EngineError
    from edge_sdk.runtime.base import EngineConfig
    from edge_sdk.runtime.ort import OnnxRuntimeEngine

    try:
        engine = OnnxRuntimeEngine(data, EngineConfig(graph_optimization="basic"))
    except EngineError as exc:
        raise ConversionError(source.name, f"the converted model does not load in ONNX Runtime: {exc.reason}") from exc
    try:
        return engine.inputs, engine.outputs
    finally:
        engine.close()


def _walk_ops(graph):
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            if attr.g.node:
                yield from _walk_ops(attr.g)
            for sub in attr.graphs:
                yield from _walk_ops(sub)


# ------------------------------------------------------------------------------------- per-layer errors

def _channel_nsr(noise: np.ndarray, power: np.ndarray) -> float:
    """Mean noise-to-signal power ratio over the channels that carry any signal, each capped at 1 (signal lost).

    Per channel, because channels of one tensor can differ in scale by orders
    of magnitude (an outlier channel; YOLO's box coordinates and class scores
    in one Concat): one quantization step then wipes out the small channels
    while the tensor-wide ratio, dominated by the large one, still looks fine.
    """
    live = power > 0.0  # a ReLU-dead channel is exactly zero in float and after quantization
    return float(np.mean(np.minimum(noise[live] / power[live], 1.0))) if live.any() else 0.0


def _per_channel(values: np.ndarray, shape: tuple[int, ...] | None, axis: int) -> np.ndarray:
    """``values`` (flattened by the debug outputs) as (channels, rest) along ``axis`` of ``shape``."""
    if not shape or len(shape) < 2 or int(np.prod(shape)) != values.size:
        return values.reshape(1, -1)
    return np.moveaxis(values.reshape(shape), axis, 0).reshape(shape[axis], -1)


class _Noise:
    """Running per-channel powers of one float activation and of the error its QuantizeLinear/DequantizeLinear adds."""

    __slots__ = ("scale", "zero_point", "qmin", "qmax", "shape", "power", "noise")

    def __init__(self, scale: float, zero_point: int, qrange: tuple[int, int], shape: tuple[int, ...] | None) -> None:
        self.scale, self.zero_point, (self.qmin, self.qmax), self.shape = scale, zero_point, qrange, shape
        self.power: np.ndarray | float = 0.0
        self.noise: np.ndarray | float = 0.0

    def add(self, value: np.ndarray) -> None:
        x = value.astype(np.float64)
        q = np.clip(np.rint(x / self.scale) + self.zero_point, self.qmin, self.qmax)
        error = (q - self.zero_point) * self.scale - x
        self.power = self.power + np.sum(_per_channel(x, self.shape, 1) ** 2, axis=1)
        self.noise = self.noise + np.sum(_per_channel(error, self.shape, 1) ** 2, axis=1)

    @property
    def error(self) -> float:
        return _channel_nsr(np.atleast_1d(self.noise), np.atleast_1d(self.power))


def _activation_noise(float_path: str, quantized, model, calibration: "Samples", limit: int) -> dict[str, _Noise]:
    """Quantize each float activation alone with the scale the QDQ model gave it, sample by sample.

    Alone: measured on the float model's values, so a badly quantized early
    layer does not make every layer after it look bad too. Streamed, unlike
    ``collect_activations``, which keeps every tensor of every sample.
    """
    ort = require_onnxruntime()
    from onnxruntime.quantization import qdq_loss_debug as qdq

    saved_suffix = getattr(qdq, "_TENSOR_SAVE_POSTFIX", "_ReshapedSavedOutput")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as collect_activations runs it
    options.log_severity_level = 3
    session = ort.InferenceSession(float_path, sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = _shapes(model)
    noise = {t: _Noise(*q, shapes.get(t)) for t, q in _activation_quantization(quantized).items()}
    for feed in _SamplesReader([i.name for i in graph_inputs(model)], calibration, limit):
        for name, value in zip(names, session.run(names, feed)):
            entry = noise.get(name[: -len(saved_suffix)]) if name.endswith(saved_suffix) else None
            if entry is not None:
                entry.add(value)
    return noise


def _activation_quantization(quantized) -> dict[str, tuple[float, int, tuple[int, int]]]:
    """Float tensor name -> (scale, zero point, integer range) of the QuantizeLinear that quantizes it."""
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX

    constants = {t.name: t for t in quantized.graph.initializer}
    found = {}
    for node in quantized.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in constants:
            continue
        scale = numpy_helper.to_array(constants[node.input[1]])
        if scale.size != 1:
            continue  # per-axis activation quantization: not produced by quantize_static
        if len(node.input) > 2 and node.input[2] in constants:
            zero_point = numpy_helper.to_array(constants[node.input[2]])
        else:
            zero_point = np.zeros((), np.uint8)
        info = np.iinfo(zero_point.dtype)
        name = node.input[0]
        name = name[: -len(QUANT_INPUT_SUFFIX)] if name.endswith(QUANT_INPUT_SUFFIX) else name
        found[name] = (float(scale.reshape(())), int(zero_point.reshape(())), (int(info.min), int(info.max)))
    return found


def _shapes(model) -> dict[str, tuple[int, ...]]:
    out = {}
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        dims = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        if dims and all(d > 0 for d in dims):
            out[value.name] = dims
    return out


def _weight_noise(weights: dict[str, dict[str, np.ndarray]], model) -> dict[str, float]:
    """Per-output-channel noise of each quantized weight (``create_weight_matching``'s float vs dequantized)."""
    axes = {}  # weight (a node's second input) -> its output-channel axis
    for node in model.graph.node:
        if len(node.input) > 1:
            transposed = node.op_type == "MatMul" or (
                node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute)
            )
            axes[node.input[1]] = -1 if transposed else 0
    errors = {}
    for name, match in weights.items():
        reference, dequantized = np.asarray(match["float"], np.float64), np.asarray(match["dequantized"], np.float64)
        if reference.shape != dequantized.shape:
            dequantized = dequantized.reshape(reference.shape)
        axis = axes.get(name, 0) % max(reference.ndim, 1)
        ref = _per_channel(reference.ravel(), reference.shape, axis)
        deq = _per_channel(dequantized.ravel(), reference.shape, axis)
        errors[name] = _channel_nsr(np.sum((deq - ref) ** 2, axis=1), np.sum(ref**2, axis=1))
    return errors


def _rank_nodes(model, noise: dict[str, _Noise], weights: dict[str, float]) -> list[LayerError]:
    """A node is as bad as the worst quantized tensor it touches: its outputs, its activation inputs, its weights.

    A tensor's quantization can only be undone by keeping its producer and all
    its consumers in float, so they share its error. Float producers folded
    into the quantized tensor (a Conv whose Relu QDQ removed) share it too.
    """
    producer = {t: node for node in model.graph.node for t in node.output}
    float_tensors = set(_shapes(model)) | {t for node in model.graph.node for t in node.output}
    errors: dict[str, tuple[str, float]] = {}

    def blame(node, value: float) -> None:
        errors[node.name] = (node.op_type, max(value, errors.get(node.name, ("", 0.0))[1]))

    tensor_error = {name: entry.error for name, entry in noise.items()}
    for node in model.graph.node:
        touched = [tensor_error[t] for t in (*node.input, *node.output) if t in tensor_error]
        touched += [weights[t] for t in node.input if t in weights]
        if touched:
            blame(node, max(touched))
        for t in node.output:
            if t in tensor_error:
                for upstream in _folded_producers(node, producer, noise, float_tensors):
                    blame(upstream, tensor_error[t])
    ranked = [LayerError(name, op, error) for name, (op, error) in errors.items()]
    return sorted(ranked, key=lambda e: e.error, reverse=True)


def _folded_producers(node, producer: dict, noise: dict, float_tensors: set[str]) -> list:
    """Nodes feeding ``node`` through activations the QDQ model does not quantize, transitively."""
    found, stack, seen = [], [t for t in node.input if t in float_tensors and t not in noise], set()
    while stack:
        up = producer.get(stack.pop())
        if up is None or up.name in seen:
            continue
        seen.add(up.name)
        found.append(up)
        stack.extend(t for t in up.input if t in float_tensors and t not in noise)
    return found
