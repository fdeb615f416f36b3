"""ONNX sources: load and clean an ``.onnx`` model, or turn a Keras model / SavedModel into one.

Cleaning is a short sequence of named steps, the same for every ONNX model a
backend works from, so node names (what ``QuantRecipe.keep_float`` refers to)
are stable between the float reference, the quantized model and the per-layer
error report:

1. ``onnx.checker`` validates the graph;
2. dynamic input dimensions are pinned: the batch to 1, the others from
   ``input_shape`` (the CLI's ``--input-shape``), or a :class:`ConversionError`
   says what to pass;
3. an opset below 13 is upgraded with ``onnx.version_converter`` (per-channel
   QDQ needs ``QuantizeLinear`` with ``axis``, which opset 13 introduced);
4. ONNX shape inference, so every activation has a type and shape to quantize;
5. ONNX Runtime's *basic* graph optimisations, offline: constant folding,
   redundant-node elimination, Conv+BatchNorm fusion. Basic only: the extended
   and full levels write ONNX Runtime's own fused operators, which no other
   ONNX engine runs;
6. every node gets a unique, non-empty name.

onnx, onnxruntime and tensorflow are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from converters.base import ConversionError, SourceModel
from edge_sdk.errors import MissingDependencyError
from edge_sdk.runtime.base import TensorInfo

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

MIN_OPSET = 13  # QuantizeLinear/DequantizeLinear with a per-channel axis
TF2ONNX_OPSET = 17
_PROTOBUF_LIMIT = 2**31 - 1  # a ModelProto larger than this cannot be serialised in one piece
_DEFAULT_DOMAINS = ("", "ai.onnx")


def require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", "host", "loading ONNX models") from exc
    return onnx


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "host", "optimising ONNX models") from exc
    return onnxruntime


# ---------------------------------------------------------------------------------------------- loading


def load_onnx(path_or_proto: Any, input_shape: tuple[int, ...] | None = None) -> SourceModel:
    """Load an ONNX model (a path, serialized bytes or an ``onnx.ModelProto``) and clean it for conversion.

    ``input_shape`` pins the first input's dynamic dimensions; without it only a
    dynamic batch dimension is allowed (pinned to 1).
    """
    model, name, path = _read(path_or_proto)
    model = clean_onnx(model, input_shape, name)
    inputs, outputs = tensor_infos(model)
    return SourceModel(kind="onnx", name=name, obj=model, inputs=inputs, outputs=outputs, path=path)


def _read(path_or_proto: Any) -> tuple["onnx.ModelProto", str, Path | None]:
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto, "<onnx model>", None
    if isinstance(path_or_proto, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(path_or_proto)), "<onnx bytes>", None
        except (DecodeError, ValueError) as exc:
            raise ConversionError("<onnx bytes>", f"not an ONNX model (cannot parse the protobuf: {exc})") from exc
    if not isinstance(path_or_proto, (str, os.PathLike)):
        raise ConversionError(
            repr(type(path_or_proto).__name__), "expected a path to an .onnx file, its bytes or an onnx.ModelProto"
        )
    path = Path(path_or_proto)
    if not path.is_file():
        raise ConversionError(str(path), "model file not found" if not path.exists() else "not a file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise ConversionError(str(path), f"not an ONNX model (cannot parse the protobuf: {exc})") from exc
    return model, str(path), path


def clean_onnx(
    model: "onnx.ModelProto", input_shape: tuple[int, ...] | None = None, name: str = "<onnx model>"
) -> "onnx.ModelProto":
    """The steps in the module docstring; returns a new model, ``model`` is not changed."""
    onnx = require_onnx()
    working = onnx.ModelProto()
    working.CopyFrom(model)
    _check(working, name)
    _pin_inputs(working, input_shape, name)
    working = _upgrade_opset(working, name)
    working = _infer_shapes(working, name)
    working = _ort_basic_optimise(working, name)
    _name_nodes(working)
    return working


def _check(model: "onnx.ModelProto", name: str) -> None:
    onnx = require_onnx()
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise ConversionError(name, "models larger than 2 GB (external data) are not supported")
    if not model.graph.node:
        raise ConversionError(name, "not an ONNX model: the graph has no nodes")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(name, f"invalid ONNX graph: {_first_line(exc)}") from exc


def graph_inputs(model: "onnx.ModelProto") -> list:
    """The real inputs: old exporters also list every initializer as a graph input."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _dims(value_info) -> list[int | str]:
    """Each dimension as an int, or its symbolic name ('?' for an unnamed dynamic dimension)."""
    out: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(d.dim_value)
        else:
            out.append(d.dim_param or "?")
    return out


