"""Load TensorFlow-family source models: Keras (object, ``.keras``, ``.h5``), SavedModel directories and ``.tflite`` files.

Each loader returns a :class:`~converters.base.SourceModel` whose input shapes
are pinned: batch 1, and every other dynamic dimension taken from
``input_shape`` (the CLI's ``--input-shape``, the full shape including the
batch, e.g. ``(1, 224, 224, 3)``). A model that still has a dynamic height or
width without ``input_shape``, or an ``input_shape`` that contradicts the
model's fixed dimensions, is a :class:`~converters.base.ConversionError`.

Tensor names. The TFLite converter names tensors after the SavedModel it
exports internally (``serving_default_image:0``, ``StatefulPartitionedCall_1:0``),
and the output names are not known before conversion. So a Keras source
reports its Keras names (input layer names, output layer names) and a
SavedModel source its ``serving_default`` signature keys; the names of the
converted model, which the bundle uses, are in
:attr:`converters.base.Converted.inputs`. A ``.tflite`` source reports its
own tensor names, read with the LiteRT interpreter exactly as the runtime does.

TensorFlow is imported inside the loaders, never at module import.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any, Sequence

from converters.base import ConversionError, SourceModel
from edge_sdk.errors import EngineError, MissingDependencyError
from edge_sdk.runtime.base import EngineConfig, TensorInfo

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SERVING_SIGNATURE = "serving_default"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite
# What an error message suggests for a dynamic height/width (the user substitutes their real size).
EXAMPLE_SIZE = 224


def import_tensorflow(purpose: str) -> Any:
    """``tensorflow``, or a :class:`MissingDependencyError` naming the ``host`` extra."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError("tensorflow", "host", purpose) from exc
    return tf


# ---------------------------------------------------------------- Keras


def load_keras(model_or_path: Any, input_shape: Sequence[int] | None = None) -> SourceModel:
    """A Keras model (in memory, ``.keras`` or ``.h5``) with its inputs pinned to batch 1 and ``input_shape``.

    ``obj`` is the Keras model to convert: the user's model itself when its
    inputs are already fully static with batch 1, otherwise a functional
    wrapper that calls it on inputs of the pinned shape.
    """
    tf = import_tensorflow("loading Keras models")
    keras = tf.keras
    path: Path | None = None
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        model = _read_keras_file(keras, path)
        name = path.name
    else:
        model = model_or_path
        name = f"<keras model {getattr(model, 'name', '?')!r}>"
    if not isinstance(model, keras.Model):
        raise ConversionError(name, f"expected a Keras model, got {type(model).__name__!r}")
    symbolic_inputs = _keras_inputs(model, name)
    if input_shape is not None and len(symbolic_inputs) != 1:
        raise ConversionError(name, f"--input-shape applies to single-input models; this one has "
                                    f"{len(symbolic_inputs)} inputs ({', '.join(t.name for t in symbolic_inputs)})")
    inputs = tuple(
        TensorInfo(t.name, _pin(name, t.name, tuple(t.shape), input_shape), _dtype_name(t.dtype))
        for t in symbolic_inputs
    )
    output_names = _keras_output_names(model)
    pinned = model
    if any(tuple(t.shape) != info.shape for t, info in zip(symbolic_inputs, inputs)):
        pinned = _pinned_keras_model(keras, model, inputs)
    outputs = tuple(
        TensorInfo(output_name, _dims(tuple(t.shape)), _dtype_name(t.dtype))
        for output_name, t in zip(output_names, _as_list(pinned.outputs))
    )
    return SourceModel("keras", name, pinned, inputs, outputs, path)


def _read_keras_file(keras: Any, path: Path) -> Any:
    if not path.exists():
        raise ConversionError(str(path), "model file not found")
    if not path.is_file():
        raise ConversionError(str(path), "expected a .keras or .h5 file, got a directory")
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise ConversionError(str(path), f"a Keras model file ends in {', '.join(KERAS_SUFFIXES)}, not {suffix!r}")
    # Keras' own messages for a corrupt file are misleading ("File not found" for a .keras that is not a zip).
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ConversionError(str(path), "not a Keras .keras file (it is not a zip archive); the file is corrupt "
                                         "or not a Keras model")
    if suffix in (".h5", ".hdf5") and not _is_hdf5(path):
        raise ConversionError(str(path), "not an HDF5 file; the file is corrupt or not a Keras .h5 model")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        raise ConversionError(str(path), f"cannot load it as a Keras model: {exc}") from exc


