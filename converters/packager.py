"""``converters.package(...)``: a trained model -> a quantized, validated, signed bundle for one device profile.

The orchestrator is a short sequence of named steps; each is timed and
logged the same way (the one good idea of the Ultralytics exporter), and its
result is recorded in the report stored inside the bundle:

1. load the source model and the device profile, pick the recipe;
2. read calibration/validation data through the runtime's own preprocessing;
3. convert a float reference and the target model;
4. validate target vs reference; the accuracy gate: when the drop exceeds
   ``max_accuracy_drop``, keep the worst layers in float and convert again
   (where the profile allows float ops), or fail with the per-layer report;
5. time float vs quantized on this host (never hide a slower quantized model);
6. check operators, dtypes and fit against the profile; on a microcontroller,
   measure the TFLite Micro tensor arena (recorded as ``arena_bytes``, which the
   runtime then uses instead of the 10x-model-size rule);
7. write the signed bundle: model, labels, golden input/output, report.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from converters.base import ConversionError, Converted, QuantRecipe, SourceModel
from converters.calibration import Samples, load_samples
from converters.recipe import float_fallback_allowed, recipe_for
from converters.validate import Runner, ValidationReport, validate
from edge_sdk.bundle.manifest import GoldenSpec, InputSpec, Manifest, OutputSpec, TaskSpec
from edge_sdk.errors import EdgeSDKError

log = logging.getLogger(__name__)

MAX_GATE_ROUNDS = 4
LAYERS_PER_ROUND = 2


class AccuracyGateError(ConversionError):
    """The quantized model lost more accuracy than allowed and no float fallback could fix it."""

    def __init__(self, source: str, drop: float, limit: float, worst_layers: Sequence[dict], why: str) -> None:
        self.drop = drop
        self.limit = limit
        self.worst_layers = list(worst_layers)
        table = "\n".join(f"    {i + 1}. {layer['name']} ({layer['op']}): error {layer['error']:.4g}"
                          for i, layer in enumerate(self.worst_layers[:8]))
        super().__init__(
            source,
            f"int8 loses {drop:.2f} points, more than the allowed {limit:.2f} ({why}). "
            f"Layers that hurt most:\n{table}\nImprove the calibration data, retrain with quantization-aware "
            "training, or raise --max-accuracy-drop.",
        )


@dataclass(frozen=True)
class Preprocessing:
    """How frames become the model's input; recorded in the manifest and used for calibration too."""

    color_order: str = "RGB"
    resize: str = "stretch"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    layout: str | None = None  # NHWC / NCHW; inferred from the input shape when None
    pad_value: int = 0


@dataclass(frozen=True)
class PackageOptions:
    """Every packaging option, typed, with its default, in one place."""

    task: TaskSpec = field(default_factory=lambda: TaskSpec("classification"))
    labels: tuple[str, ...] = ()
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input_shape: tuple[int, ...] | None = None
    quantization: str | None = None
    max_accuracy_drop: float = 1.0
    calibration_samples: int = 300
    validation_fraction: float = 0.3
    name: str | None = None
    version: str = "1.0.0"
    threads: int = 1
    allow_unsigned: bool = False
    force: bool = False  # package even when the compatibility check finds problems
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # entry name -> file: carried in the bundle, pinned by hash and signed like the model (e.g. a signed
    # MCUboot firmware image under "firmware/", which an agent's install command flashes)
    extra_files: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PackageResult:
    path: Path
    manifest: Manifest
    report: dict
    compatibility: Any = None  # the CompatReport, for printing its table