def _pin_inputs(model: "onnx.ModelProto", input_shape: tuple[int, ...] | None, name: str) -> None:
    """Fix every input dimension: batch -> 1, the first input's others from ``input_shape``."""
    for index, value in enumerate(graph_inputs(model)):
        dims = _dims(value)
        wanted = _wanted_shape(value.name, dims, input_shape if index == 0 else None, name)
        if wanted == dims:
            continue
        shape = value.type.tensor_type.shape
        for d, size in zip(shape.dim, wanted):
            d.Clear()
            d.dim_value = size
        # Outputs and intermediate shapes may still name the old symbols: let shape inference redo them.
        _forget_dynamic_shapes(model)


def _wanted_shape(input_name: str, dims: list[int | str], input_shape: tuple[int, ...] | None, name: str) -> list[int]:
    if input_shape is not None:
        wanted = [int(v) for v in input_shape]
        if len(wanted) != len(dims):
            raise ConversionError(
                name,
                f"input {input_name!r} has {len(dims)} dimensions {dims!r}, "
                f"but input_shape {tuple(wanted)!r} has {len(wanted)}",
            )
        if any(v <= 0 for v in wanted):
            raise ConversionError(name, f"input_shape {tuple(wanted)!r} must have positive dimensions")
        clash = [(i, d, w) for i, (d, w) in enumerate(zip(dims, wanted)) if isinstance(d, int) and d != w and i > 0]
        if clash:
            where = ", ".join(f"dimension {i} is {d} in the model but {w} in input_shape" for i, d, w in clash)
            raise ConversionError(
                name, f"input_shape {tuple(wanted)!r} does not match input {input_name!r} of shape {dims!r}: {where}"
            )
        if isinstance(dims[0], int) and dims[0] != wanted[0]:
            raise ConversionError(
                name, f"input_shape {tuple(wanted)!r} does not match input {input_name!r} of shape {dims!r}: "
                      f"the batch dimension is fixed at {dims[0]}"
            )
        return wanted
    dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if [i for i in dynamic if i > 0]:
        hint = ",".join(
            str(d) if isinstance(d, int) else ("1" if i == 0 else str(d).upper()) for i, d in enumerate(dims)
        )
        raise ConversionError(
            name,
            f"input {input_name!r} has dynamic shape {dims!r}; pass --input-shape {hint} "
            f"(input_shape=({hint.replace(',', ', ')}) from Python) with the size the model was trained for",
        )
    return [1 if not isinstance(d, int) else d for d in dims]


def _forget_dynamic_shapes(model: "onnx.ModelProto") -> None:
    del model.graph.value_info[:]
    for output in model.graph.output:
        for d in output.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()


def opset_of(model: "onnx.ModelProto") -> int:
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            return int(opset.version)
    return 0


def _upgrade_opset(model: "onnx.ModelProto", name: str) -> "onnx.ModelProto":
    opset = opset_of(model)
    if opset >= MIN_OPSET:
        return model
    onnx = require_onnx()
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError/bare C++ errors per adapter
        raise ConversionError(
            name, f"cannot upgrade the model from opset {opset} to {MIN_OPSET} (needed for per-channel quantization): "
                  f"{_first_line(exc)}; re-export the model with opset >= {MIN_OPSET}"
        ) from exc
    log.info("%s: upgraded opset %d -> %d", name, opset, MIN_OPSET)
    return upgraded


