"""``edge-sdk firmware export BUNDLE -o DIR``: an int8 bundle -> C/C++ sources and a board project.

The export is a short sequence of named steps, timed and logged by the
packager's :func:`~converters.packager.step` decorator:

1. open and verify the bundle; pick the microcontroller profile and its board;
2. list the model's ops and the ``MicroMutableOpResolver`` method of each;
3. measure the tensor arena (:mod:`firmware_tools.arena`);
4. check the fit against the profile and refuse a model that cannot fit
   (:mod:`firmware_tools.fit`), unless forced;
5. run the model in TFLite Micro against LiteRT (:mod:`firmware_tools.verify`);
   refuse when a top-1 disagrees with LiteRT's reference kernels, unless forced;
6. write the sources and the project.

What comes out (``src/`` is where PlatformIO looks for sources)::

    DIR/src/model_data.h, model_data.cc   the model as an aligned const unsigned char array + its length,
                                          and the bundle's golden input as the example input
    DIR/src/model_ops.h                   MicroMutableOpResolver<N> registering exactly the model's ops
    DIR/src/model_config.h                arena size, input/output names, shapes, dtypes, scale/zero point,
                                          labels, the op names (no TFLite Micro headers needed)
    DIR/src/main.cc                       sets the input, invokes, prints the top class
    DIR/src/<name>.ino                    Arduino-class boards: the same example as a sketch
    DIR/platformio.ini                    a PlatformIO project for the board (+ ESP-IDF's CMake files on ESP32)
    DIR/README.md, DIR/firmware.json      the numbers: arena, fit table, TFLM vs LiteRT, ops
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from converters.packager import step
from firmware_tools.errors import FirmwareError

if TYPE_CHECKING:
    from converters.compat import CompatReport
    from device_profiles import DeviceProfile
    from edge_sdk.bundle.reader import VerifiedBundle
    from firmware_tools.arena import ArenaMeasurement
    from firmware_tools.boards import Board
    from firmware_tools.verify import Verification

log = logging.getLogger(__name__)

#: numpy dtype name -> (C type, TfLiteTensor data union member)
C_TYPES: Mapping[str, tuple[str, str]] = {
    "int8": ("int8_t", "int8"), "uint8": ("uint8_t", "uint8"), "int16": ("int16_t", "i16"),
    "int32": ("int32_t", "i32"), "float32": ("float", "f"),
}
BYTES_PER_LINE = 12


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the generated code describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def elements(self) -> int:
        return int(np.prod([max(d, 1) for d in self.shape]))


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and the numbers behind it."""

    directory: Path
    files: tuple[Path, ...]
    profile: str
    ops: tuple[str, ...]
    methods: tuple[str, ...]
    arena: "ArenaMeasurement"
    fit: "CompatReport"
    verification: "Verification"
    steps: tuple[dict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "files": [str(f) for f in self.files], "profile": self.profile,
                "ops": list(self.ops), "resolver_methods": list(self.methods), "arena": self.arena.to_dict(),
                "fit": {"compatible": self.fit.compatible, "fits": [f.to_dict() for f in self.fit.fits],
                        "problems": list(self.fit.problems), "warnings": list(self.fit.warnings)},
                "verification": self.verification.to_dict(), "steps": list(self.steps)}


@dataclass
class _Context:
    progress: Callable[[str], None]
    steps: list = field(default_factory=list)