def step(name: str):
    """Time a packaging step, log it uniformly and record it in ``ctx.steps``."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(ctx: "_Context", *args, **kwargs):
            ctx.progress(name)
            start = time.perf_counter()
            result = fn(ctx, *args, **kwargs)
            seconds = time.perf_counter() - start
            ctx.steps.append({"step": name, "seconds": round(seconds, 3)})
            log.info("%s: %.2f s", name, seconds)
            return result

        return run

    return wrap


@dataclass
class _Context:
    options: PackageOptions
    progress: Callable[[str], None]
    steps: list = field(default_factory=list)


def package(
    model: Any,
    profile: Any,
    calibration: Any = None,
    *,
    output: str | Path = ".",
    signing_key: Any = None,
    options: PackageOptions | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> PackageResult:
    """Convert, quantize, validate and package ``model`` for ``profile``; returns the bundle path and report.

    ``model``: a Keras model or a path (.keras/.h5/SavedModel dir/.onnx/.tflite).
    ``profile``: a :class:`~device_profiles.DeviceProfile`, an id or a TOML path.
    ``calibration``: images directory, ``.npy`` file or iterable (required for int8).
    ``signing_key``: a :class:`~edge_sdk.bundle.SigningKey` or a key file path;
    without one the bundle is unsigned, which needs ``allow_unsigned=True``.
    Other keyword arguments override fields of :class:`PackageOptions`
    (``task="detection"`` is accepted as a shorthand for ``TaskSpec("detection")``).
    """
    opts = options or PackageOptions()
    if isinstance(overrides.get("task"), str):
        overrides["task"] = TaskSpec(overrides["task"])
    if "labels" in overrides:
        overrides["labels"] = tuple(overrides["labels"])
    opts = replace(opts, **overrides)
    ctx = _Context(opts, progress or (lambda _name: None))
    device = _load_profile(profile)
    key = _signing_key(signing_key, opts)
    loaded = _load_source(ctx, model)
    recipe = recipe_for(device, opts.quantization)
    with tempfile.TemporaryDirectory(prefix="edge-sdk-package-") as work:
        source = _bridge(ctx, loaded, device.runtime.format, Path(work))
        spec = _input_spec(source, opts, bridged=source is not loaded)
        samples = _load_samples(ctx, calibration, spec, recipe)
        calib, held_out = samples.split(1.0 - opts.validation_fraction) if samples is not None else (None, None)
        backend = _backend(device)
        reference = _convert(ctx, backend, source, QuantRecipe(mode="float32"), None, "convert float reference")
        target, gate = _gate(ctx, backend, source, recipe, calib, held_out, reference, device, spec)
        compat = _compatibility(ctx, target, device)
        arena = _arena(ctx, target, device) if device.is_microcontroller and compat.compatible else None
        sizes = {"float_reference_bytes": len(reference.model), "model_bytes": len(target.model)}
        return _write(ctx, loaded, source, device, spec, target, gate, compat, held_out, key, Path(output), arena,
                      sizes)


def _load_profile(profile: Any):
    from device_profiles import DeviceProfile, load_profile

    return profile if isinstance(profile, DeviceProfile) else load_profile(profile)


def _signing_key(key: Any, opts: PackageOptions):
    """The key to sign with: the one given, else the default key from 'edge-sdk keys generate'."""
    from edge_sdk.bundle.signing import SigningKey, default_key_dir

    if key is None:
        default = default_key_dir() / "signing.key"
        if default.is_file():
            return SigningKey.from_file(default)
        if not opts.allow_unsigned:
            raise EdgeSDKError(f"no signing key given and none at {default}: run 'edge-sdk keys generate' "
                               "(or explicitly allow an unsigned development bundle)")
        return None
    return key if isinstance(key, SigningKey) else SigningKey.from_file(key)


@step("load model")
def _load_source(ctx: _Context, model: Any) -> SourceModel:
    from converters.loaders import load_source

    return load_source(model, ctx.options.input_shape)


@step("bridge formats")
def _bridge(ctx: _Context, source: SourceModel, target_format: str, work: Path) -> SourceModel:
    """The source made convertible to the profile's format (ONNX -> SavedModel through an isolated onnx2tf)."""
    from converters.bridges import bridge

    return bridge(source, target_format, work, progress=ctx.progress)


def _backend(profile):
    from converters.backends import backend_for

    return backend_for(profile.runtime.format)


def _input_spec(source: SourceModel, opts: PackageOptions, bridged: bool = False) -> InputSpec:
    if len(source.inputs) != 1:
        raise ConversionError(source.name, f"image models have one input; this one has {len(source.inputs)} "
                                           f"({', '.join(i.name for i in source.inputs)})")
    info = source.inputs[0]
    pre = opts.preprocessing
    given = None if bridged else pre.layout  # a bridged ONNX model is NHWC whatever the original was
    layout = given or ("NCHW" if len(info.shape) == 4 and info.shape[1] in (1, 3) and info.shape[3] not in (1, 3)
                            else "NHWC")
    channels = info.shape[1] if layout == "NCHW" else info.shape[-1]
    color = "GRAY" if channels == 1 else pre.color_order
    return InputSpec(info.name, tuple(info.shape), "float32", layout=layout, color_order=color, resize=pre.resize,
                     mean=pre.mean, std=pre.std, pad_value=pre.pad_value)