def _infer_shapes(model: "onnx.ModelProto", name: str) -> "onnx.ModelProto":
    onnx = require_onnx()
    # Strict where ONNX knows every operator; custom-domain operators (ONNX Runtime contrib ops) have no schema here.
    strict = all(n.domain in _DEFAULT_DOMAINS for n in model.graph.node)
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=strict)
    except Exception as exc:  # InferenceError, or a C++ error surfaced as RuntimeError
        raise ConversionError(name, f"invalid ONNX graph (shape inference failed): {_first_line(exc)}") from exc


def _ort_basic_optimise(model: "onnx.ModelProto", name: str) -> "onnx.ModelProto":
    """Constant folding and friends, by ONNX Runtime at its basic level; the model unchanged if that fails."""
    onnx = require_onnx()
    ort = require_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="edge-sdk-onnx-") as tmp:
        target = Path(tmp) / "optimised.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's Fail/InvalidGraph/NotImplemented share no base class
            raise ConversionError(name, f"ONNX Runtime cannot load this model: {_first_line(exc)}") from exc
        optimised = onnx.load(str(target))
    foreign = sorted({n.domain for n in optimised.graph.node if n.domain not in _DEFAULT_DOMAINS}
                     - {n.domain for n in model.graph.node})
    if foreign:
        log.warning("%s: ONNX Runtime's optimisation introduced operators of %s; keeping the unoptimised graph",
                    name, foreign)
        return model
    # ONNX Runtime declares every domain it knows; keep only those the graph uses or the source declared.
    used = {n.domain for n in optimised.graph.node} | {o.domain for o in model.opset_import}
    kept = [o for o in optimised.opset_import if o.domain in used]
    del optimised.opset_import[:]
    optimised.opset_import.extend(kept)
    try:
        onnx.checker.check_model(optimised)
    except onnx.checker.ValidationError as exc:
        log.warning("%s: ONNX Runtime's optimised graph fails the checker (%s); keeping the unoptimised graph",
                    name, _first_line(exc))
        return model
    # ONNX Runtime writes the optimised graph without the original's metadata; keep it (class names, strides...).
    del optimised.metadata_props[:]
    optimised.metadata_props.extend(model.metadata_props)
    optimised.producer_name, optimised.producer_version = model.producer_name, model.producer_version
    return optimised


def _name_nodes(model: "onnx.ModelProto") -> None:
    """Give unnamed (or duplicate-named) nodes a unique name: keep_float and the layer report need one."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{index}"
            candidate, n = base, 1
            while candidate in seen:
                candidate, n = f"{base}_{n}", n + 1
            node.name = candidate
        seen.add(node.name)


def tensor_infos(model: "onnx.ModelProto") -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """The graph's inputs and outputs as :class:`TensorInfo` (-1 for a dimension still unknown)."""
    from onnx import helper

    def info(value) -> TensorInfo:
        elem = value.type.tensor_type.elem_type
        dtype = str(helper.tensor_dtype_to_np_dtype(elem)) if elem else "unknown"
        return TensorInfo(value.name, tuple(d if isinstance(d, int) else -1 for d in _dims(value)), dtype)

    return tuple(info(v) for v in graph_inputs(model)), tuple(info(v) for v in model.graph.output)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "..."


# ------------------------------------------------------------------------------------- TensorFlow -> ONNX


def _import_tf2onnx(purpose: str):
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError("tensorflow", "host", purpose) from exc
    try:
        import tf2onnx
    except ImportError as exc:
        raise MissingDependencyError("tf2onnx", "host", purpose) from exc
    return tf, tf2onnx