def export(
    bundle: str | Path,
    output: str | Path,
    *,
    profile: "DeviceProfile | str | None" = None,
    trusted: Any = None,
    allow_unsigned: bool = False,
    force: bool = False,
    overwrite: bool = False,
    validation_images: Sequence[np.ndarray] | np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the bundle's model for a microcontroller profile (see the module doc); returns what was written.

    ``profile`` defaults to the bundle's own. ``force`` exports a model that fails
    the fit check or disagrees with LiteRT; ``overwrite`` replaces files a previous
    export wrote into ``output``. ``validation_images`` are extra inputs for the
    TFLite Micro vs LiteRT comparison, as raw images (the bundle's preprocessing is applied).
    """
    ctx = _Context(progress or (lambda _msg: None))
    verified, device, board = _open(ctx, Path(bundle), profile, trusted, allow_unsigned)
    model = verified.read(verified.manifest.model)
    source = f"{bundle}:{verified.manifest.model}"
    ops, methods = _ops(ctx, model, source)
    arena = _arena(ctx, model, device, source)
    fit = _fit(ctx, model, device, arena, source, force)
    verification = _verify(ctx, model, verified, arena, validation_images, source, force)
    files = _write(ctx, Path(output), verified, model, device, board, ops, methods, arena, fit, verification, overwrite)
    result = ExportResult(Path(output), files, device.id, ops, methods, arena, fit, verification, tuple(ctx.steps))
    (Path(output) / "firmware.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result


# --------------------------------------------------------------------------- the steps


@step("open and verify the bundle")
def _open(ctx: _Context, path: Path, profile: Any, trusted: Any, allow_unsigned: bool):
    from device_profiles import DeviceProfile, load_profile
    from edge_sdk.bundle.reader import open_bundle
    from firmware_tools.boards import board_for

    verified = open_bundle(path, trusted=trusted, allow_unsigned=allow_unsigned, retain=("model",))
    manifest = verified.manifest
    device = profile if isinstance(profile, DeviceProfile) else load_profile(profile or manifest.profile)
    board = board_for(device)
    if manifest.format != "tflite":
        raise FirmwareError(path, f"the bundle holds a {manifest.format!r} model; TFLite Micro runs .tflite models: "
                                  f"package it for {device.id!r} (edge-sdk package MODEL --profile {device.id})")
    if len(manifest.inputs) != 1:
        raise FirmwareError(path, f"the example firmware feeds one input; this model has {len(manifest.inputs)}")
    return verified, device, board


@step("list the model's ops")
def _ops(ctx: _Context, model: bytes, source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from firmware_tools.ops import model_ops, resolver_methods

    ops = model_ops(model)
    return ops, resolver_methods(ops, source)


@step("measure the tensor arena")
def _arena(ctx: _Context, model: bytes, device, source: str) -> "ArenaMeasurement":
    from firmware_tools.arena import measure_arena

    return measure_arena(model, device, source=source, progress=ctx.progress)


@step("check the fit")
def _fit(ctx: _Context, model: bytes, device, arena, source: str, force: bool) -> "CompatReport":
    from firmware_tools.fit import check_fit, fit_report

    report = fit_report(model, device, arena)
    check_fit(report, source, force)
    return report


@step("compare TFLite Micro with LiteRT")
def _verify(ctx: _Context, model: bytes, verified: "VerifiedBundle", arena, images, source: str,
            force: bool) -> "Verification":
    from firmware_tools.verify import images_to_inputs, verify

    golden = _golden_input(verified)
    validation = images_to_inputs(images, verified.manifest.inputs[0]) if images is not None else None
    result = verify(model, arena.recommended_bytes, golden=golden, validation=validation)
    if not result.ok and not force:
        raise FirmwareError(source, f"TFLite Micro disagrees with LiteRT's reference kernels: {result.summary()} "
                                    "(pass --force to export anyway)")
    return result


@step("write sources and project")
def _write(ctx, out: Path, verified, model, device, board, ops, methods, arena, fit, verification,
           overwrite: bool) -> tuple[Path, ...]:
    manifest = verified.manifest
    inputs, outputs = _tensor_specs(model)
    labels = _labels(verified)
    golden = _golden_input(verified)
    example = golden.reshape(-1) if golden is not None else np.zeros(inputs[0].elements, inputs[0].dtype)
    expected = _expected_class(verified)
    sketch = _identifier(manifest.name)
    files: dict[str, str] = {
        "src/model_data.h": _model_data_h(manifest, inputs[0], len(model)),
        "src/model_data.cc": _model_data_cc(model, inputs[0], example),
        "src/model_ops.h": _model_ops_h(ops, methods),
        "src/model_config.h": _model_config_h(manifest, device, arena, ops, inputs, outputs, labels, expected),
        "src/main.cc": _main_cc(inputs[0], outputs[0], sketch),
    }
    if board.arduino:
        files[f"src/{sketch}.ino"] = _sketch_ino(manifest, inputs[0])
    if board.platform:
        files["platformio.ini"] = _platformio_ini(manifest, device, board)
    if board.framework == "espidf":
        files.update(_espidf_files(sketch))
    files["README.md"] = _readme(manifest, device, board, arena, fit, verification, files)
    targets = {out / name: text for name, text in files.items()}
    clash = [str(p) for p in [*targets, out / "firmware.json"] if p.exists()]
    if clash and not overwrite:
        raise FirmwareError(out, f"would overwrite {', '.join(clash[:4])}{', ...' if len(clash) > 4 else ''}; "
                                 "choose an empty directory or pass --overwrite")
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tuple(targets) + (out / "firmware.json",)


# --------------------------------------------------------------------------- bundle helpers


def _golden_input(verified: "VerifiedBundle") -> np.ndarray | None:
    golden = verified.manifest.golden
    if golden is None or not golden.inputs:
        return None
    return np.load(io.BytesIO(verified.read(next(iter(golden.inputs.values())))), allow_pickle=False)


def _expected_class(verified: "VerifiedBundle") -> int:
    golden = verified.manifest.golden
    if golden is None or not golden.outputs:
        return -1
    output = np.load(io.BytesIO(verified.read(next(iter(golden.outputs.values())))), allow_pickle=False)
    return int(np.argmax(output.reshape(-1)))


def _labels(verified: "VerifiedBundle") -> tuple[str, ...]:
    name = verified.manifest.task.labels
    if name is None:
        return ()
    return tuple(ln.strip() for ln in verified.read(name).decode("utf-8", "replace").splitlines() if ln.strip())


def _tensor_specs(model: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs with their quantization, as the model itself declares them."""
    from firmware_tools.verify import _LiteRT

    litert = _LiteRT(model, reference=True)

    def spec(detail: Mapping) -> TensorSpec:
        dtype = np.dtype(detail["dtype"]).name
        if dtype not in C_TYPES:
            raise FirmwareError("model.tflite", f"tensor {detail['name']!r} is {dtype}; the generated code handles "
                                                f"{', '.join(C_TYPES)}")
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return TensorSpec(detail["name"], dtype, tuple(int(d) for d in detail["shape"]), float(scale),
                          int(zero_point))

    return [spec(d) for d in litert.inputs], [spec(d) for d in litert.outputs]


# --------------------------------------------------------------------------- C/C++ text


def _c_string(text: str) -> str:
    """A C string literal: printable ASCII as is, everything else as 3-digit octal escapes of its UTF-8 bytes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F and char != "?":  # '?' could form a trigraph
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _identifier(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "model"
    return ident if not ident[0].isdigit() else "model_" + ident


def _c_float(value: float) -> str:
    return f"{value!r}f" if value else "0.0f"


def _array_lines(values: Sequence[str], indent: str = "    ") -> str:
    lines = [", ".join(values[i:i + BYTES_PER_LINE]) for i in range(0, len(values), BYTES_PER_LINE)]
    return ",\n".join(indent + line for line in lines)


def _header(manifest, what: str) -> str:
    return (f"// {what}\n// Generated by edge-sdk firmware export from {manifest.name} {manifest.version} "
            f"({manifest.profile}). Do not edit: export again instead.\n")


def _model_data_h(manifest, spec: TensorSpec, size: int) -> str:
    ctype = C_TYPES[spec.dtype][0]
    return f"""{_header(manifest, "The model flatbuffer and an example input.")}
#ifndef EDGE_SDK_MODEL_DATA_H_
#define EDGE_SDK_MODEL_DATA_H_

#include <cstdint>

// The .tflite flatbuffer ({size} bytes), 16-byte aligned as TFLite Micro expects; const, so it stays in flash.
extern const unsigned char kModelData[];
extern const unsigned int kModelDataLen;

// The bundle's golden input, already quantized: what the example feeds.
extern const {ctype} kExampleInput[];
extern const unsigned int kExampleInputLen;

#endif  // EDGE_SDK_MODEL_DATA_H_
"""


def _model_data_cc(model: bytes, spec: TensorSpec, example: np.ndarray) -> str:
    ctype = C_TYPES[spec.dtype][0]
    data = _array_lines([f"0x{b:02x}" for b in model])
    if spec.dtype == "float32":
        values = [_c_float(float(v)) for v in example.astype(np.float32)]
    else:
        values = [str(int(v)) for v in example.astype(spec.dtype)]
    return f"""// Generated by edge-sdk firmware export. sha256 of the model: {hashlib.sha256(model).hexdigest()}
#include "model_data.h"

alignas(16) const unsigned char kModelData[] = {{
{data}
}};
const unsigned int kModelDataLen = {len(model)};

const {ctype} kExampleInput[] = {{
{_array_lines(values)}
}};
const unsigned int kExampleInputLen = {len(values)};
"""


def _model_ops_h(ops: Sequence[str], methods: Sequence[str]) -> str:
    calls = "\n".join(f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;  // {op}"
                      for op, m in zip(ops, methods))
    return f"""// The op resolver for exactly the ops the model uses, no more (smaller firmware than AllOpsResolver).
// Generated by edge-sdk firmware export. Do not edit: export again instead.
#ifndef EDGE_SDK_MODEL_OPS_H_
#define EDGE_SDK_MODEL_OPS_H_

#include "model_config.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;

// Registers the model's {len(ops)} op(s); returns kTfLiteError if any registration fails.
inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {{
{calls}
  return kTfLiteOk;
}}

#endif  // EDGE_SDK_MODEL_OPS_H_
"""


def _tensor_rows(specs: Sequence[TensorSpec]) -> str:
    rows = []
    for s in specs:
        dims = ", ".join(str(d) for d in s.shape)
        rows.append(f"    {{{_c_string(s.name)}, {_c_string(s.dtype)}, {len(s.shape)}, {{{dims}}}, "
                    f"{s.elements}u, {_c_float(s.scale)}, {s.zero_point}}},")
    return "\n".join(rows)


def _model_config_h(manifest, device, arena, ops, inputs, outputs, labels, expected: int) -> str:
    max_rank = max(len(s.shape) for s in [*inputs, *outputs])
    op_names = "\n".join(f"    {_c_string(op)}," for op in ops)
    label_rows = "\n".join(f"    {_c_string(label)}," for label in labels) or "    nullptr,"
    return f"""{_header(manifest, "Model configuration: arena size, tensors, labels. Plain C++17, no TFLite Micro headers.")}
#ifndef EDGE_SDK_MODEL_CONFIG_H_
#define EDGE_SDK_MODEL_CONFIG_H_

#include <cstddef>
#include <cstdint>

constexpr const char* kModelName = {_c_string(manifest.name)};
constexpr const char* kModelVersion = {_c_string(manifest.version)};
constexpr const char* kModelProfile = {_c_string(device.id)};

// Tensor arena, measured by bisection in TFLite Micro's interpreter (edge-sdk firmware arena):
// {arena.measured_bytes} bytes measured (reference kernels, 64-bit host: a bound for a 32-bit board)
// + {arena.alignment_bytes} bytes arena alignment
// + {arena.scratch_bytes} bytes scratch for the {arena.kernels or "reference"} kernels.
// The naive 10x-the-model rule would reserve {arena.naive_bytes} bytes.
constexpr size_t kTensorArenaSize = {arena.recommended_bytes};
constexpr size_t kTensorArenaMeasuredSize = {arena.measured_bytes};

// The ops the model uses, in the order model_ops.h registers them.
constexpr unsigned int kModelOpCount = {len(ops)};
constexpr const char* kModelOpNames[kModelOpCount] = {{
{op_names}
}};

constexpr int kMaxRank = {max_rank};
struct TensorConfig {{
  const char* name;
  const char* dtype;
  int rank;
  int dims[kMaxRank];
  size_t elements;
  float scale;  // real = scale * (q - zero_point); 0 for float tensors
  int zero_point;
}};

constexpr unsigned int kInputCount = {len(inputs)};
constexpr TensorConfig kInputs[kInputCount] = {{
{_tensor_rows(inputs)}
}};
constexpr unsigned int kOutputCount = {len(outputs)};
constexpr TensorConfig kOutputs[kOutputCount] = {{
{_tensor_rows(outputs)}
}};

// Class labels for output 0 ({manifest.task.kind}); kLabelCount is 0 when the bundle has none.
constexpr unsigned int kLabelCount = {len(labels)};
constexpr const char* kLabels[{max(len(labels), 1)}] = {{
{label_rows}
}};

// The class the bundle's golden output gives for kExampleInput (-1: no golden pair).
constexpr int kExampleExpectedClass = {expected};

#endif  // EDGE_SDK_MODEL_CONFIG_H_
"""


def _main_cc(inp: TensorSpec, out: TensorSpec, sketch: str) -> str:
    in_type = C_TYPES[inp.dtype][0]
    member = C_TYPES[out.dtype][1]
    return f"""// Minimal example: set the input, invoke, print the top class.
// Generated by edge-sdk firmware export. On Arduino-class boards {sketch}.ino provides setup()/loop().
#include <cstdarg>
#include <cstdio>
#include <cstring>

#if defined(ARDUINO)
#include <Arduino.h>
#include <TensorFlowLite.h>
#endif

#include "model_config.h"
#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {{
alignas(16) uint8_t tensor_arena[kTensorArenaSize];
ModelOpResolver op_resolver;
tflite::MicroInterpreter* interpreter = nullptr;
}}  // namespace

