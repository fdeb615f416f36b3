"""Package an ONNX model with a folder of calibration images, int8 for an ONNX Runtime device.

An ONNX file is what most training frameworks export (torch.onnx.export, tf2onnx, skl2onnx). Here it is a
digit classifier trained on scikit-learn's handwritten digits and written as ONNX, and the calibration data
is what a user has: a folder of images, one subfolder per class (the folder names give the labels that turn
the float vs int8 comparison into accuracy). ``converters.package`` quantizes the graph to int8 QDQ with
ONNX Runtime's static quantizer (U8S8 for x86 CPUs, symmetric S8S8 for TensorRT on a Jetson), validates it
against the float model on the 30% of images it held out, and writes a signed bundle.

Needs: pip install 'edge-deploy-sdk[host]' (onnx, onnxruntime, scikit-learn).

    python examples/package_onnx.py [--profile generic-x86|jetson-orin-nano] [--workdir DIR]
"""

from __future__ import annotations

import _common
from _common import heading, human_bytes


def main(args) -> int:
    from converters import package
    from converters.samples import DIGIT_LABELS, load_digits_split, softmax_to_onnx, train_softmax

    work = args.workdir
    key, trusted = _common.development_keys(work)

    heading("an ONNX model and a folder of calibration images")
    split = load_digits_split()
    onnx_path = softmax_to_onnx(train_softmax(split), work / "digits.onnx")
    n = args.images
    images = _common.write_images(work / "calibration", split.test_images[:n], split.test_labels[:n], size=32)
    print(f"   model:  {onnx_path} ({human_bytes(onnx_path.stat().st_size)}), input (1, 8, 8, 1) grey pixels")
    print(f"   images: {images}/<digit>/NNNN.png, {n} real handwritten digits as 32x32 PNG files")

    heading(f"packaging int8 for {args.profile}")
    result = package(onnx_path, args.profile, images, output=work / "bundles", signing_key=key, name="digits",
                     version="1.0.0", labels=DIGIT_LABELS, quantization="int8", max_accuracy_drop=1.0)
    report, recipe = result.report, result.report["recipe"]
    validation = report["gate"]["validation"]
    print(f"   bundle: {result.path} ({human_bytes(result.path.stat().st_size)})")
    print(f"   recipe: {recipe['mode']} QDQ, activations {recipe['activation_type']}, weights "
          f"{recipe['weight_type']} per-channel={recipe['per_channel']}, I/O {recipe['input_dtype']}")
    print(f"   accuracy on {validation['samples']} held-out images: float {validation['float_accuracy']:.1%}, "
          f"int8 {validation['quantized_accuracy']:.1%} (drop {validation['accuracy_drop_points']:.2f} points, "
          f"gate {'passed' if report['gate']['passed'] else 'FAILED'}); top-1 agreement "
          f"{validation['top1_agreement']:.1%}")
    slower = " (int8 is SLOWER on a model this small: quantize/dequantize dominates)"
    print(f"   on this host: float {validation['float_latency_ms']:.3f} ms, "
          f"int8 {validation['quantized_latency_ms']:.3f} ms" + (slower if validation["quantized_is_slower"] else ""))
    print("\n" + result.compatibility.table())

    heading("loading the bundle as the device does, on the test digits the calibration did not use")
    import edge_sdk

    # A Jetson profile prefers TensorRT then CUDA; on a machine without them, allow ONNX Runtime's CPU provider.
    with edge_sdk.load(result.path, trusted=trusted, allow_cpu_fallback=True) as model:
        rest = range(n, len(split.test_labels))
        correct = sum(model.predict(split.test_images[i]).top.index == split.test_labels[i] for i in rest)
        print(f"   {model!r}: {correct}/{len(rest)} correct ({correct / len(rest):.1%})")

    heading("done")
    print(f"   bundle: {result.path}\n   the same from the shell:\n     edge-sdk package {onnx_path} "
          f"--profile {args.profile} --calibration {images} --quantization int8 --labels labels.txt --key {key} "
          f"-o {work / 'bundles'}")
    return 0 if report["gate"]["passed"] and correct >= 0.85 * len(rest) else 1


if __name__ == "__main__":
    p = _common.parser("package_onnx", __doc__)
    p.add_argument("--profile", default="generic-x86", choices=("generic-x86", "jetson-orin-nano", "jetson-nano"),
                   help="a profile whose runtime is ONNX Runtime (default generic-x86)")
    p.add_argument("--images", type=int, default=300, help="calibration images to write (default 300)")
    _common.run(main, p.parse_args())
