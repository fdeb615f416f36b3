"""TFLite Micro engine: the ``tflite-micro`` package's Python interpreter.

It runs exactly the kernels a microcontroller build runs, so a developer can
check on the host what the board will compute. The interpreter is native code
that can crash the whole process when its tensor arena is too small or a
kernel is missing; so before the model is loaded in this process, a child
process loads it with the same arena and runs one inference on zeros. Only
if the child exits cleanly is the model loaded here; otherwise an
:class:`EngineError` says why (and which signal killed the child).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from typing import Mapping

import numpy as np

from edge_sdk.errors import EngineError, MissingDependencyError
from edge_sdk.runtime.base import EngineConfig, TensorInfo, check_feeds

log = logging.getLogger(__name__)

NAME = "tflite-micro"
PROBE_TIMEOUT_S = 120


def _import_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise MissingDependencyError("tflite-micro", "tflm", "running models in TFLite Micro") from exc
    return runtime


def default_arena_bytes(model: bytes) -> int:
    """tflite-micro's own heuristic (10x the model), used when the bundle records no measured arena."""
    return max(len(model) * 10, 64 * 1024)


def _details(detail: Mapping, name: str) -> TensorInfo:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    zero_points = params.get("zero_points")
    scale = float(scales[0]) if scales is not None and len(scales) else None
    zero_point = int(zero_points[0]) if scale is not None and zero_points is not None and len(zero_points) else None
    return TensorInfo(name=name, shape=tuple(int(d) for d in detail["shape"]), dtype=np.dtype(detail["dtype"]).name,
                      scale=scale or None, zero_point=zero_point if scale else None)


def _io_names(runtime, model: bytes) -> tuple[list[str], list[str]]:
    graph = runtime.convert_bytearray_to_object(bytearray(model)).subgraphs[0]

    def name(index: int) -> str:
        raw = graph.tensors[index].name
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    return [name(i) for i in graph.inputs], [name(i) for i in graph.outputs]


def probe(model: bytes, arena_bytes: int, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Load and invoke the model once in a child process; raise :class:`EngineError` if that fails or crashes."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_sdk.runtime.tflm", "--probe", str(arena_bytes)],
            input=model, capture_output=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(NAME, f"the model did not finish one inference in {timeout:.0f} s") from exc
    if proc.returncode == 0:
        return
    # TFLM prints the real cause (a kernel's failed check, the node that failed) before Python's traceback.
    detail = [line.strip() for line in proc.stderr.decode(errors="replace").splitlines()
              if line.strip() and not line.startswith((" ", "Traceback"))]
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise EngineError(
            NAME,
            f"the interpreter crashed ({sig}) with a tensor arena of {arena_bytes} bytes: the arena is too small "
            "or the model uses an op TFLite Micro cannot run; measure the arena with 'edge-sdk firmware export'",
        )
    raise EngineError(
        NAME, f"cannot run the model with a {arena_bytes}-byte arena: {'; '.join(detail[-3:]) or proc.returncode}"
    )


class TFLiteMicroEngine:
    """A ``.tflite`` model in TFLite Micro's interpreter (single-threaded, as on the board)."""

    name = NAME
    provider = "tflite-micro-reference"

    def __init__(self, model: bytes, config: EngineConfig) -> None:
        runtime = _import_runtime()
        self.arena_bytes = config.arena_bytes or default_arena_bytes(model)
        probe(model, self.arena_bytes)
        try:
            self._interpreter = runtime.Interpreter.from_bytes(model, arena_size=self.arena_bytes)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(NAME, f"cannot load the model: {exc}") from exc
        input_names, output_names = _io_names(runtime, model)
        self.inputs = tuple(_details(self._interpreter.get_input_details(i), n) for i, n in enumerate(input_names))
        self.outputs = tuple(_details(self._interpreter.get_output_details(i), n) for i, n in enumerate(output_names))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self, feeds)
        batch = next(iter(feeds.values())).shape[0]
        if batch != 1 and any(t.shape[0] == 1 for t in self.inputs):
            results = [self.run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(batch)]
            return [np.concatenate([r[j] for r in results]) for j in range(len(self.outputs))]
        for index, info in enumerate(self.inputs):
            self._interpreter.set_input(np.ascontiguousarray(feeds[info.name]), index)
        try:
            self._interpreter.invoke()
        except RuntimeError as exc:
            raise EngineError(NAME, f"inference failed: {exc}") from exc
        return [np.array(self._interpreter.get_output(i)) for i in range(len(self.outputs))]

    def close(self) -> None:
        self._interpreter = None


def load_and_invoke(model: bytes, arena_bytes: int):
    """Load ``model`` with ``arena_bytes`` and invoke it once on zeros, in this process; returns the interpreter.

    What the child processes run (a too-small arena may crash the process rather than raise).
    """
    runtime = _import_runtime()
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_bytes)
    inputs, _ = _io_names(runtime, model)
    for index in range(len(inputs)):
        detail = interpreter.get_input_details(index)
        interpreter.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), index)
    interpreter.invoke()
    return interpreter


def _probe_main(arena_bytes: int) -> int:
    load_and_invoke(sys.stdin.buffer.read(), arena_bytes)
    return 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--probe":
    sys.exit(_probe_main(int(sys.argv[2])))
