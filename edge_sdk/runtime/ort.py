"""ONNX Runtime engine: execution providers in the profile's order, with fallback rules.

Profile names map to providers: ``tensorrt`` -> TensorrtExecutionProvider
(fp16 when the profile allows it, with an engine cache so the slow first-run
TensorRT build happens once per model and device), ``cuda`` ->
CUDAExecutionProvider, ``cpu`` -> CPUExecutionProvider. Providers the
installed onnxruntime does not have are skipped; if none of the accelerated
ones is available the engine fails unless CPU fallback is allowed. After the
session is built, ``provider`` reports the provider that actually runs it
(ONNX Runtime may drop a provider it cannot initialise).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Mapping

import numpy as np

from edge_sdk.errors import EngineError, MissingDependencyError
from edge_sdk.runtime.base import EngineConfig, TensorInfo, check_feeds

log = logging.getLogger(__name__)

NAME = "onnxruntime"
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnxruntime", "running ONNX models") from exc
    return onnxruntime


def select_providers(config: EngineConfig, available: list[str], model_key: str) -> list:
    """The provider list for an InferenceSession, in preference order, with options.

    Pure function of the config and the providers this onnxruntime build has,
    so provider selection and fallback are testable on a CPU-only machine.
    """
    chosen: list = []
    wanted = config.delegates or ("cpu",)
    for name in wanted:
        provider = PROVIDERS.get(name)
        if provider is None:
            raise EngineError(NAME, f"unknown execution provider {name!r}; known: {', '.join(PROVIDERS)}")
        if provider not in available:
            log.info("%s is not available in this onnxruntime build (has: %s)", provider, ", ".join(available))
            continue
        if name == "tensorrt":
            cache = (config.cache_dir or ".") / "tensorrt" / model_key
            chosen.append((provider, {
                "trt_fp16_enable": config.fp16,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }))
        else:
            chosen.append(provider)
    accelerated = [p for p in chosen if (p[0] if isinstance(p, tuple) else p) != PROVIDERS["cpu"]]
    wanted_accelerated = [n for n in wanted if n != "cpu"]
    if wanted_accelerated and not accelerated:
        if not config.fallback_to_cpu:
            raise EngineError(
                NAME,
                f"none of the preferred execution providers {', '.join(PROVIDERS[n] for n in wanted_accelerated)} "
                f"is available (this onnxruntime has {', '.join(available)}); install onnxruntime-gpu "
                "(pip install 'edge-deploy-sdk[jetson]') or allow CPU fallback",
            )
        log.warning("no accelerated execution provider available; falling back to the CPU")
    if PROVIDERS["cpu"] not in [p[0] if isinstance(p, tuple) else p for p in chosen]:
        chosen.append(PROVIDERS["cpu"])  # ONNX Runtime places unsupported nodes on the CPU
    return chosen


class OnnxRuntimeEngine:
    """An ONNX model in an ONNX Runtime InferenceSession."""

    name = NAME

    def __init__(self, model: bytes, config: EngineConfig) -> None:
        ort = _import_ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.num_threads
        options.inter_op_num_threads = 1
        if config.graph_optimization not in _OPT_LEVELS:
            raise EngineError(NAME, f"graph_optimization must be one of {_OPT_LEVELS}, got {config.graph_optimization!r}")
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[config.graph_optimization]
        model_key = hashlib.sha256(model).hexdigest()[:16]
        providers = select_providers(config, ort.get_available_providers(), model_key)
        try:
            self._session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types without a common base
            raise EngineError(NAME, f"cannot load the model: {exc}") from exc
        self.providers = tuple(self._session.get_providers())
        self.provider = self.providers[0]
        self.inputs = tuple(self._info(i) for i in self._session.get_inputs())
        self.outputs = tuple(self._info(o) for o in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        log.info("ONNX Runtime runs the model on %s with %d thread(s)", ", ".join(self.providers), config.num_threads)

    @staticmethod
    def _info(arg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorInfo(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self, feeds)
        try:
            return self._session.run(self._output_names, dict(feeds))
        except Exception as exc:  # see above: no common onnxruntime exception base
            raise EngineError(NAME, f"inference failed: {exc}") from exc

    def close(self) -> None:
        self._session = None