def _is_hdf5(path: Path) -> bool:
    try:
        import h5py
    except ImportError:  # keras depends on h5py; check the signature ourselves all the same
        with path.open("rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    return bool(h5py.is_hdf5(str(path)))


def _keras_inputs(model: Any, name: str) -> list:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError(name, "the Keras model has no defined inputs (a subclassed model that was never "
                                    "built?); build it from keras.Input(...) so its input shape is known")
    return _as_list(inputs)


def _keras_output_names(model: Any) -> list[str]:
    outputs = _as_list(model.outputs)
    names = getattr(model, "output_names", None)  # functional models; Sequential has none
    if names and len(names) == len(outputs):
        return [str(n) for n in names]
    result = []
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)  # (operation, node_index, tensor_index)
        result.append(history[0].name if history else tensor.name)
    return result


def _pinned_keras_model(keras: Any, model: Any, inputs: Sequence[TensorInfo]) -> Any:
    """A functional model calling ``model`` on inputs of the pinned shapes (same weights, no copy)."""
    pinned_inputs = [keras.Input(batch_shape=info.shape, dtype=info.dtype, name=info.name) for info in inputs]
    outputs = model(pinned_inputs[0] if len(pinned_inputs) == 1 else pinned_inputs)
    return keras.Model(pinned_inputs[0] if len(pinned_inputs) == 1 else pinned_inputs, outputs, name=model.name)


# ---------------------------------------------------------------- SavedModel


def load_saved_model(path: str | Path, input_shape: Sequence[int] | None = None) -> SourceModel:
    """A SavedModel directory's ``serving_default`` signature, its inputs pinned to batch 1 and ``input_shape``.

    ``obj`` is the directory path (str); the backend loads the signature and
    traces it with the pinned input shapes.
    """
    path = Path(path)
    loaded, signature = load_serving_signature(path)  # ``loaded`` owns the variables: keep it while tracing
    _, specs = signature.structured_input_signature
    if input_shape is not None and len(specs) != 1:
        raise ConversionError(str(path), f"--input-shape applies to single-input models; this one has {len(specs)} "
                                         f"inputs ({', '.join(specs)})")
    inputs = tuple(
        TensorInfo(key, _pin(str(path), key, _spec_shape(spec), input_shape), spec.dtype.name)
        for key, spec in specs.items()
    )
    # Trace at the pinned shapes: checks the model accepts them and gives the outputs' real shapes.
    traced = trace_serving_signature(signature, inputs, str(path))
    outputs = tuple(
        TensorInfo(key, _dims(_spec_shape(spec)), spec.dtype.name)
        for key, spec in _flat_outputs(traced.structured_outputs).items()
    )
    del loaded
    return SourceModel("saved_model", path.name, str(path), inputs, outputs, path)


def trace_serving_signature(signature: Any, inputs: Sequence[TensorInfo], where: str) -> Any:
    """A concrete function calling ``signature`` with positional inputs of exactly the shapes in ``inputs``."""
    tf = import_tensorflow("loading TensorFlow SavedModels")
    names = [info.name for info in inputs]
    specs = [tf.TensorSpec(info.shape, tf.as_dtype(info.dtype), name=info.name) for info in inputs]

    def serve(*args):
        return signature(**dict(zip(names, args)))

    try:
        return tf.function(serve, input_signature=specs).get_concrete_function()
    except (ValueError, TypeError) as exc:
        shapes = ", ".join(f"{info.name!r} {list(info.shape)!r}" for info in inputs)
        raise ConversionError(where, f"the serving_default signature does not accept inputs {shapes}: {exc}") from exc