void ModelLog(const char* format, ...) {{
  char line[160];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof(line), format, args);
  va_end(args);
#if defined(ARDUINO)
  Serial.print(line);
#else
  fputs(line, stdout);
#endif
}}

// Loads the model into the arena; false (with the reason logged) if it cannot.
bool SetupModel() {{
  const tflite::Model* model = tflite::GetModel(kModelData);
  if (model->version() != TFLITE_SCHEMA_VERSION) {{
    ModelLog("model schema %d, this TFLite Micro reads %d\\n", static_cast<int>(model->version()), TFLITE_SCHEMA_VERSION);
    return false;
  }}
  if (RegisterModelOps(op_resolver) != kTfLiteOk) {{
    ModelLog("registering the model's %u ops failed\\n", kModelOpCount);
    return false;
  }}
  static tflite::MicroInterpreter static_interpreter(model, op_resolver, tensor_arena, kTensorArenaSize);
  interpreter = &static_interpreter;
  if (interpreter->AllocateTensors() != kTfLiteOk) {{
    ModelLog("AllocateTensors failed: the %u-byte arena is too small\\n", static_cast<unsigned>(kTensorArenaSize));
    return false;
  }}
  ModelLog("%s %s: arena %u of %u bytes used\\n", kModelName, kModelVersion,
      static_cast<unsigned>(interpreter->arena_used_bytes()), static_cast<unsigned>(kTensorArenaSize));
  return true;
}}

