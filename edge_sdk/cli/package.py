"""``edge-sdk package MODEL --profile P``: convert, quantize, validate and sign a bundle (needs the host extra)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from edge_sdk.cli._args import add_json, positive_int
from edge_sdk.cli._output import emit_json, human_bytes, step


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _extra(text: str) -> tuple[str, Path]:
    from edge_sdk.bundle.manifest import check_entry_name

    name, _, path = text.partition("=")
    problem = check_entry_name(name) if name else "no entry name"
    if problem or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE with a plain relative entry name, got {text!r}"
                                         + (f": {problem}" if problem else ""))
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return name, Path(path)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 1,224,224,3, got {text!r}") from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"every dimension must be >= 1, got {text!r}")
    return shape


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "package",
        help="convert and quantize a model for a device profile into a signed bundle",
        description="Loads a Keras (.keras/.h5), SavedModel, ONNX or TFLite model, converts it to what the profile "
        "runs (TFLite or ONNX; float32, fp16, dynamic-range or full-integer int8 as the profile prefers), calibrates "
        "int8 on your images through the runtime's own preprocessing, validates it against the float model, keeps "
        "the worst layers in float when int8 loses more than --max-accuracy-drop (where the profile allows float "
        "ops), checks operators and fit against the profile, and writes a signed .edgepkg. Needs "
        "pip install 'edge-deploy-sdk[host]'.",
    )
    p.add_argument("model", help="model file or SavedModel directory")
    p.add_argument("--profile", required=True, help="device profile id or TOML file")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="bundle file or directory (default: .)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="calibration/validation images (directory; class subfolders give labels) or a .npy file")
    p.add_argument("--samples", type=positive_int, default=300, help="calibration samples to use (default 300)")
    p.add_argument("--task", choices=("classification", "detection", "segmentation", "raw"), default="classification")
    p.add_argument("--decoder", default=None, help="output decoder: classification, ssd, yolov5, yolov8, segmentation")
    p.add_argument("--decoder-params", default="{}", metavar="JSON", help="decoder parameters as a JSON object")
    p.add_argument("--labels", type=Path, default=None, help="labels file, one per line")
    p.add_argument("--input-shape", type=_shape, default=None, help="pin dynamic input dimensions, e.g. 1,3,640,640")
    p.add_argument("--quantization", choices=("int8", "fp16", "dynamic", "float32"), default=None,
                   help="override the profile's preferred quantization (must be one it allows)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0, help="accuracy gate in points (default 1.0)")
    p.add_argument("--color-order", choices=("RGB", "BGR", "GRAY"), default="RGB")
    p.add_argument("--resize", choices=("stretch", "letterbox", "center_crop"), default="stretch")
    p.add_argument("--mean", type=_floats, default=(0.0,), help="per-channel mean on 0..255 pixels (default 0)")
    p.add_argument("--std", type=_floats, default=(255.0,), help="per-channel std on 0..255 pixels (default 255)")
    p.add_argument("--pad-value", type=int, default=0, help="letterbox padding grey level (YOLO: 114)")
    p.add_argument("--name", default=None, help="bundle name (default: from the model file)")
    p.add_argument("--version", default="1.0.0", help="semantic version (default 1.0.0)")
    p.add_argument("--key", type=Path, default=None, help="signing key (default: the one 'keys generate' wrote)")
    p.add_argument("--allow-unsigned", action="store_true", help="write an unsigned development bundle")
    p.add_argument("--force", action="store_true", help="package even when the compatibility check finds problems")
    p.add_argument("--extra", action="append", default=[], type=_extra, metavar="NAME=FILE",
                   help="carry FILE in the bundle as entry NAME, hashed and signed with the model (repeatable), "
                   "e.g. firmware/app.signed.bin=build/app.signed.bin")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from converters.packager import PackageOptions, Preprocessing, package
    from edge_sdk.bundle.manifest import TaskSpec
    from edge_sdk.errors import EdgeSDKError

    try:
        params = json.loads(args.decoder_params)
    except json.JSONDecodeError as exc:
        raise EdgeSDKError(f"--decoder-params is not valid JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise EdgeSDKError("--decoder-params must be a JSON object")
    labels: tuple[str, ...] = ()
    if args.labels is not None:
        try:
            labels = tuple(line.strip() for line in args.labels.read_text().splitlines() if line.strip())
        except OSError as exc:
            raise EdgeSDKError(f"{args.labels}: cannot read labels: {exc.strerror or exc}") from exc
    options = PackageOptions(
        task=TaskSpec(args.task, decoder=args.decoder, params=params),
        labels=labels,
        preprocessing=Preprocessing(color_order=args.color_order, resize=args.resize, mean=args.mean, std=args.std,
                                    pad_value=args.pad_value),
        input_shape=args.input_shape,
        quantization=args.quantization,
        max_accuracy_drop=args.max_accuracy_drop,
        calibration_samples=args.samples,
        name=args.name,
        version=args.version,
        allow_unsigned=args.allow_unsigned,
        force=args.force,
        extra_files=dict(args.extra),
    )
    progress = (lambda name: None) if args.json else (lambda name: step(name))
    # TensorFlow and Keras print to stdout while converting; keep stdout for our report / JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = package(args.model, args.profile, args.calibration, output=args.output, signing_key=args.key,
                         options=options, progress=progress)
    if args.json:
        emit_json({"bundle": str(result.path), "report": result.report})
        return 0
    print_report(result)
    return 0


def print_report(result) -> None:
    r = result.report
    recipe = r["recipe"]
    print(f"\nbundle: {result.path} ({human_bytes(result.path.stat().st_size)})")
    print(f"model:  {r['source']['name']} ({r['source']['kind']}) -> {result.manifest.format} {recipe['mode']} "
          f"for {r['profile']}, I/O {recipe['input_dtype']}/{recipe['output_dtype']}"
          + (f", activations {recipe['activation_type']}" if result.manifest.format == "onnx" else ""))
    gate = r["gate"]
    validation = gate.get("validation")
    if validation:
        line = f"accuracy: {validation['measure']} = {validation['accuracy_drop_points']:.2f} points"
        if "float_accuracy" in validation:
            line += (f" (float {100 * validation['float_accuracy']:.2f}%, "
                     f"{recipe['mode']} {100 * validation['quantized_accuracy']:.2f}%)")
        if "top1_agreement" in validation:
            line += f", top-1 agreement {100 * validation['top1_agreement']:.2f}%"
        print(line + f" on {validation['samples']} held-out samples; gate {'passed' if gate['passed'] else 'FAILED'}"
              + (f" (limit {gate['max_accuracy_drop']})" if "max_accuracy_drop" in gate else ""))
        cosines = ", ".join(f"{o['name']} cos {o['cosine']:.4f}" for o in validation["outputs"])
        print(f"outputs:  {cosines}")
        if recipe["keep_float"]:
            print(f"float fallback: kept {len(recipe['keep_float'])} layer(s) in float: {', '.join(recipe['keep_float'])}")
        speed = validation.get("speedup")
        if speed:
            verdict = "SLOWER than float on this host" if validation["quantized_is_slower"] else "faster than float"
            print(f"speed:    float {validation['float_latency_ms']:.3f} ms, {recipe['mode']} "
                  f"{validation['quantized_latency_ms']:.3f} ms ({speed:.2f}x: {verdict})")
    else:
        print("accuracy: not validated (no calibration/validation data given)")
    if result.compatibility is not None:
        print(result.compatibility.table())
    print("steps:    " + ", ".join(f"{s['step']} {s['seconds']:.1f}s" for s in r["steps"]), file=sys.stderr)
