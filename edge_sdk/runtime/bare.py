"""The bare engines, driven the way a hand-written loop drives them, for side-by-side measurements.

``edge-sdk bench --vs-bare`` and the scripts in ``benchmarks/`` time these
next to edge-sdk's own engines on the same model bytes, thread count and
input, so every speed figure is a ratio measured in one run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edge_sdk.errors import EngineError


def bare_runner(
    engine: str, model: bytes, num_threads: int, arena_bytes: int | None = None
) -> tuple[Callable[[np.ndarray], object], Callable]:
    """``(run(tensor), close)`` calling the engine's own Python API with nothing of ours in between."""
    if engine == "litert":
        from edge_sdk.runtime.litert import _import_interpreter

        interpreter_cls, _, _ = _import_interpreter()
        interpreter = interpreter_cls(model_content=model, num_threads=num_threads)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]["index"]
        outs = [d["index"] for d in interpreter.get_output_details()]

        def run_litert(tensor: np.ndarray):
            interpreter.set_tensor(inp, tensor)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in outs]

        return run_litert, lambda: None
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_ort(tensor: np.ndarray):
            return session.run(None, {name: tensor})

        return run_ort, lambda: None
    if engine == "tflite-micro":
        from tflite_micro.python.tflite_micro import runtime

        interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_bytes)

        def run_tflm(tensor: np.ndarray):
            interpreter.set_input(tensor, 0)
            interpreter.invoke()
            return interpreter.get_output(0)

        return run_tflm, lambda: None
    raise EngineError(engine, f"no bare runner for engine {engine!r}")