// Runs one input (kInputs[0].elements values); returns the top class of output 0, or -1 on failure.
int RunModel(const {in_type}* input, float* score) {{
  TfLiteTensor* in = interpreter->input(0);
  memcpy(in->data.raw, input, kInputs[0].elements * sizeof({in_type}));
  if (interpreter->Invoke() != kTfLiteOk) return -1;
  const TfLiteTensor* out = interpreter->output(0);
  int best = 0;
  float best_score = 0.0f;
  for (size_t i = 0; i < kOutputs[0].elements; ++i) {{
    const float raw = static_cast<float>(out->data.{member}[i]);
    const float value = kOutputs[0].scale != 0.0f ? kOutputs[0].scale * (raw - kOutputs[0].zero_point) : raw;
    if (i == 0 || value > best_score) {{
      best = static_cast<int>(i);
      best_score = value;
    }}
  }}
  if (score != nullptr) *score = best_score;
  return best;
}}

const char* LabelOf(int index) {{
  return index >= 0 && static_cast<unsigned>(index) < kLabelCount ? kLabels[index] : "?";
}}

#if !defined(ARDUINO)
static int Demo() {{
  if (!SetupModel()) return 1;
  float score = 0.0f;
  const int top = RunModel(kExampleInput, &score);
  ModelLog("top class %d (%s), score %.3f; expected %d\\n", top, LabelOf(top), static_cast<double>(score),
      kExampleExpectedClass);
  return top == kExampleExpectedClass ? 0 : 1;
}}