def keras_to_onnx(
    keras_model: Any,
    input_shape: tuple[int, ...] | Sequence[tuple[int, ...]] | None = None,
    opset: int = TF2ONNX_OPSET,
) -> "onnx.ModelProto":
    """Convert a Keras model to ONNX with tf2onnx, through a ``tf.function`` with a fixed input signature.

    ``input_shape`` is the shape of the single input, or one shape per input;
    ``None`` takes the model's own input shapes with the batch pinned to 1.
    Input and output names are the Keras input and output layer names.
    """
    tf, tf2onnx = _import_tf2onnx("converting Keras models to ONNX")
    name = f"<keras model {getattr(keras_model, 'name', '')!s}>"
    inputs = list(getattr(keras_model, "inputs", None) or [])
    if not inputs:
        raise ConversionError(
            name, "the Keras model has no defined inputs; build it (call it once or give it an Input)"
        )
    shapes = _keras_input_shapes(inputs, input_shape, name)
    in_names = [_tensor_name(t, f"input_{i}") for i, t in enumerate(inputs)]
    out_names = _keras_output_names(keras_model)
    spec = tuple(tf.TensorSpec(shape, t.dtype or tf.float32, name=n) for shape, t, n in zip(shapes, inputs, in_names))

    @tf.function(input_signature=spec)
    def serve(*args):
        result = keras_model(list(args) if len(args) > 1 else args[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return {n: r for n, r in zip(out_names, result)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises ValueError/RuntimeError/KeyError from deep inside its graph rewriters
        raise ConversionError(name, f"tf2onnx could not convert the model: {_first_line(exc)}") from exc
    _set_producer(proto, "tf2onnx", tf2onnx.__version__)
    return proto


def saved_model_to_onnx(
    path: str | os.PathLike, input_shape: tuple[int, ...] | None = None, opset: int = TF2ONNX_OPSET,
    signature: str = "serving_default",
) -> "onnx.ModelProto":
    """Convert a TensorFlow SavedModel's serving signature to ONNX with tf2onnx (single-input signatures)."""
    tf, tf2onnx = _import_tf2onnx("converting SavedModels to ONNX")
    name = str(path)
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures[signature]
    except KeyError as exc:
        raise ConversionError(name, f"the SavedModel has no signature {signature!r}") from exc
    except Exception as exc:  # tf raises OSError, ValueError, NotFoundError... for unreadable SavedModels
        raise ConversionError(name, f"cannot load the SavedModel: {_first_line(exc)}") from exc
    specs = fn.structured_input_signature[1]
    if len(specs) != 1:
        raise ConversionError(
            name, f"only single-input signatures are supported; {signature!r} takes {sorted(specs)!r}"
        )
    (arg, tspec), = specs.items()
    dims = [d if d is not None else "?" for d in tspec.shape.as_list()]
    shape = _wanted_shape(arg, dims, input_shape, name)
    spec = (tf.TensorSpec(shape, tspec.dtype, name=arg),)

    @tf.function(input_signature=spec)
    def serve(x):
        return fn(**{arg: x})

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as exc:  # see keras_to_onnx
        raise ConversionError(name, f"tf2onnx could not convert the SavedModel: {_first_line(exc)}") from exc
    _set_producer(proto, "tf2onnx", tf2onnx.__version__)
    return proto


def _keras_input_shapes(inputs: list, input_shape, name: str) -> list[list[int]]:
    if input_shape is None:
        given: list = [None] * len(inputs)
    elif input_shape and all(isinstance(v, (int,)) for v in input_shape):
        given = [tuple(input_shape)] + [None] * (len(inputs) - 1)
    else:
        given = [tuple(s) for s in input_shape]
    if len(given) != len(inputs):
        raise ConversionError(name, f"the model has {len(inputs)} inputs but {len(given)} input shapes were given")
    shapes = []
    for tensor, shape in zip(inputs, given):
        dims = [d if d is not None else "?" for d in tuple(tensor.shape)]
        shapes.append(_wanted_shape(_tensor_name(tensor, "input"), dims, shape, name))
    return shapes


def _tensor_name(tensor: Any, default: str) -> str:
    name = getattr(tensor, "name", None) or default
    return name.split(":")[0]


def _keras_output_names(model: Any) -> list[str]:
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    out = []
    for i, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        operation = getattr(history, "operation", None) or getattr(history, "layer", None)
        out.append(getattr(operation, "name", None) or f"output_{i}")
    return out


def _set_producer(proto: "onnx.ModelProto", producer: str, version: str) -> None:
    proto.producer_name, proto.producer_version = producer, version