def load_serving_signature(path: Path) -> tuple[Any, Any]:
    """The loaded SavedModel at ``path`` and its ``serving_default`` function, or a clear error.

    Keep the loaded object as long as the function: it owns the variables.
    """
    tf = import_tensorflow("loading TensorFlow SavedModels")
    if not path.exists():
        raise ConversionError(str(path), "SavedModel directory not found")
    if not (path / "saved_model.pb").is_file():
        raise ConversionError(str(path), "not a TensorFlow SavedModel directory (it has no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ConversionError(str(path), f"cannot load the SavedModel: {exc}") from exc
    signatures = getattr(loaded, "signatures", {})
    if SERVING_SIGNATURE not in signatures:
        raise ConversionError(str(path), f"the SavedModel has no {SERVING_SIGNATURE!r} signature "
                                         f"(it has: {', '.join(signatures) or 'none'}); export it with "
                                         f"model.export(dir) or tf.saved_model.save(..., signatures=...)")
    return loaded, signatures[SERVING_SIGNATURE]


def _flat_outputs(structured: Any) -> dict[str, Any]:
    if isinstance(structured, dict):
        return dict(structured)
    if isinstance(structured, (list, tuple)):
        return {f"output_{i}": spec for i, spec in enumerate(structured)}
    return {"output_0": structured}


def _spec_shape(spec: Any) -> tuple[int | None, ...]:
    if spec.shape.rank is None:
        return ()
    return tuple(spec.shape.as_list())


# ---------------------------------------------------------------- TFLite


def load_tflite(path_or_bytes: str | Path | bytes) -> SourceModel:
    """A ``.tflite`` file (or its bytes); ``obj`` is the bytes, inputs/outputs as the LiteRT runtime reads them."""
    path: Path | None = None
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        model, name = bytes(path_or_bytes), "<tflite bytes>"
    else:
        path = Path(path_or_bytes)
        name = path.name
        if not path.is_file():
            raise ConversionError(str(path), "model file not found" if not path.exists() else "expected a .tflite file")
        model = path.read_bytes()
    where = str(path) if path else name
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ConversionError(where, "not a TFLite model (no 'TFL3' flatbuffer identifier); the file is corrupt "
                                     "or not a .tflite model")
    inputs, outputs = tflite_io(model, where)
    return SourceModel("tflite", name, model, inputs, outputs, path)


def tflite_io(model: bytes, where: str) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """A ``.tflite`` model's inputs and outputs exactly as edge-sdk's LiteRT engine sees them."""
    from edge_sdk.runtime.litert import LiteRTEngine

    try:
        engine = LiteRTEngine(model, EngineConfig())
    except EngineError as exc:
        raise ConversionError(where, f"LiteRT cannot load this model: {exc.reason}") from exc
    try:
        return engine.inputs, engine.outputs
    finally:
        engine.close()


# ---------------------------------------------------------------- shapes


def _pin(model_name: str, input_name: str, shape: tuple[int | None, ...],
         input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """``shape`` with batch 1 and dynamic dimensions from ``input_shape``, checked against the fixed ones."""
    dims = _dims(shape)
    if not dims:
        raise ConversionError(model_name, f"input {input_name!r} has no known rank; pass --input-shape")
    if dims[0] not in (-1, 1):
        raise ConversionError(model_name, f"input {input_name!r} has a fixed batch of {dims[0]} ({list(dims)!r}); "
                                          f"edge-sdk converts models for batch 1")
    if input_shape is None:
        if any(d == -1 for d in dims[1:]):
            example = [1] + [EXAMPLE_SIZE if d == -1 else d for d in dims[1:]]
            raise ConversionError(model_name, f"input {input_name!r} has dynamic shape {list(dims)!r}; pass "
                                              f"--input-shape {','.join(map(str, example))} (with your model's size)")
        return (1, *dims[1:])
    wanted = tuple(int(d) for d in input_shape)
    given = ",".join(map(str, wanted))
    if len(wanted) != len(dims):
        raise ConversionError(model_name, f"input {input_name!r} has shape {list(dims)!r} (rank {len(dims)}) but "
                                          f"--input-shape {given} has rank {len(wanted)}")
    if wanted[0] != 1 or any(d < 1 for d in wanted):
        raise ConversionError(model_name, f"--input-shape {given} must be positive with batch 1 "
                                          f"(models are converted for one image at a time)")
    for axis, (have, want) in enumerate(zip(dims[1:], wanted[1:]), start=1):
        if have != -1 and have != want:
            raise ConversionError(model_name, f"input {input_name!r} has shape {list(dims)!r}; --input-shape "
                                              f"{given} does not match it (dimension {axis} is {have}, not {want})")
    return wanted


def _dims(shape: Sequence[int | None]) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape)


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", None) or str(dtype)


def _as_list(value: Any) -> list:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]