#if defined(ESP_PLATFORM)
extern "C" void app_main(void) {{ Demo(); }}
#else
int main() {{ return Demo(); }}
#endif
#endif  // !ARDUINO
"""


def _sketch_ino(manifest, inp: TensorSpec) -> str:
    return f"""// {manifest.name} {manifest.version}: run the model once a second and print the top class.
// Generated by edge-sdk firmware export. main.cc holds the model code; this sketch drives it.
#include <Arduino.h>

#include "model_config.h"
#include "model_data.h"

bool SetupModel();
int RunModel(const {C_TYPES[inp.dtype][0]}* input, float* score);
const char* LabelOf(int index);

static bool ready = false;

void setup() {{
  Serial.begin(115200);
  while (!Serial) {{
  }}
  ready = SetupModel();
  if (!ready) Serial.println("model setup failed");
}}

void loop() {{
  if (ready) {{
    float score = 0.0f;
    const int top = RunModel(kExampleInput, &score);
    Serial.print("top class ");
    Serial.print(top);
    Serial.print(" (");
    Serial.print(LabelOf(top));
    Serial.print("), score ");
    Serial.println(score, 3);
  }}
  delay(1000);
}}
"""


def _platformio_ini(manifest, device, board: "Board") -> str:
    lib_deps = "".join(f"\n    {dep}" for dep in board.lib_deps)
    lines = [
        f"; PlatformIO project for {manifest.name} {manifest.version} on {device.name}.",
        "; Generated by edge-sdk firmware export. Build and flash: pio run -t upload; watch: pio device monitor",
        f"; TensorFlow Lite Micro comes from {board.tflm_source}.",
    ]
    if board.framework == "mbed":
        lines += [
            "; Make that tree once, from a tflite-micro checkout:",
            ";   python3 tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py \\",
            ";     --makefile_options=\"OPTIMIZED_KERNEL_DIR=cmsis_nn TARGET=cortex_m_generic TARGET_ARCH=cortex-m7+fp\" \\",
            ";     <this directory>/lib/tflite-micro",
        ]
    lines += [
        "",
        f"[env:{device.id}]",
        f"platform = {board.platform}",
        f"board = {board.board}",
        f"framework = {board.framework}",
        "monitor_speed = 115200",
        "build_unflags = -std=gnu++11 -std=gnu++14",
        "build_flags = -std=gnu++17 -DTF_LITE_STATIC_MEMORY",
    ]
    if lib_deps:
        lines.append(f"lib_deps ={lib_deps}")
    return "\n".join(lines) + "\n"


def _espidf_files(name: str) -> dict[str, str]:
    """The CMake files PlatformIO's ESP-IDF framework needs, and the esp-tflite-micro component dependency."""
    return {
        "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16.0)\n"
                          "include($ENV{IDF_PATH}/tools/cmake/project.cmake)\n"
                          f"project({name})\n",
        "src/CMakeLists.txt": "FILE(GLOB_RECURSE app_sources ${CMAKE_SOURCE_DIR}/src/*.*)\n"
                              "idf_component_register(SRCS ${app_sources})\n",
        "src/idf_component.yml": "dependencies:\n  espressif/esp-tflite-micro: \"*\"\n",
    }


