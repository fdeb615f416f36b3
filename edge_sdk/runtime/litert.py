"""LiteRT (TensorFlow Lite) engine: ``ai_edge_litert``, else ``tflite_runtime``, else ``tensorflow.lite``.

Delegates come from the profile in order of preference. ``edgetpu`` loads
``libedgetpu.so.1`` (the Coral runtime); ``gpu`` loads the TFLite GPU
delegate; ``xnnpack`` is LiteRT's built-in CPU path (applied by default with
``num_threads``). When a preferred delegate cannot be loaded the engine fails
with an :class:`EngineError`, or runs on the CPU and logs it when the
profile (or the caller) allows CPU fallback.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from typing import Any, Callable, Mapping

import numpy as np

from edge_sdk.errors import EngineError, MissingDependencyError
from edge_sdk.runtime.base import EngineConfig, TensorInfo, check_feeds

log = logging.getLogger(__name__)

NAME = "litert"
# Shared-library names per delegate (Linux); the Edge TPU one is what pycoral loads.
DELEGATE_LIBRARIES = {
    "edgetpu": "libedgetpu.so.1",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}


def _import_interpreter() -> tuple[type, Callable, str]:
    """The Interpreter class, load_delegate and the package it came from, best first."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai_edge_litert"
    except ImportError:
        pass
    why_not_tflite_runtime = ""
    if importlib.util.find_spec("tflite_runtime") is not None:
        if int(np.__version__.split(".")[0]) >= 2:
            # tflite-runtime wheels are built against numpy 1.x and fail on numpy 2.
            why_not_tflite_runtime = (
                f" (tflite-runtime is installed but needs numpy < 2, and numpy {np.__version__} is installed)"
            )
        else:
            from tflite_runtime.interpreter import Interpreter, load_delegate

            return Interpreter, load_delegate, "tflite_runtime"
    try:
        import tensorflow as tf  # the heaviest option, for hosts that already have it

        return tf.lite.Interpreter, tf.lite.experimental.load_delegate, "tensorflow.lite"
    except ImportError as exc:
        raise MissingDependencyError(
            "ai-edge-litert", "litert", "running LiteRT (.tflite) models" + why_not_tflite_runtime
        ) from exc


def _info(detail: Mapping[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature")
    shape = tuple(int(d) for d in (signature if signature is not None and len(signature) else detail["shape"]))
    return TensorInfo(
        name=detail["name"],
        shape=shape,
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if scale else None,
        zero_point=int(zero_point) if scale else None,
    )


class LiteRTEngine:
    """A ``.tflite`` model in a LiteRT interpreter."""

    name = NAME

    def __init__(self, model: bytes, config: EngineConfig) -> None:
        interpreter_cls, load_delegate, self.package = _import_interpreter()
        delegates, self.provider = self._delegates(load_delegate, config)
        try:
            self._interpreter = interpreter_cls(
                model_content=model, num_threads=config.num_threads, experimental_delegates=delegates or None
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(NAME, f"cannot load the model: {exc}") from exc
        self._input_details = self._interpreter.get_input_details()
        self._output_details = self._interpreter.get_output_details()
        self.inputs = tuple(_info(d) for d in self._input_details)
        self.outputs = tuple(_info(d) for d in self._output_details)
        self._batch = {d["name"]: int(d["shape"][0]) if len(d["shape"]) else 1 for d in self._input_details}
        log.info("LiteRT (%s) runs the model on %s with %d thread(s)", self.package, self.provider, config.num_threads)

    @staticmethod
    def _delegates(load_delegate: Callable, config: EngineConfig) -> tuple[list, str]:
        for wanted in config.delegates:
            if wanted == "xnnpack":
                return [], "xnnpack"  # LiteRT's default CPU delegate
            library = DELEGATE_LIBRARIES.get(wanted)
            if library is None:
                raise EngineError(NAME, f"unknown delegate {wanted!r}; known: xnnpack, {', '.join(DELEGATE_LIBRARIES)}")
            try:
                # Probe the shared library first: a failed load_delegate() leaves a half-built
                # Delegate whose __del__ raises inside LiteRT.
                ctypes.CDLL(library)
                return [load_delegate(library)], wanted
            except (ValueError, OSError, RuntimeError) as exc:
                if not config.fallback_to_cpu:
                    raise EngineError(
                        NAME,
                        f"the {wanted} delegate ({library}) could not be loaded: {exc}. "
                        + ("Is the Coral device plugged in and libedgetpu1-std installed? " if wanted == "edgetpu" else "")
                        + "Pass allow_cpu_fallback=True to run on the CPU instead.",
                    ) from exc
                log.warning("%s delegate (%s) unavailable (%s); falling back to the CPU", wanted, library, exc)
        return [], "cpu"

    def _resize_batch(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Resize inputs whose batch dimension is dynamic to the batch being fed."""
        changed = False
        for detail in self._input_details:
            batch = feeds[detail["name"]].shape[0]
            if batch != self._batch[detail["name"]]:
                signature = detail.get("shape_signature")
                if signature is None or len(signature) == 0 or signature[0] != -1:
                    raise EngineError(NAME, f"input {detail['name']!r} has a fixed batch of {self._batch[detail['name']]}")
                self._interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
                self._batch[detail["name"]] = batch
                changed = True
        if changed:
            self._interpreter.allocate_tensors()
            self._input_details = self._interpreter.get_input_details()
            self._output_details = self._interpreter.get_output_details()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self, feeds)
        self._resize_batch(feeds)
        interpreter = self._interpreter
        for detail in self._input_details:
            interpreter.set_tensor(detail["index"], feeds[detail["name"]])
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise EngineError(NAME, f"inference failed: {exc}") from exc
        return [interpreter.get_tensor(d["index"]) for d in self._output_details]

    def close(self) -> None:
        self._interpreter = None