@step("read calibration data")
def _load_samples(ctx: _Context, calibration: Any, spec: InputSpec, recipe: QuantRecipe) -> Samples | None:
    if calibration is None:
        if recipe.mode == "int8":
            raise ConversionError(spec.name, "int8 quantization needs calibration data: pass --calibration DIR "
                                             "(a few hundred representative images) or a .npy file")
        return None
    samples = load_samples(calibration, spec, limit=ctx.options.calibration_samples)
    if len(samples) < 4:
        raise ConversionError(samples.source, f"only {len(samples)} calibration samples; give at least 4 "
                                              "(a few hundred is typical)")
    return samples


def _convert(ctx: _Context, backend, source, recipe, calib, label: str) -> Converted:
    @step(label)
    def run(_ctx):
        return backend.convert(source, recipe, calib)

    return run(ctx)


def _gate(ctx, backend, source, recipe, calib, held_out, reference, device, spec):
    """Convert the target and hold it to the accuracy gate, keeping the worst layers in float if needed."""
    target = _convert(ctx, backend, source, recipe, calib, f"convert {recipe.mode}")
    if recipe.mode == "float32" or held_out is None or len(held_out) == 0:
        report = _validate(ctx, reference, target, held_out, device, spec) if held_out else None
        return target, {"validation": report.to_dict() if report else None, "rounds": [], "passed": True}
    limit = ctx.options.max_accuracy_drop
    report = _validate(ctx, reference, target, held_out, device, spec)
    rounds = [{"keep_float": list(recipe.keep_float), "accuracy_drop": round(report.accuracy_drop, 4)}]
    worst: list[dict] = []
    while report.accuracy_drop > limit:
        if recipe.mode != "int8":
            break
        errors = _layer_errors(ctx, backend, source, recipe, calib)
        worst = [e.to_dict() for e in errors]
        if not float_fallback_allowed(device):
            raise AccuracyGateError(source.name, report.accuracy_drop, limit, worst,
                                    f"profile {device.id!r} runs integer ops only, so no layer can stay in float")
        fresh = [e.name for e in errors if e.name not in recipe.keep_float][:LAYERS_PER_ROUND]
        if not fresh or len(rounds) > MAX_GATE_ROUNDS:
            raise AccuracyGateError(source.name, report.accuracy_drop, limit, worst,
                                    f"still failing after keeping {len(recipe.keep_float)} layer(s) in float")
        recipe = replace(recipe, keep_float=recipe.keep_float + tuple(fresh))
        target = _convert(ctx, backend, source, recipe, calib, f"convert int8 keeping {len(recipe.keep_float)} in float")
        report = _validate(ctx, reference, target, held_out, device, spec)
        rounds.append({"keep_float": list(recipe.keep_float), "accuracy_drop": round(report.accuracy_drop, 4)})
    if report.quantized_is_slower:
        log.warning("%s: the %s model is slower than float on this host (%.3f ms vs %.3f ms)",
                    source.name, recipe.mode, report.quantized_latency_ms, report.float_latency_ms)
    return target, {"validation": report.to_dict(), "rounds": rounds, "passed": report.accuracy_drop <= limit,
                    "max_accuracy_drop": limit, "worst_layers": worst[:8]}


@step("validate float vs quantized")
def _validate(ctx, reference, target, held_out, device, spec) -> ValidationReport:
    from edge_sdk.vision.preprocess import PreprocessConfig

    size = PreprocessConfig.from_input_spec(spec).input_size
    return validate(reference, target, held_out, device.runtime.engine, ctx.options.task, ctx.options.labels,
                    size, ctx.options.threads)


@step("find the layers quantization hurts most")
def _layer_errors(ctx, backend, source, recipe, calib):
    return backend.layer_errors(source, recipe, calib)


@step("check compatibility and fit")
def _compatibility(ctx, target: Converted, device):
    from converters.compat import analyze

    report = analyze(target.model, target.format, device)
    if not report.compatible and not ctx.options.force:
        raise ConversionError(
            device.id, "the converted model does not fit this profile:\n  - " + "\n  - ".join(report.problems)
            + "\n(pass force=True / --force to package it anyway)")
    return report