def _readme(manifest, device, board: "Board", arena, fit, verification, files: Mapping[str, str]) -> str:
    listing = "\n".join(f"- `{name}`" for name in sorted([*files, "firmware.json"]))
    return f"""# {manifest.name} {manifest.version} for {device.name}

Generated by `edge-sdk firmware export` from a verified bundle.

## Files

{listing}

## Tensor arena

- measured: {arena.measured_bytes} bytes (smallest arena in which TFLite Micro loads and invokes the model,
  bisected to {arena.granularity} bytes in {arena.probes} interpreter runs; reference kernels on a 64-bit host)
- board margin: {arena.alignment_bytes} bytes alignment + {arena.scratch_bytes} bytes scratch for the
  {arena.kernels or "reference"} kernels
- `kTensorArenaSize` = **{arena.recommended_bytes} bytes**; the 10x-the-model rule would reserve {arena.naive_bytes}
  bytes ({arena.naive_ratio:.1f}x more)

## Fit

```
{fit.table()}
```

## TFLite Micro vs LiteRT

{verification.summary()}

## Building

TensorFlow Lite Micro comes from {board.tflm_source}.
{"`pio run -t upload && pio device monitor`" if board.platform else "Add the files under src/ to your firmware build."}
The example prints the top class of the bundle's golden input (expected: see `kExampleExpectedClass`).
"""
