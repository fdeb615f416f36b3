"""Will a converted model run on a device, and how well: ops, dtypes, memory fit and rough speed.

:func:`analyze` reads a converted model (``.tflite`` or ``.onnx`` bytes) into a
format-neutral :class:`ModelGraph` through the parser registered for its format
in :data:`PARSERS`, then checks that graph against a
:class:`~device_profiles.schema.DeviceProfile`. The result, a
:class:`CompatReport`, goes into the bundle's report and manifest
(:meth:`CompatReport.to_dict`) and is printed by ``edge-sdk package``
(:meth:`CompatReport.table`).

What is checked, all driven by the profile:

- **Ops.** ``runtime.ops`` (TFLite Micro's op resolver) limits what can run at
  all: any other op is ``"unsupported"``, a problem. ``accelerator.ops`` (the
  Edge TPU's list) limits what the accelerator runs: any other op is
  ``"cpu-fallback"``, a problem when ``runtime.fallback_to_cpu`` is false and a
  warning otherwise. The Edge TPU compiler partitions a graph once: it maps the
  leading run of supported ops (in execution order) to the Edge TPU, and from the
  first unsupported op on *everything* runs on the CPU, supported or not
  (coral.ai, "TensorFlow models on the Edge TPU"). Without op lists every op
  runs ``"accelerator"`` (a profile with an ``[accelerator]``) or ``"cpu"``.
- **Dtypes.** A profile that allows only ``int8`` (every Edge TPU and most
  TFLite Micro profiles) cannot run float arithmetic: tensors computed in float
  are problems. Graph inputs and outputs are exempt when the profile's
  ``input_dtype`` / ``output_dtype`` is itself a float type. A model input or
  output whose dtype differs from the profile's is a warning.
- **Fit.** Model bytes against ``memory.storage_bytes``; on a board with
  ``memory.flash_bytes`` the model plus :data:`TFLM_RUNTIME_BYTES` of TFLite
  Micro code against the flash. Peak activation memory against RAM: on a
  microcontroller the tensor arena must fit in the internal SRAM
  (``memory.ram_bytes``) or, when the board has external RAM, in SRAM + external
  RAM (then only a warning says it must go to the slower external RAM). Given a
  measured arena (``arena_bytes``, from :mod:`firmware_tools.arena`), that check
  uses the measured arena plus :data:`MCU_HEADROOM_BYTES` of stack and heap
  instead of the activation estimate. On an OS
  device the model (loaded or mapped into RAM) plus the activations against
  ``memory.ram_bytes``. Weight bytes against the accelerator's
  ``parameter_cache_bytes``: exceeding it is a warning (weights then stream
  from host memory, over USB for the USB Accelerator, on every inference), not
  a failure.

The estimates are estimates:

- ``macs`` counts multiply-accumulates of the layers that dominate vision models
  (TFLite ``CONV_2D``: out_h*out_w*out_c*k_h*k_w*in_c, ``DEPTHWISE_CONV_2D``:
  out_h*out_w*out_c*k_h*k_w, ``FULLY_CONNECTED``: in*out, ``TRANSPOSE_CONV``:
  in_h*in_w*in_c*k_h*k_w*out_c, each times the batch; ONNX ``Conv``,
  ``ConvTranspose``, ``Gemm``, ``MatMul`` and their quantized forms alike).
  Every other op counts 0: element-wise work (activations, adds, pooling) is
  small next to these and is not a multiply-accumulate.
- ``peak_activation_bytes`` walks the main graph's operators in execution order:
  a tensor is live from the op that produces it (graph inputs: from the start)
  to its last consumer (graph outputs: to the end); the peak is the largest sum
  of live non-constant tensor bytes. Real runtimes differ both ways: TFLite
  Micro's arena also holds per-op scratch buffers and persistent data and
  aligns every buffer, while in-place ops (``RESHAPE``) and memory planners
  that overlap buffers need less. Measure the arena with ``edge-sdk firmware``
  before trusting a tight fit.
- ``latency_ms_estimate`` = 2 * macs / (``compute.gops`` * 1e9) * 1000: the
  profile's sustained throughput applied to the MAC count, nothing more.

On an Edge TPU profile, :func:`analyze` also runs ``edgetpu_compiler`` when it is
on ``PATH`` (it exists only for x86-64 Linux) and records its version, log and
output file; the compiler's verdict on a failed compile becomes a problem.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from converters.base import ConversionError
from edge_sdk.errors import MissingDependencyError

if TYPE_CHECKING:
    from device_profiles.schema import DeviceProfile

__all__ = [
    "TFLM_RUNTIME_BYTES",
    "MCU_HEADROOM_BYTES",
    "EDGETPU_COMPILER_TIMEOUT_S",
    "OpUse",
    "FitCheck",
    "CompatReport",
    "Tensor",
    "Node",
    "ModelGraph",
    "PARSERS",
    "parse_tflite",
    "parse_onnx",
    "analyze",
    "analyze_tflite",
    "analyze_onnx",
]

log = logging.getLogger(__name__)

#: Flash the TFLite Micro runtime itself takes next to the model on a microcontroller: the
#: interpreter, the op resolver and the kernels of a typical vision model (roughly 50-150 KB
#: with optimized kernels); an assumption, not a measurement of your firmware.
TFLM_RUNTIME_BYTES = 100 * 1024

#: RAM a microcontroller needs beside the tensor arena: the main and interrupt stacks, the C heap
#: and the RTOS's own structures (an assumption to override, not a measurement of your firmware).
MCU_HEADROOM_BYTES = 32 * 1024

#: How long ``edgetpu_compiler`` may take (it gives itself 180 s by default).
EDGETPU_COMPILER_TIMEOUT_S = 300.0

#: Accelerator kinds whose compiler maps only the leading supported part of a graph -> that compiler.
_SINGLE_PARTITION_KINDS: Mapping[str, str] = {"edgetpu": "edgetpu_compiler"}

_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

#: Bits per element of each dtype name (resource/variant/string handles count 0).
_DTYPE_BITS: Mapping[str, int] = {
    "bool": 8, "int4": 4, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "float16": 16, "bfloat16": 16,
    "int32": 32, "uint32": 32, "float32": 32, "int64": 64, "uint64": 64, "float64": 64, "complex64": 64,
    "complex128": 128,
}

#: Where an op runs (OpUse.where).
ACCELERATOR, CPU, CPU_FALLBACK, UNSUPPORTED = "accelerator", "cpu", "cpu-fallback", "unsupported"


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class OpUse:
    """``count`` uses of operator ``op`` that run at ``where``.

    ``where`` is ``"accelerator"``, ``"cpu"`` (a profile without an
    accelerator), ``"cpu-fallback"`` (the accelerator cannot run these) or
    ``"unsupported"`` (the runtime has no kernel). ``supported`` says whether the
    op is in the list that limits it (always true without one). One op type can
    appear twice: on the Edge TPU a supported op after the first unsupported one
    is ``supported`` but still ``"cpu-fallback"``.
    """

    op: str
    count: int
    supported: bool
    where: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "count": self.count, "supported": self.supported, "where": self.where}


@dataclass(frozen=True)
class FitCheck:
    """One resource the model needs against what the profile has.

    ``hard`` checks make the model incompatible when they fail; a soft one
    (``hard=False``: the Edge TPU parameter cache, internal SRAM when external
    RAM can take the arena) only costs speed and is reported as a warning.
    """

    name: str
    need: int | float
    have: int | float
    unit: str
    ok: bool
    note: str = ""
    hard: bool = True

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.hard else "WARN")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "need": self.need, "have": self.have, "unit": self.unit, "ok": self.ok,
                "hard": self.hard, "note": self.note}


@dataclass(frozen=True)
class CompatReport:
    """The analysis of one converted model against one device profile.

    ``params`` counts weight elements (constant tensors), ``param_bytes`` their
    bytes; ``dtypes`` lists every tensor dtype in the model. ``problems`` make
    the model incompatible (``compatible`` is false); ``warnings`` do not.
    """

    profile: str
    format: str
    ops: tuple[OpUse, ...]
    dtypes: tuple[str, ...]
    problems: tuple[str, ...]
    fits: tuple[FitCheck, ...]
    macs: int
    params: int
    model_bytes: int
    peak_activation_bytes: int
    latency_ms_estimate: float
    edgetpu_compiler: Mapping[str, Any]
    param_bytes: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def compatible(self) -> bool:
        return not self.problems

    @property
    def op_counts(self) -> dict[str, int]:
        """Operator type -> how many times the model uses it, wherever it runs."""
        counts: Counter[str] = Counter()
        for use in self.ops:
            counts[use.op] += use.count
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        return {
            "profile": self.profile,
            "format": self.format,
            "compatible": self.compatible,
            "ops": [use.to_dict() for use in self.ops],
            "dtypes": list(self.dtypes),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "fits": [fit.to_dict() for fit in self.fits],
            "macs": self.macs,
            "params": self.params,
            "param_bytes": self.param_bytes,
            "model_bytes": self.model_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "latency_ms_estimate": round(self.latency_ms_estimate, 6),
            "edgetpu_compiler": dict(self.edgetpu_compiler),
        }

    def table(self) -> str:
        """A plain-text table for a terminal: ops, fit checks, estimates, problems and warnings."""
        verdict = "compatible" if self.compatible else f"NOT compatible ({len(self.problems)} problem(s))"
        lines = [f"compatibility with {self.profile} ({self.format}): {verdict}"]
        op_width = max([len("op")] + [len(u.op) for u in self.ops])
        lines.append(f"  {'op':<{op_width}}  {'count':>5}  {'runs on':<12}  supported")
        for use in self.ops:
            lines.append(f"  {use.op:<{op_width}}  {use.count:>5}  {use.where:<12}  {'yes' if use.supported else 'NO'}")
        fit_width = max([len("fit")] + [len(f.name) for f in self.fits])
        lines.append(f"  {'fit':<{fit_width}}  {'need':>12}  {'have':>12}  status")
        for fit in self.fits:
            row = (f"  {fit.name:<{fit_width}}  {_amount(fit.need, fit.unit):>12}  {_amount(fit.have, fit.unit):>12}"
                   f"  {fit.status}")
            lines.append(row + (f"  ({fit.note})" if fit.note else ""))
        lines.append(f"  estimates: {self.macs:,} MACs, {self.params:,} parameters "
                     f"({_amount(self.param_bytes, 'bytes')}), "
                     f"model {_amount(self.model_bytes, 'bytes')}, peak activations ~"
                     f"{_amount(self.peak_activation_bytes, 'bytes')}, latency ~{self.latency_ms_estimate:.3f} ms")
        lines.append(f"  dtypes: {', '.join(self.dtypes) or '-'}")
        compiler = self.edgetpu_compiler
        if compiler.get("ran"):
            lines.append(f"  edgetpu_compiler {compiler.get('version') or '(unknown version)'}: "
                         f"{compiler.get('compiled_model') or 'no output'}"
                         + (f" ({compiler['note']})" if compiler.get("note") else ""))
        elif compiler.get("note"):
            lines.append(f"  edgetpu_compiler: {compiler['note']}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _amount(value: int | float, unit: str) -> str:
    if unit != "bytes":
        return f"{value:,} {unit}".strip()
    size = float(value)
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or suffix == "GiB":
            return f"{int(size)} B" if suffix == "B" else f"{size:.1f} {suffix}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns


# --------------------------------------------------------------------------- the neutral graph


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy-style name: float32, int8, ...; "unknown" when the model does not say
    shape: tuple[int, ...]
    constant: bool  # weights, biases and other data stored in the model

    @property
    def elements(self) -> int:
        return math.prod(max(int(d), 1) for d in self.shape)

    @property
    def nbytes(self) -> int:
        return math.ceil(self.elements * _DTYPE_BITS.get(self.dtype, 0) / 8)


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[int, ...]  # indices into ModelGraph.tensors
    outputs: tuple[int, ...]
    macs: int = 0


@dataclass(frozen=True)
class ModelGraph:
    """What a parser reads from a model: its main graph in execution order, and totals.

    ``nested`` holds the ops of other subgraphs (control-flow bodies): they
    count towards ops and MACs but not towards the liveness walk.
    ``float_compute`` are indices of tensors computed in floating point (for
    ONNX QDQ models, not the float tensors between Q/DQ pairs that runtimes
    fuse into integer kernels).
    """

    tensors: tuple[Tensor, ...]
    nodes: tuple[Node, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    params: int
    param_bytes: int
    float_compute: frozenset[int] = frozenset()
    nested: tuple[Node, ...] = ()
    nested_dtypes: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- TFLite


def _tflite_schema() -> tuple[Any, Callable[[bytearray], Any], Callable[[Any], int]]:
    """(schema module, bytes -> ModelT, OperatorCode -> builtin code), from tflite-micro or LiteRT."""
    try:
        from tflite_micro.python.tflite_micro import runtime
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

        return schema, runtime.convert_bytearray_to_object, runtime.get_builtin_code_from_operator_code
    except ImportError:
        pass
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise MissingDependencyError("tflite-micro", "tflm", "analysing .tflite models") from exc

    def to_object(buf: bytearray) -> Any:
        return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))

    return schema, to_object, lambda code: max(code.builtinCode, code.deprecatedBuiltinCode)


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _tflite_conv_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...]) -> int:
    # filter [out_c, k_h, k_w, in_c/groups]: every output element takes k_h*k_w*in_c MACs
    return math.prod(out) * math.prod(shapes[1][1:]) if len(shapes) > 1 and len(shapes[1]) == 4 else 0


def _tflite_depthwise_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...]) -> int:
    # filter [1, k_h, k_w, out_c]: every output element takes k_h*k_w MACs
    return math.prod(out) * shapes[1][1] * shapes[1][2] if len(shapes) > 1 and len(shapes[1]) == 4 else 0


def _tflite_fc_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...]) -> int:
    # weights [out, in]: every output element takes `in` MACs
    return math.prod(out) * shapes[1][-1] if len(shapes) > 1 and shapes[1] else 0


def _tflite_transpose_conv_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...]) -> int:
    # inputs (output_shape, filter [out_c, k_h, k_w, in_c], input): every input element meets k_h*k_w*out_c weights
    return math.prod(shapes[2]) * math.prod(shapes[1][:3]) if len(shapes) > 2 and len(shapes[1]) == 4 else 0


_TFLITE_MACS: Mapping[str, Callable[[Sequence[tuple[int, ...]], tuple[int, ...]], int]] = {
    "CONV_2D": _tflite_conv_macs,
    "DEPTHWISE_CONV_2D": _tflite_depthwise_macs,
    "FULLY_CONNECTED": _tflite_fc_macs,
    "TRANSPOSE_CONV": _tflite_transpose_conv_macs,
}


def _text(raw: Any) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)


def _buffer_bytes(buffer: Any) -> int:
    if buffer is None:
        return 0
    if buffer.data is not None and len(buffer.data):
        return len(buffer.data)
    # Models over 2 GB keep buffers outside the flatbuffer: offset (> 1) and size.
    return int(getattr(buffer, "size", 0) or 0) if int(getattr(buffer, "offset", 0) or 0) > 1 else 0


def parse_tflite(model: bytes) -> ModelGraph:
    """Read a ``.tflite`` flatbuffer: subgraph 0 is the main graph, the others are nested bodies."""
    schema, to_object, builtin_code = _tflite_schema()
    try:
        obj = to_object(bytearray(model))
        subgraphs = list(obj.subgraphs or [])
    except Exception as exc:  # flatbuffers raises anything from struct.error to IndexError on garbage
        raise ConversionError("model.tflite", f"not a readable TFLite flatbuffer ({type(exc).__name__}: {exc}); "
                                              "pass the bytes of a .tflite file") from exc
    if not subgraphs:
        raise ConversionError("model.tflite", "the TFLite model has no subgraph")
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = {code: name.lower() for code, name in _enum_names(schema.TensorType).items()}
    codes = list(obj.operatorCodes or [])
    buffers = list(obj.buffers or [])

    def op_name(code: Any) -> str:
        builtin = builtin_code(code)
        if builtin == schema.BuiltinOperator.CUSTOM:
            return _text(code.customCode) or "CUSTOM"
        return op_names.get(builtin, f"BUILTIN_{builtin}")

    def read(graph: Any) -> tuple[list[Tensor], list[Node], dict[int, int]]:
        tensors, tensor_buffers = [], {}
        for i, t in enumerate(graph.tensors or []):
            buffer = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
            size = _buffer_bytes(buffer)
            if size:
                tensor_buffers[i] = t.buffer
            shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
            tensors.append(Tensor(_text(t.name), type_names.get(t.type, f"type{t.type}"), shape, constant=size > 0))
        nodes = []
        for op in graph.operators or []:
            name = op_name(codes[op.opcodeIndex])
            inputs = tuple(int(i) for i in (op.inputs if op.inputs is not None else ()))
            outputs = tuple(int(i) for i in (op.outputs if op.outputs is not None else ()))
            macs_of = _TFLITE_MACS.get(name)
            macs = 0
            if macs_of is not None and outputs:
                shapes = [tensors[i].shape if i >= 0 else () for i in inputs]
                macs = int(macs_of(shapes, tensors[outputs[0]].shape))
            nodes.append(Node(name, inputs, outputs, macs))
        return tensors, nodes, tensor_buffers

    tensors, nodes, tensor_buffers = read(subgraphs[0])
    nested: list[Node] = []
    nested_dtypes: set[str] = set()
    param_elements: dict[int, int] = {}  # buffer index -> elements; a buffer shared by tensors counts once
    for index, buffer_index in tensor_buffers.items():
        param_elements.setdefault(buffer_index, tensors[index].elements)
    for graph in subgraphs[1:]:
        sub_tensors, sub_nodes, sub_buffers = read(graph)
        nested.extend(sub_nodes)
        nested_dtypes.update(t.dtype for t in sub_tensors)
        for index, buffer_index in sub_buffers.items():
            param_elements.setdefault(buffer_index, sub_tensors[index].elements)
    float_compute = frozenset(i for i, t in enumerate(tensors) if not t.constant and t.dtype in _FLOAT_DTYPES)
    return ModelGraph(
        tensors=tuple(tensors),
        nodes=tuple(nodes),
        inputs=tuple(int(i) for i in subgraphs[0].inputs),
        outputs=tuple(int(i) for i in subgraphs[0].outputs),
        params=sum(param_elements.values()),
        param_bytes=sum(_buffer_bytes(buffers[b]) for b in param_elements),
        float_compute=float_compute,
        nested=tuple(nested),
        nested_dtypes=frozenset(nested_dtypes),
    )


# --------------------------------------------------------------------------- ONNX

_ONNX_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


_OnnxMacs = Callable[[Sequence[tuple[int, ...]], tuple[int, ...], Mapping[str, Any]], int]


def _onnx_weighted(weight_index: int, per_output: bool) -> _OnnxMacs:
    """Conv-like MACs: weight [M, C/group, k...]; every output element takes prod(weight[1:]) MACs.

    ``per_output=False`` (ConvTranspose, weight [C, M/group, k...]): every input element meets
    prod(weight[1:]) weights.
    """

    def macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...], attrs: Mapping[str, Any]) -> int:
        if len(shapes) <= weight_index or len(shapes[weight_index]) < 3:
            return 0
        moving = out if per_output else shapes[0]
        return math.prod(moving) * math.prod(shapes[weight_index][1:]) if moving else 0

    return macs


def _onnx_gemm_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...], attrs: Mapping[str, Any]) -> int:
    # Y[M, N] = A[M, K] @ B[K, N] (A transposed when transA): every output element takes K MACs
    a = shapes[0] if shapes else ()
    if len(a) < 2 or not out:
        return 0
    return math.prod(out) * (a[-2] if attrs.get("transA") else a[-1])


def _onnx_matmul_macs(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...], attrs: Mapping[str, Any]) -> int:
    a = shapes[0] if shapes else ()
    return math.prod(out) * a[-1] if a and out else 0


_ONNX_MACS: Mapping[str, _OnnxMacs] = {
    "Conv": _onnx_weighted(1, per_output=True),
    "ConvInteger": _onnx_weighted(1, per_output=True),
    "QLinearConv": _onnx_weighted(3, per_output=True),
    "ConvTranspose": _onnx_weighted(1, per_output=False),
    "Gemm": _onnx_gemm_macs,
    "MatMul": _onnx_matmul_macs,
    "MatMulInteger": _onnx_matmul_macs,
    "QLinearMatMul": _onnx_matmul_macs,
}


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", "host", "analysing .onnx models") from exc
    return onnx


def parse_onnx(model: bytes) -> ModelGraph:
    """Read an ONNX model with shape inference; nodes are in (the required) topological order."""
    onnx = _import_onnx()
    try:
        proto = onnx.ModelProto.FromString(model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ConversionError("model.onnx", f"not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:  # inference is best effort: sizes of unknown tensors count 0
        log.debug("ONNX shape inference failed, continuing without it: %s", exc)
    graph = proto.graph

    def dtype_name(elem_type: int) -> str:
        try:
            return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
        except Exception:  # bfloat16, float8, string ...: no numpy dtype
            return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"

    index: dict[str, int] = {}
    tensors: list[Tensor] = []

    def add(name: str, dtype: str, shape: tuple[int, ...], constant: bool) -> int:
        if name in index:
            return index[name]
        index[name] = len(tensors)
        tensors.append(Tensor(name, dtype, shape, constant))
        return index[name]

    params = param_bytes = 0
    for init in graph.initializer:
        t = Tensor(init.name, dtype_name(init.data_type), tuple(int(d) for d in init.dims), True)
        add(t.name, t.dtype, t.shape, True)
        params += t.elements
        param_bytes += t.nbytes
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = value.type.tensor_type
        dims = tt.shape.dim if tt.HasField("shape") else ()
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)  # symbolic dims count 1
        add(value.name, dtype_name(tt.elem_type), shape, False)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    t = Tensor(node.output[0], dtype_name(attr.t.data_type), tuple(int(d) for d in attr.t.dims), True)
                    tensors[add(t.name, t.dtype, t.shape, True)] = t
                    params += t.elements
                    param_bytes += t.nbytes

    def ref(name: str) -> int:
        return add(name, "unknown", (), False) if name else -1

    nodes: list[Node] = []
    nested: list[Node] = []
    nested_dtypes: set[str] = set()
    dequantized: set[int] = set()
    float_compute: set[int] = set()
    for node in graph.node:
        inputs = tuple(ref(n) for n in node.input)
        outputs = tuple(ref(n) for n in node.output)
        macs_of = _ONNX_MACS.get(node.op_type)
        macs = 0
        if macs_of is not None and outputs:
            shapes = [tensors[i].shape if i >= 0 else () for i in inputs]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            macs = int(macs_of(shapes, tensors[outputs[0]].shape, attrs))
        nodes.append(Node(node.op_type, inputs, outputs, macs))
        if node.op_type == "DequantizeLinear":
            dequantized.update(outputs)
        elif node.op_type not in _ONNX_QDQ:
            # A node fed only by DequantizeLinear outputs and constants is QDQ-wrapped: runtimes fuse it
            # into an integer kernel. Anything fed by a float activation computes in float.
            wrapped = all(i < 0 or i in dequantized or tensors[i].constant for i in inputs)
            if not wrapped:
                float_compute.update(o for o in outputs if tensors[o].dtype in _FLOAT_DTYPES)
        for body in _onnx_bodies(node):
            nested.extend(Node(inner.op_type, (), (), 0) for inner in _onnx_nodes(body))
            nested_dtypes.update(dtype_name(v.type.tensor_type.elem_type) for v in list(body.input) + list(body.output))
    float_compute.update(index[i.name] for i in graph.input
                         if not tensors[index[i.name]].constant and tensors[index[i.name]].dtype in _FLOAT_DTYPES)
    return ModelGraph(
        tensors=tuple(tensors),
        nodes=tuple(nodes),
        inputs=tuple(index[i.name] for i in graph.input if not tensors[index[i.name]].constant),
        outputs=tuple(index[o.name] for o in graph.output),
        params=params,
        param_bytes=param_bytes,
        float_compute=frozenset(float_compute),
        nested=tuple(nested),
        nested_dtypes=frozenset(nested_dtypes),
    )


def _onnx_bodies(node: Any) -> list[Any]:
    """The subgraphs of a control-flow node (If branches, Loop and Scan bodies)."""
    bodies = []
    for attr in node.attribute:
        bodies.extend(([attr.g] if attr.HasField("g") else []) + list(attr.graphs))
    return bodies


def _onnx_nodes(graph: Any) -> Iterable[Any]:
    for node in graph.node:
        yield node
        for body in _onnx_bodies(node):
            yield from _onnx_nodes(body)


#: Model format -> parser. The only place formats are told apart.
PARSERS: Mapping[str, Callable[[bytes], ModelGraph]] = {
    "tflite": parse_tflite,
    "onnx": parse_onnx,
}


# --------------------------------------------------------------------------- analysis


def analyze(model: bytes, format: str, profile: DeviceProfile, *, work_dir: Path | None = None,
            arena_bytes: int | None = None, headroom_bytes: int = MCU_HEADROOM_BYTES) -> CompatReport:
    """Analyse ``model`` (bytes in ``format``) against ``profile``.

    ``work_dir`` is where ``edgetpu_compiler`` writes its output on an Edge TPU
    profile (a temporary directory, removed afterwards, when None).
    ``arena_bytes`` is a measured TFLite Micro tensor arena: on a microcontroller the
    RAM checks then use it plus ``headroom_bytes`` instead of the activation estimate.
    """
    try:
        parse = PARSERS[format]
    except KeyError:
        raise ConversionError(format, f"no compatibility analysis for {format!r} models; "
                                      f"known formats: {', '.join(PARSERS)}") from None
    graph = parse(bytes(model))
    problems: list[str] = []
    warnings: list[str] = []
    if format != profile.runtime.format:
        problems.append(f"profile {profile.id!r} runs {profile.runtime.format!r} models "
                        f"(engine {profile.runtime.engine!r}), not {format!r}")

    placements = _place([n.op for n in graph.nodes + graph.nested], profile)
    ops = _summarise(placements)
    _op_problems(placements, profile, problems, warnings)
    _dtype_problems(graph, profile, problems, warnings)

    macs = sum(n.macs for n in graph.nodes + graph.nested)
    peak = _peak_activation_bytes(graph)
    fits = _fits(len(model), peak, graph.param_bytes, profile, arena_bytes, headroom_bytes)
    for fit, advice in fits:
        if not fit.ok:
            (problems if fit.hard else warnings).append(_fit_message(fit, advice, profile))
    compiler = _accelerator_compiler(profile, bytes(model), work_dir)
    if compiler.pop("problem", None):
        problems.append(compiler["note"])

    dtypes = {t.dtype for t in graph.tensors} | set(graph.nested_dtypes)
    return CompatReport(
        profile=profile.id,
        format=format,
        ops=ops,
        dtypes=tuple(sorted(dtypes)),
        problems=tuple(problems),
        fits=tuple(fit for fit, _ in fits),
        macs=int(macs),
        params=int(graph.params),
        model_bytes=len(model),
        peak_activation_bytes=int(peak),
        latency_ms_estimate=2.0 * macs / (profile.compute.gops * 1e9) * 1000.0,
        edgetpu_compiler=compiler,
        param_bytes=int(graph.param_bytes),
        warnings=tuple(warnings),
    )


def analyze_tflite(model: bytes, profile: DeviceProfile, *, work_dir: Path | None = None) -> CompatReport:
    return analyze(model, "tflite", profile, work_dir=work_dir)


def analyze_onnx(model: bytes, profile: DeviceProfile, *, work_dir: Path | None = None) -> CompatReport:
    return analyze(model, "onnx", profile, work_dir=work_dir)


@dataclass(frozen=True)
class _Placement:
    op: str
    supported: bool
    where: str
    after_cut: bool = False  # a supported op that runs on the CPU because an earlier op was not supported


def _place(sequence: Sequence[str], profile: DeviceProfile) -> list[_Placement]:
    """Where each op (in execution order) runs under ``profile``."""
    runtime_ops = frozenset(profile.runtime.ops) if profile.runtime.ops else None
    accelerator = profile.accelerator
    accelerator_ops = frozenset(accelerator.ops) if accelerator is not None and accelerator.ops else None
    default_where = ACCELERATOR if accelerator is not None else CPU
    single_partition = accelerator is not None and accelerator.kind in _SINGLE_PARTITION_KINDS
    cut = False
    out = []
    for op in sequence:
        if runtime_ops is not None and op not in runtime_ops:
            out.append(_Placement(op, False, UNSUPPORTED))
        elif accelerator_ops is None:
            out.append(_Placement(op, True, default_where))
        elif op not in accelerator_ops:
            cut = cut or single_partition
            out.append(_Placement(op, False, CPU_FALLBACK))
        elif cut:
            out.append(_Placement(op, True, CPU_FALLBACK, after_cut=True))
        else:
            out.append(_Placement(op, True, ACCELERATOR))
    return out


def _summarise(placements: Sequence[_Placement]) -> tuple[OpUse, ...]:
    counts: Counter[tuple[str, bool, str]] = Counter((p.op, p.supported, p.where) for p in placements)
    return tuple(OpUse(op, count, supported, where) for (op, supported, where), count in counts.items())


def _counted(ops: Iterable[str]) -> str:
    counts = Counter(ops)
    return ", ".join(f"{op} ({n}x)" for op, n in counts.items())


def _op_problems(placements: Sequence[_Placement], profile: DeviceProfile, problems: list[str],
                 warnings: list[str]) -> None:
    unsupported = [p.op for p in placements if p.where == UNSUPPORTED]
    if unsupported:
        problems.append(
            f"unsupported ops on {profile.id!r} ({profile.runtime.engine} has no kernel for them): "
            f"{_counted(unsupported)}; the profile's runtime.ops lists the kernels the runtime registers: change "
            "the model to avoid these ops, or register their kernels and add them to runtime.ops")
    fallback = [p for p in placements if p.where == CPU_FALLBACK]
    if not fallback:
        return
    accelerator = profile.accelerator
    if accelerator is None:  # only an accelerator's op list places ops on the CPU as a fallback
        return
    missing = [p.op for p in fallback if not p.supported]
    text = f"ops the {accelerator.name} cannot run, which run on the CPU: {_counted(missing)}"
    if accelerator.kind in _SINGLE_PARTITION_KINDS:
        first = next(i for i, p in enumerate(placements) if p.where == CPU_FALLBACK)
        dragged = sum(p.after_cut for p in placements)
        text += (f". {_SINGLE_PARTITION_KINDS[accelerator.kind]} maps only the leading supported part of the graph "
                 f"to the accelerator: from the first unsupported op ({placements[first].op}, operator {first + 1} of "
                 f"{len(placements)}) on, everything runs on the CPU, including {dragged} supported op(s) after it")
    if profile.runtime.fallback_to_cpu:
        warnings.append(text + "; inference will be slower")
    else:
        problems.append(text + f"; profile {profile.id!r} has runtime.fallback_to_cpu = false, so the model cannot "
                               "run as intended: replace those ops with supported ones")


def _dtype_problems(graph: ModelGraph, profile: DeviceProfile, problems: list[str], warnings: list[str]) -> None:
    runtime = profile.runtime
    exempt: set[int] = set()
    for dtype, indices in ((runtime.input_dtype, graph.inputs), (runtime.output_dtype, graph.outputs)):
        if dtype in _FLOAT_DTYPES:
            exempt.update(indices)
    if set(runtime.allowed_quantization) == {"int8"}:
        floats = [graph.tensors[i] for i in sorted(graph.float_compute - exempt)]
        if floats:
            by_dtype = Counter(t.dtype for t in floats)
            examples = ", ".join(repr(t.name) for t in floats[:3]) + (", ..." if len(floats) > 3 else "")
            where = f" on the {profile.accelerator.name}" if profile.accelerator is not None else ""
            problems.append(
                f"{len(floats)} tensor(s) are computed in float ({', '.join(f'{n} {d}' for d, n in by_dtype.items())}; "
                f"{examples}), but profile {profile.id!r} runs only full-integer int8 models{where} "
                "(allowed_quantization = ['int8']): convert with full-integer post-training quantization")
    for role, dtype, indices in (("input", runtime.input_dtype, graph.inputs),
                                 ("output", runtime.output_dtype, graph.outputs)):
        for i in indices:
            tensor = graph.tensors[i]
            if tensor.dtype != dtype:
                warnings.append(f"model {role} {tensor.name!r} is {tensor.dtype}, but profile {profile.id!r} "
                                f"expects {dtype} {role}s (runtime.{role}_dtype)")


def _peak_activation_bytes(graph: ModelGraph) -> int:
    """Greedy liveness over the main graph in execution order (see the module docstring)."""
    last = max(len(graph.nodes) - 1, 0)
    start: dict[int, int] = {i: 0 for i in graph.inputs}
    end: dict[int, int] = {i: 0 for i in graph.inputs}
    for step, node in enumerate(graph.nodes):
        for i in node.inputs:
            if i >= 0 and not graph.tensors[i].constant:
                start.setdefault(i, 0)  # read before any op wrote it: a variable or an input
                end[i] = max(end.get(i, step), step)
        for i in node.outputs:
            if i >= 0 and not graph.tensors[i].constant:
                start.setdefault(i, step)
                end[i] = max(end.get(i, step), step)
    for i in graph.outputs:
        if i in start:
            end[i] = last
        else:
            start[i], end[i] = 0, last
    delta = [0] * (last + 2)
    for i, first in start.items():
        size = graph.tensors[i].nbytes
        delta[first] += size
        delta[end[i] + 1] -= size
    peak = live = 0
    for change in delta:
        live += change
        peak = max(peak, live)
    return peak


_SHRINK = "reduce the input resolution or the channel widths"


def _fits(model_bytes: int, peak: int, param_bytes: int, profile: DeviceProfile, arena_bytes: int | None = None,
          headroom_bytes: int = MCU_HEADROOM_BYTES) -> list[tuple[FitCheck, str]]:
    """Every fit check with the advice to print when it fails."""
    memory = profile.memory
    estimate, arena = "activation estimate; measure the arena", "tensor arena"
    if arena_bytes is not None and profile.is_microcontroller:
        peak = arena_bytes + headroom_bytes
        estimate = f"measured arena {arena_bytes} B + {_amount(headroom_bytes, 'bytes')} stack/heap headroom"
        arena = "tensor arena + stack/heap"
    fits = [(FitCheck("model storage", model_bytes, memory.storage_bytes, "bytes",
                      model_bytes <= memory.storage_bytes, "memory.storage_bytes"),
             "use a smaller model, or a lower-precision quantization if the profile allows one")]
    if memory.flash_bytes is not None:
        need = model_bytes + TFLM_RUNTIME_BYTES
        fits.append((FitCheck("flash (model + runtime)", need, memory.flash_bytes, "bytes", need <= memory.flash_bytes,
                              f"assumes {TFLM_RUNTIME_BYTES // 1024} KiB of TFLite Micro code"),
                     "the model and the TFLite Micro runtime do not fit the board's flash; use a smaller model"))
    if profile.is_microcontroller:
        external = memory.external_ram_bytes
        fits.append((FitCheck(f"{arena} (internal SRAM)", peak, memory.ram_bytes, "bytes",
                              peak <= memory.ram_bytes, estimate, hard=external == 0),
                     "the arena must go to the slower external RAM" if external else _SHRINK))
        if external:
            total = memory.ram_bytes + external
            fits.append((FitCheck(f"{arena} (SRAM + external RAM)", peak, total, "bytes", peak <= total, estimate),
                         _SHRINK))
    else:
        need = model_bytes + peak
        fits.append((FitCheck("RAM (model + activations)", need, memory.ram_bytes, "bytes", need <= memory.ram_bytes,
                              "activation estimate"),
                     "use a smaller model or input"))
    accelerator = profile.accelerator
    if accelerator is not None and accelerator.parameter_cache_bytes is not None:
        cache = accelerator.parameter_cache_bytes
        fits.append((FitCheck("accelerator parameter cache", param_bytes, cache, "bytes", param_bytes <= cache,
                              "weights beyond it stream from the host every inference", hard=False),
                     (f"the weights do not fit the {accelerator.name}'s on-chip parameter cache, so the rest streams "
                      "from host memory (over USB on a USB accelerator) on every inference, which is slower")))
    return fits


def _fit_message(fit: FitCheck, advice: str, profile: DeviceProfile) -> str:
    return (f"{fit.name} on {profile.id!r}: needs {_amount(fit.need, fit.unit)} ({fit.need} {fit.unit}), "
            f"has {_amount(fit.have, fit.unit)}; {advice}")


# --------------------------------------------------------------------------- accelerator compilers


def _no_compiler(profile: DeviceProfile, model: bytes, work_dir: Path | None) -> dict[str, Any]:
    return {"ran": False, "version": None, "log": "", "compiled_model": None, "note": ""}


def _edgetpu_compiler(profile: DeviceProfile, model: bytes, work_dir: Path | None) -> dict[str, Any]:
    """Run ``edgetpu_compiler -s -o <work_dir> model.tflite`` when it is installed."""
    exe = shutil.which("edgetpu_compiler")
    result: dict[str, Any] = {"ran": False, "version": None, "log": "", "compiled_model": None, "note": ""}
    if exe is None:
        result["note"] = ("edgetpu_compiler not found on PATH: the bundle is Edge-TPU-ready (full-integer, supported "
                          "ops) but not compiled; compile it on an x86-64 Linux host with edgetpu_compiler")
        return result
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as scratch:
        out_dir = Path(work_dir) if work_dir is not None else Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = out_dir / "model.tflite"
        source.write_bytes(model)
        result["version"] = _edgetpu_version(exe)
        try:
            proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(source)], cwd=out_dir, capture_output=True,
                                  text=True, timeout=EDGETPU_COMPILER_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            result.update(ran=True, log=_text(exc.stdout), problem=True,
                          note=f"edgetpu_compiler did not finish in {EDGETPU_COMPILER_TIMEOUT_S:.0f} s")
            return result
        except OSError as exc:
            result["note"] = f"edgetpu_compiler at {exe} could not be started: {exc}"
            return result
        output = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
        result.update(ran=True, log=output)
        result["version"] = result["version"] or _version_in(output)
        compiled = out_dir / f"{source.stem}_edgetpu.tflite"
        if proc.returncode != 0 or not compiled.is_file():
            tail = "; ".join(line.strip() for line in output.splitlines() if line.strip())[-400:]
            result.update(problem=True, note=f"edgetpu_compiler could not compile the model (exit status "
                                             f"{proc.returncode}): {tail or 'no output'}")
            return result
        result["compiled_model"] = compiled.name
        on_cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", output)
        notes = [f"{on_cpu.group(1)} operation(s) will run on the CPU"] if on_cpu and int(on_cpu.group(1)) else []
        if work_dir is None:
            notes.append(f"compiled in a temporary directory and discarded; pass work_dir to keep {compiled.name}")
        result["note"] = "; ".join(notes)
    return result


def _version_in(text: str) -> str | None:
    match = re.search(r"version\s+(\S+)", text or "")
    return match.group(1) if match else None


def _edgetpu_version(exe: str) -> str | None:
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _version_in(proc.stdout + proc.stderr)


#: Accelerator kind -> the tool that compiles a model for it (others: nothing to run).
_COMPILERS: Mapping[str, Callable[[DeviceProfile, bytes, Path | None], dict[str, Any]]] = {
    "edgetpu": _edgetpu_compiler,
}


def _accelerator_compiler(profile: DeviceProfile, model: bytes, work_dir: Path | None) -> dict[str, Any]:
    kind = profile.accelerator.kind if profile.accelerator is not None else None
    return _COMPILERS.get(kind, _no_compiler)(profile, model, work_dir)