@step("measure the TFLite Micro tensor arena")
def _arena(ctx, target: Converted, device) -> int | None:
    """The recommended arena (measured + board margin), recorded so the device runtime need not guess."""
    from firmware_tools.arena import measure_arena

    try:
        return measure_arena(target.model, device).recommended_bytes
    except EdgeSDKError as exc:  # the bundle stays usable; the runtime falls back to the 10x rule
        log.warning("could not measure the TFLite Micro arena: %s", exc)
        return None


@step("write signed bundle")
def _write(ctx, original, source, device, spec, target, gate, compat, held_out, key, output: Path,
           arena: int | None = None, sizes: dict | None = None) -> PackageResult:
    from edge_sdk.bundle.writer import utc_timestamp, write_bundle

    opts = ctx.options
    model_name = f"model.{target.format}"
    in_info = target.inputs[0]
    input_spec = replace(spec, name=in_info.name, dtype=in_info.dtype, shape=tuple(in_info.shape),
                         scale=in_info.scale, zero_point=in_info.zero_point if in_info.scale else None)
    outputs = tuple(OutputSpec(o.name, tuple(o.shape), o.dtype, o.scale, o.zero_point if o.scale else None)
                    for o in target.outputs)
    files: dict[str, Any] = {model_name: target.model}
    for name, source_file in opts.extra_files.items():
        if name in files or name.startswith("golden/") or name in ("labels.txt", "report.json"):
            raise ConversionError(original.name, f"extra file name {name!r} is taken by the bundle itself")
        files[name] = Path(source_file)
    task = opts.task
    if opts.labels:
        files["labels.txt"] = ("\n".join(opts.labels) + "\n").encode()
        task = replace(task, labels="labels.txt")
    golden = None
    if held_out is not None and len(held_out):
        golden_in, golden_out = _golden(target, device, held_out.tensors[0])
        files["golden/input.npy"] = _npy(golden_in)
        files.update({f"golden/output_{i}.npy": _npy(v) for i, v in enumerate(golden_out)})
        golden = GoldenSpec({in_info.name: "golden/input.npy"},
                            {o.name: f"golden/output_{i}.npy" for i, o in enumerate(target.outputs)},
                            atol=_golden_atol(target), rtol=1e-4)
    compat_dict = compat.to_dict() | ({"arena_bytes": arena} if arena else {})
    report = {"source": {"name": original.name, "kind": original.kind,
                         **({"converted_via": source.name} if source is not original else {})},
              "profile": device.id,
              "recipe": _recipe_dict(target.recipe), "gate": gate, "compatibility": compat_dict,
              "sizes": sizes or {},
              "steps": ctx.steps, "converter": dict(target.details)}
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
    manifest = Manifest(
        name=opts.name or _bundle_name(original.name),
        version=opts.version,
        created=utc_timestamp(),
        profile=device.id,
        engine=device.runtime.engine,
        format=target.format,
        model=model_name,
        inputs=(input_spec,),
        outputs=outputs,
        task=task,
        golden=golden,
        quantization=_recipe_dict(target.recipe) | {"details": dict(target.details)},
        accuracy=gate,
        compatibility={k: v for k, v in compat_dict.items() if k not in ("ops",)},
        metadata=dict(opts.metadata),
    )
    output.parent.mkdir(parents=True, exist_ok=True) if output.suffix == ".edgepkg" else output.mkdir(
        parents=True, exist_ok=True)
    path = write_bundle(manifest, files, output, key)
    return PackageResult(path, manifest, report, compat)


def _golden(target: Converted, device, tensor: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The exact input tensor the device feeds (quantized if the model takes integers) and the raw outputs."""
    runner = Runner(target, device.runtime.engine)
    try:
        fed, raw = runner.feed(tensor), runner.run_raw(tensor)
    finally:
        runner.close()
    return fed, raw


def _golden_atol(target: Converted) -> float:
    # Integer outputs may differ by one step between kernels (XNNPACK vs reference); float by rounding.
    return 1.0 if any(o.dtype in ("int8", "uint8") for o in target.outputs) else 1e-4


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _recipe_dict(recipe: QuantRecipe) -> dict:
    return {"mode": recipe.mode, "input_dtype": recipe.input_dtype, "output_dtype": recipe.output_dtype,
            "activation_type": recipe.activation_type, "weight_type": recipe.weight_type,
            "per_channel": recipe.per_channel, "symmetric_activations": recipe.symmetric_activations,
            "keep_float": list(recipe.keep_float)}


def _bundle_name(source_name: str) -> str:
    import re

    stem = Path(source_name).stem.lower() if source_name and not source_name.startswith("<") else "model"
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._") or "model"
