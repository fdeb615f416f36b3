"""The device profile schema: frozen dataclasses, read from TOML and validated once.

A profile file looks like this (every key is described on the dataclass that
holds it; optional keys show their default)::

    schema = 1
    id = "raspberry-pi-4"            # [a-z0-9][a-z0-9-]*; equals the file stem inside a profiles directory
    name = "Raspberry Pi 4 Model B (4 GB)"
    description = "..."              # optional
    source = "..."                   # optional: where the figures come from

    [cpu]          # -> CPU
    [memory]       # -> Memory
    [runtime]      # -> Runtime
    [accelerator]  # -> Accelerator; optional, absent means the model runs on the CPU
    [compute]      # -> Compute

Validation happens in :meth:`DeviceProfile.from_dict` (which
:meth:`DeviceProfile.from_file` calls) and nowhere else: an unknown key, a
wrong type, a missing key, an impossible value or a combination that cannot
work raises :class:`~edge_sdk.errors.ProfileError` naming the file and the
dotted key (``memory.ram_bytes``). Objects built directly through the
dataclass constructors are not validated; build them through ``from_dict``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, NoReturn

from edge_sdk.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "SCHEMA_VERSION",
    "ARCHITECTURES",
    "ENGINES",
    "ENGINE_FORMATS",
    "QUANTIZATIONS",
    "DTYPES",
    "DELEGATES",
    "ACCELERATOR_KINDS",
    "OPTIMIZED_KERNELS",
    "CPU",
    "Memory",
    "Runtime",
    "Accelerator",
    "Compute",
    "DeviceProfile",
]

#: The only profile schema version this code reads.
SCHEMA_VERSION = 1

#: Instruction-set architectures a profile may name (``uname -m`` spelling for
#: application processors, the Arm architecture profile for Cortex-M cores).
ARCHITECTURES = (
    "x86_64",
    "aarch64",
    "armv7l",
    "armv6-m",
    "armv7-m",
    "armv7e-m",
    "armv8-m",
    "xtensa-lx6",
    "xtensa-lx7",
    "riscv32",
    "riscv64",
)

#: Inference engine -> the one model format it runs.
ENGINE_FORMATS: Mapping[str, str] = {
    "litert": "tflite",
    "onnxruntime": "onnx",
    "tflite-micro": "tflite",
}
ENGINES = tuple(ENGINE_FORMATS)
FORMATS = ("tflite", "onnx")

#: ``int8`` full-integer, ``fp16`` half-precision weights (or engine), ``dynamic``
#: dynamic-range (int8 weights, float activations), ``float32`` unquantized.
QUANTIZATIONS = ("int8", "fp16", "dynamic", "float32")

#: What each engine can execute at all. TFLite Micro has no fp16 kernels and no
#: hybrid (dynamic-range) kernels.
ENGINE_QUANTIZATIONS: Mapping[str, tuple[str, ...]] = {
    "litert": QUANTIZATIONS,
    "onnxruntime": QUANTIZATIONS,
    "tflite-micro": ("int8", "float32"),
}

DTYPES = ("float32", "float16", "int8", "uint8")
INT8_TYPES = ("int8", "uint8")

#: Delegates (LiteRT) or execution providers (ONNX Runtime) per engine.
DELEGATES: Mapping[str, tuple[str, ...]] = {
    "litert": ("edgetpu", "xnnpack", "gpu"),
    "onnxruntime": ("tensorrt", "cuda", "cpu"),
    "tflite-micro": (),
}

#: Delegates that need a matching ``[accelerator]`` table to make sense.
_DELEGATE_NEEDS_ACCELERATOR: Mapping[str, str] = {
    "edgetpu": "edgetpu",
    "gpu": "gpu",
    "tensorrt": "gpu",
    "cuda": "gpu",
}

ACCELERATOR_KINDS = ("edgetpu", "gpu", "npu")

#: Optimized TFLite Micro kernel libraries -> architectures they are built for.
OPTIMIZED_KERNELS: Mapping[str, tuple[str, ...]] = {
    "cmsis-nn": ("armv6-m", "armv7-m", "armv7e-m", "armv8-m"),
    "esp-nn": ("xtensa-lx6", "xtensa-lx7", "riscv32"),
}

_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_TFLITE_OP_RE = re.compile(r"[A-Z][A-Z0-9_]*")  # TFLite BuiltinOperator names: CONV_2D
_ONNX_OP_RE = re.compile(r"[A-Z][A-Za-z0-9]*")  # ONNX op types: Conv, QLinearConv

_MISSING: Any = object()


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class CPU:
    """``[cpu]``: the processor that runs the runtime (and the model, without an accelerator).

    - ``architecture`` (required): one of :data:`ARCHITECTURES`.
    - ``model`` (required): core name, e.g. ``"Cortex-A72"``.
    - ``cores`` (required, >= 1): cores the runtime may use.
    - ``frequency_mhz`` (required, > 0): sustained clock of those cores.
    """

    architecture: str
    model: str
    cores: int
    frequency_mhz: int


@dataclass(frozen=True)
class Memory:
    """``[memory]``: what the model may occupy at run time and at rest.

    - ``ram_bytes`` (required, > 0): main RAM; on a microcontroller the internal
      SRAM, where the tensor arena goes by default.
    - ``storage_bytes`` (required, > 0): the budget for model data at rest. On
      Linux boards the disk space bundles may use (both OTA slots together), not
      the size of the card; on microcontrollers the flash the model may occupy
      (internal + external), after the firmware image.
    - ``external_ram_bytes`` (default 0): slower RAM outside the chip (PSRAM,
      SDRAM) that a microcontroller can place a large tensor arena in.
    - ``flash_bytes`` (optional; required for ``tflite-micro``): total flash of a
      microcontroller board, internal + external. Must be at least
      ``storage_bytes``.
    """

    ram_bytes: int
    storage_bytes: int
    external_ram_bytes: int = 0
    flash_bytes: int | None = None


@dataclass(frozen=True)
class Runtime:
    """``[runtime]``: how a model must be built and run for this device.

    - ``engine`` (required): ``litert`` | ``onnxruntime`` | ``tflite-micro``.
    - ``format`` (required): the model format the engine runs: ``tflite`` for
      LiteRT and TFLite Micro, ``onnx`` for ONNX Runtime.
    - ``quantization`` (required): the preferred one of :data:`QUANTIZATIONS`.
    - ``allowed_quantization`` (default ``[quantization]``): every quantization the
      device can run; contains ``quantization``. ``tflite-micro`` allows only
      ``int8`` and ``float32``.
    - ``input_dtype`` / ``output_dtype`` (required): one of :data:`DTYPES`, what the
      model's inputs and outputs must be. Integer I/O (``int8``/``uint8``) only
      exists for full-integer models, so it needs ``allowed_quantization = ["int8"]``;
      ``float16`` I/O likewise needs ``["fp16"]``.
    - ``activation_type`` / ``weight_type``: ONNX int8 only (``format = "onnx"`` with
      ``int8`` allowed), and then required: ``uint8``/``int8`` for x86 CPUs (U8S8),
      ``int8``/``int8`` for TensorRT (S8S8). TFLite int8 is always int8/int8.
    - ``symmetric_activations`` (default false): quantize activations with a zero
      point of 0 (ONNX Runtime's ``ActivationSymmetric``); TensorRT needs it.
      Needs ``activation_type``.
    - ``num_threads`` (default 1): CPU threads for the interpreter; at most
      ``cpu.cores``; exactly 1 for ``tflite-micro``.
    - ``delegates`` (default ``[]``): delegates (LiteRT: ``edgetpu``, ``xnnpack``,
      ``gpu``) or execution providers (ONNX Runtime: ``tensorrt``, ``cuda``, ``cpu``;
      at least one, ``cpu`` only last) in order of preference; none for
      ``tflite-micro``. ``edgetpu`` needs an Edge TPU ``[accelerator]``, ``gpu``,
      ``cuda`` and ``tensorrt`` a GPU one.
    - ``static_shapes`` (default true): inputs have fixed shapes (no dynamic
      batch or resolution); Edge TPU, TensorRT engines and TFLite Micro need it.
    - ``fallback_to_cpu`` (default false): may work run on CPU kernels when the
      preferred delegate is missing or cannot take an op? When false, either is
      an error. Meaningless (and ignored) when ``delegates`` is empty.
    - ``ops`` (default ``[]`` = any): operators the runtime has kernels for; a
      model using any other op cannot run. TFLite builtin names (``CONV_2D``)
      for ``tflite``, ONNX op types (``Conv``) for ``onnx``. TFLite Micro profiles
      list the kernels of its op resolver.
    - ``optimized_kernels`` (optional, ``tflite-micro`` only): the optimized kernel
      library the firmware is built with, ``cmsis-nn`` (Arm Cortex-M) or ``esp-nn``
      (Espressif).
    """

    engine: str
    format: str
    quantization: str
    allowed_quantization: tuple[str, ...]
    input_dtype: str
    output_dtype: str
    activation_type: str | None = None
    weight_type: str | None = None
    symmetric_activations: bool = False
    num_threads: int = 1
    delegates: tuple[str, ...] = ()
    static_shapes: bool = True
    fallback_to_cpu: bool = False
    ops: tuple[str, ...] = ()
    optimized_kernels: str | None = None


@dataclass(frozen=True)
class Accelerator:
    """``[accelerator]`` (optional): the chip that runs the model instead of the CPU.

    - ``kind`` (required): ``edgetpu`` | ``gpu`` | ``npu``.
    - ``name`` (required): e.g. ``"Google Edge TPU"``.
    - ``ops`` (default ``[]`` = any): operators the accelerator executes (the Edge
      TPU's list). Other ops run on the CPU when ``runtime.fallback_to_cpu`` is
      true and make the model incompatible when it is false.
    - ``parameter_cache_bytes`` (optional, > 0): on-chip memory for weights (the
      Edge TPU's 8 MiB); weights beyond it stream from host memory on every run.
    - ``peak_tops`` (optional, > 0): vendor peak throughput in tera-ops/s, for
      reference only; latency estimates use ``compute.gops``.

    An ``edgetpu`` accelerator needs engine ``litert``, the ``edgetpu`` delegate,
    ``allowed_quantization = ["int8"]`` and integer I/O; a ``gpu`` one needs a GPU
    delegate (``gpu``, ``tensorrt`` or ``cuda``).
    """

    kind: str
    name: str
    ops: tuple[str, ...] = ()
    parameter_cache_bytes: int | None = None
    peak_tops: float | None = None


@dataclass(frozen=True)
class Compute:
    """``[compute]``: the figure latency estimates use.

    - ``gops`` (required, > 0): sustained *effective* giga-operations per second
      (one multiply-accumulate = 2 ops) for a mobile vision model built with the
      preferred quantization on the preferred delegate; i.e. ``2 * MACs / latency``
      of a reference model, not the vendor's peak. The profile's ``source`` says
      how the figure was obtained.
    """

    gops: float


@dataclass(frozen=True)
class DeviceProfile:
    """One device target: read from a TOML file, validated once, then passed around.

    Build one with :meth:`from_file` or :meth:`from_dict`; :meth:`to_dict`
    gives the JSON-serialisable form that :meth:`from_dict` reads back.
    ``path`` says where the profile was loaded from and takes no part in
    equality.
    """

    schema: int
    id: str
    name: str
    cpu: CPU
    memory: Memory
    runtime: Runtime
    compute: Compute
    accelerator: Accelerator | None = None
    description: str = ""
    source: str = ""
    path: str | None = field(default=None, compare=False)

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DeviceProfile:
        """Read and validate one profile file (any file name)."""
        where = os.fspath(path)
        try:
            data = Path(where).read_bytes()
        except FileNotFoundError as exc:
            raise ProfileError(where, "profile file not found") from exc
        except IsADirectoryError as exc:
            raise ProfileError(where, "is a directory, not a profile TOML file") from exc
        except OSError as exc:
            raise ProfileError(where, f"cannot read profile file: {exc.strerror or exc}") from exc
        return _parse_bytes(where, data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source_path: str | os.PathLike[str] | None = None) -> DeviceProfile:
        """Validate ``data`` (the parsed TOML, or :meth:`to_dict` output) into a profile.

        ``source_path`` is recorded as :attr:`path` and named in every error
        (``<dict>`` when it is None).
        """
        where = os.fspath(source_path) if source_path is not None else "<dict>"
        return _build(where, data, source_path=None if source_path is None else where)

    # ---------------------------------------------------------------- views

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain JSON types, laid out like the TOML file (no ``path``).

        Keys whose value is absent (None) are left out, as TOML has no null.
        """
        out: dict[str, Any] = {
            "schema": self.schema,
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "cpu": _plain(self.cpu),
            "memory": _plain(self.memory),
            "runtime": _plain(self.runtime),
        }
        if self.accelerator is not None:
            out["accelerator"] = _plain(self.accelerator)
        out["compute"] = _plain(self.compute)
        return out

    @property
    def is_microcontroller(self) -> bool:
        """True for TFLite Micro targets (firmware export, tensor arena, no OS)."""
        return self.runtime.engine == "tflite-micro"

    @property
    def supported_ops(self) -> frozenset[str] | None:
        """Operators a model may contain and still run as this profile intends; None means any.

        The runtime's ``ops`` always limit it; the accelerator's ``ops`` limit it
        too when ``runtime.fallback_to_cpu`` is false.
        """
        limits = []
        if self.runtime.ops:
            limits.append(frozenset(self.runtime.ops))
        if self.accelerator is not None and self.accelerator.ops and not self.runtime.fallback_to_cpu:
            limits.append(frozenset(self.accelerator.ops))
        if not limits:
            return None
        return frozenset.intersection(*limits)


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        if value is None:
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# --------------------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=64)
def _parse_bytes(where: str, data: bytes) -> DeviceProfile:
    """Parse one file's bytes; cached on (path, content), so an edited file is re-read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(where, f"not UTF-8 text (byte {exc.start}); save the profile as UTF-8") from exc
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(where, f"invalid TOML: {exc}") from exc
    return _build(where, parsed, source_path=where)


_TOML_TYPE_NAMES = {
    bool: "a boolean",
    str: "a string",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def _kind(value: Any) -> str:
    for cls, name in _TOML_TYPE_NAMES.items():
        if isinstance(value, cls):
            return name
    return type(value).__name__


class _Table:
    """Hands out the values of one TOML table by key and type; errors name file and dotted key."""

    def __init__(self, where: str, data: Any, prefix: str, allowed: tuple[str, ...]) -> None:
        self.where = where
        self.prefix = prefix
        if not isinstance(data, Mapping):
            self.fail_at(prefix.rstrip(".") or None, f"expected a table, got {data!r} ({_kind(data)})")
        self.data = data
        # Unknown keys first: a misspelt key is a better message than "missing".
        for key in data:
            if key not in allowed:
                where_in = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
                self.fail(str(key), f"unknown key {key!r}; allowed keys in {where_in}: {', '.join(allowed)}")

    def dotted(self, key: str) -> str:
        return self.prefix + key

    def fail_at(self, dotted: str | None, reason: str) -> NoReturn:
        raise ProfileError(self.where, reason, key=dotted)

    def fail(self, key: str, reason: str) -> NoReturn:
        self.fail_at(self.dotted(key), reason)

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.fail(key, "required key is missing")
        return default

    def _wrong(self, key: str, expected: str, value: Any) -> NoReturn:
        self.fail(key, f"expected {expected}, got {value!r} ({_kind(value)})")

    def string(self, key: str, default: Any = _MISSING, *, nonempty: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            self._wrong(key, "a string", value)
        if nonempty and not value.strip():
            self.fail(key, "must not be empty")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "an integer", value)
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, positive: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._wrong(key, "a number", value)
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            self.fail(key, f"must be greater than 0, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            self._wrong(key, "true or false", value)
        return value

    def choice(self, key: str, allowed: Collection[str], default: Any = _MISSING) -> Any:
        value = self.string(key, default)
        if value is default and default is not _MISSING:
            return value
        if value not in allowed:
            self.fail(key, f"{value!r} is not one of: {', '.join(allowed)}")
        return value

    def strings(self, key: str, default: Any = _MISSING, *, choices: Collection[str] | None = None) -> Any:
        """An array of distinct strings, returned as a tuple."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list):
            self._wrong(key, "an array of strings", value)
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self._wrong(f"{key}[{i}]", "a string", item)
            if choices is not None and item not in choices:
                self.fail(f"{key}[{i}]", f"{item!r} is not one of: {', '.join(choices) or '(none allowed)'}")
            if item in seen:
                self.fail(f"{key}[{i}]", f"{item!r} is listed twice")
            seen.add(item)
        return tuple(value)

    def table(self, key: str, allowed: tuple[str, ...]) -> _Table:
        if key not in self.data:
            self.fail(key, "required table is missing")
        return _Table(self.where, self.data[key], self.dotted(key) + ".", allowed)

    def optional_table(self, key: str, allowed: tuple[str, ...]) -> _Table | None:
        return self.table(key, allowed) if key in self.data else None


_TOP_KEYS = ("schema", "id", "name", "description", "source", "cpu", "memory", "runtime", "accelerator", "compute")
_CPU_KEYS = ("architecture", "model", "cores", "frequency_mhz")
_MEMORY_KEYS = ("ram_bytes", "storage_bytes", "external_ram_bytes", "flash_bytes")
_RUNTIME_KEYS = (
    "engine",
    "format",
    "quantization",
    "allowed_quantization",
    "input_dtype",
    "output_dtype",
    "activation_type",
    "weight_type",
    "symmetric_activations",
    "num_threads",
    "delegates",
    "static_shapes",
    "fallback_to_cpu",
    "ops",
    "optimized_kernels",
)
_ACCELERATOR_KEYS = ("kind", "name", "ops", "parameter_cache_bytes", "peak_tops")
_COMPUTE_KEYS = ("gops",)


def _build(where: str, data: Any, *, source_path: str | None) -> DeviceProfile:
    top = _Table(where, data, "", _TOP_KEYS)
    schema = top.integer("schema")
    if schema != SCHEMA_VERSION:
        top.fail("schema", f"unsupported schema version {schema!r}; this edge-sdk reads schema {SCHEMA_VERSION}")
    profile_id = top.string("id", nonempty=True)
    if not _ID_RE.fullmatch(profile_id):
        top.fail("id", f"{profile_id!r} is not a valid id: use lowercase letters, digits and '-', "
                       "starting with a letter or digit")
    name = top.string("name", nonempty=True)
    description = top.string("description", "")
    source = top.string("source", "")

    cpu_table = top.table("cpu", _CPU_KEYS)
    memory_table = top.table("memory", _MEMORY_KEYS)
    runtime_table = top.table("runtime", _RUNTIME_KEYS)
    accelerator_table = top.optional_table("accelerator", _ACCELERATOR_KEYS)
    compute_table = top.table("compute", _COMPUTE_KEYS)

    cpu = _read_cpu(cpu_table)
    accelerator = _read_accelerator(accelerator_table) if accelerator_table is not None else None
    runtime = _read_runtime(runtime_table, cpu, accelerator)
    memory = _read_memory(memory_table, runtime)
    compute = Compute(gops=compute_table.number("gops", positive=True))
    if accelerator_table is not None and accelerator is not None:
        _check_accelerator(accelerator_table, accelerator, runtime)

    return DeviceProfile(
        schema=schema,
        id=profile_id,
        name=name,
        description=description,
        source=source,
        cpu=cpu,
        memory=memory,
        runtime=runtime,
        accelerator=accelerator,
        compute=compute,
        path=source_path,
    )


def _read_cpu(t: _Table) -> CPU:
    return CPU(
        architecture=t.choice("architecture", ARCHITECTURES),
        model=t.string("model", nonempty=True),
        cores=t.integer("cores", minimum=1),
        frequency_mhz=t.integer("frequency_mhz", minimum=1),
    )


def _read_memory(t: _Table, runtime: Runtime) -> Memory:
    memory = Memory(
        ram_bytes=t.integer("ram_bytes", minimum=1),
        storage_bytes=t.integer("storage_bytes", minimum=1),
        external_ram_bytes=t.integer("external_ram_bytes", 0, minimum=0),
        flash_bytes=t.integer("flash_bytes", None, minimum=1),
    )
    if memory.flash_bytes is None and runtime.engine == "tflite-micro":
        t.fail("flash_bytes", "required key is missing: a tflite-micro profile must give the board's total flash")
    if memory.flash_bytes is not None and memory.storage_bytes > memory.flash_bytes:
        t.fail("storage_bytes", f"the model budget ({memory.storage_bytes} bytes) is larger than "
                                f"the flash ({memory.flash_bytes} bytes)")
    return memory


def _read_runtime(t: _Table, cpu: CPU, accelerator: Accelerator | None) -> Runtime:
    engine = t.choice("engine", ENGINES)
    fmt = t.choice("format", FORMATS)
    if fmt != ENGINE_FORMATS[engine]:
        t.fail("format", f"engine {engine!r} runs {ENGINE_FORMATS[engine]!r} models, not {fmt!r}")
    quantization = t.choice("quantization", QUANTIZATIONS)
    allowed = t.strings("allowed_quantization", (quantization,), choices=QUANTIZATIONS)
    if not allowed:
        t.fail("allowed_quantization", "must list at least one quantization")
    if quantization not in allowed:
        t.fail("quantization", f"preferred quantization {quantization!r} is not in "
                               f"allowed_quantization ({', '.join(allowed)})")
    for i, q in enumerate(allowed):
        if q not in ENGINE_QUANTIZATIONS[engine]:
            t.fail(f"allowed_quantization[{i}]", f"engine {engine!r} cannot run {q!r} models; "
                                                 f"it supports: {', '.join(ENGINE_QUANTIZATIONS[engine])}")

    input_dtype = t.choice("input_dtype", DTYPES)
    output_dtype = t.choice("output_dtype", DTYPES)
    for key, dtype in (("input_dtype", input_dtype), ("output_dtype", output_dtype)):
        if dtype in INT8_TYPES and set(allowed) != {"int8"}:
            t.fail(key, f"{dtype!r} I/O needs a full-integer model, so allowed_quantization must be "
                        f"[\"int8\"], not [{', '.join(repr(q) for q in allowed)}]")
        if dtype == "float16" and set(allowed) != {"fp16"}:
            t.fail(key, f"'float16' I/O needs an fp16 model, so allowed_quantization must be "
                        f"[\"fp16\"], not [{', '.join(repr(q) for q in allowed)}]")

    onnx_int8 = fmt == "onnx" and "int8" in allowed
    activation_type = t.choice("activation_type", INT8_TYPES, None)
    weight_type = t.choice("weight_type", INT8_TYPES, None)
    for key, value in (("activation_type", activation_type), ("weight_type", weight_type)):
        if value is not None and not onnx_int8:
            t.fail(key, "only applies to ONNX int8 quantization (format 'onnx' with 'int8' in "
                        "allowed_quantization); TFLite int8 is always int8 activations and weights")
        if value is None and onnx_int8:
            t.fail(key, "required key is missing: ONNX int8 needs it ('uint8' activations / 'int8' "
                        "weights for x86 CPUs, 'int8' / 'int8' for TensorRT)")
    symmetric = t.boolean("symmetric_activations", False)
    if symmetric and activation_type is None:
        t.fail("symmetric_activations", "only applies together with activation_type (ONNX int8)")

    num_threads = t.integer("num_threads", 1, minimum=1)
    if num_threads > cpu.cores:
        t.fail("num_threads", f"{num_threads} threads on a {cpu.cores}-core CPU (cpu.cores)")
    if engine == "tflite-micro" and num_threads != 1:
        t.fail("num_threads", f"tflite-micro is single-threaded; must be 1, got {num_threads!r}")

    delegates = t.strings("delegates", (), choices=DELEGATES[engine])
    if engine == "onnxruntime" and not delegates:
        t.fail("delegates", "onnxruntime needs at least one execution provider (tensorrt, cuda, cpu)")
    if "cpu" in delegates and delegates[-1] != "cpu":
        t.fail("delegates", "'cpu' catches everything the providers before it leave, so it must come last")
    for i, delegate in enumerate(delegates):
        needs = _DELEGATE_NEEDS_ACCELERATOR.get(delegate)
        if needs is not None and (accelerator is None or accelerator.kind != needs):
            have = f"a {accelerator.kind!r} one" if accelerator else "none"
            t.fail(f"delegates[{i}]", f"delegate {delegate!r} needs an [accelerator] of kind {needs!r}; "
                                      f"this profile has {have}")

    ops = _read_ops(t, fmt)

    optimized = t.choice("optimized_kernels", tuple(OPTIMIZED_KERNELS), None)
    if optimized is not None:
        if engine != "tflite-micro":
            t.fail("optimized_kernels", "only applies to engine 'tflite-micro'")
        if cpu.architecture not in OPTIMIZED_KERNELS[optimized]:
            t.fail("optimized_kernels", f"{optimized!r} is built for {', '.join(OPTIMIZED_KERNELS[optimized])}, "
                                        f"not cpu.architecture {cpu.architecture!r}")

    return Runtime(
        engine=engine,
        format=fmt,
        quantization=quantization,
        allowed_quantization=allowed,
        input_dtype=input_dtype,
        output_dtype=output_dtype,
        activation_type=activation_type,
        weight_type=weight_type,
        symmetric_activations=symmetric,
        num_threads=num_threads,
        delegates=delegates,
        static_shapes=t.boolean("static_shapes", True),
        fallback_to_cpu=t.boolean("fallback_to_cpu", False),
        ops=ops,
        optimized_kernels=optimized,
    )


def _read_ops(t: _Table, fmt: str) -> tuple[str, ...]:
    ops = t.strings("ops", ())
    pattern, example = (_TFLITE_OP_RE, "CONV_2D") if fmt == "tflite" else (_ONNX_OP_RE, "Conv")
    for i, op in enumerate(ops):
        if not pattern.fullmatch(op):
            t.fail(f"ops[{i}]", f"{op!r} is not a {fmt} operator name (like {example!r})")
    return ops


def _read_accelerator(t: _Table) -> Accelerator:
    kind = t.choice("kind", ACCELERATOR_KINDS)
    ops = t.strings("ops", ())
    for i, op in enumerate(ops):
        if not (_TFLITE_OP_RE.fullmatch(op) or _ONNX_OP_RE.fullmatch(op)):
            t.fail(f"ops[{i}]", f"{op!r} is not an operator name (like 'CONV_2D' or 'Conv')")
    return Accelerator(
        kind=kind,
        name=t.string("name", nonempty=True),
        ops=ops,
        parameter_cache_bytes=t.integer("parameter_cache_bytes", None, minimum=1),
        peak_tops=t.number("peak_tops", None, positive=True),
    )


def _check_accelerator(t: _Table, accelerator: Accelerator, runtime: Runtime) -> None:
    """Combinations an accelerator imposes on the runtime (errors point at the accelerator)."""
    if accelerator.ops:
        pattern, example = (_TFLITE_OP_RE, "CONV_2D") if runtime.format == "tflite" else (_ONNX_OP_RE, "Conv")
        for i, op in enumerate(accelerator.ops):
            if not pattern.fullmatch(op):
                t.fail(f"ops[{i}]", f"{op!r} is not a {runtime.format} operator name (like {example!r})")
    if accelerator.kind == "edgetpu":
        if runtime.engine != "litert":
            t.fail("kind", f"the Edge TPU runs under engine 'litert', not {runtime.engine!r}")
        if "edgetpu" not in runtime.delegates:
            t.fail("kind", "an Edge TPU needs the 'edgetpu' delegate in runtime.delegates")
        if set(runtime.allowed_quantization) != {"int8"}:
            t.fail("kind", "the Edge TPU runs only full-integer models: runtime.allowed_quantization "
                           "must be [\"int8\"]")
        if runtime.input_dtype not in INT8_TYPES or runtime.output_dtype not in INT8_TYPES:
            t.fail("kind", "the Edge TPU needs integer I/O: runtime.input_dtype and runtime.output_dtype "
                           f"must be 'uint8' or 'int8', not {runtime.input_dtype!r} / {runtime.output_dtype!r}")
    if accelerator.kind == "gpu":
        gpu_delegates = {"gpu", "tensorrt", "cuda"}
        if not gpu_delegates & set(runtime.delegates):
            t.fail("kind", "a GPU needs a GPU delegate in runtime.delegates (litert: 'gpu'; "
                           "onnxruntime: 'tensorrt' or 'cuda')")
