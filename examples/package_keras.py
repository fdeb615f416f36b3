"""Package a Keras model for a Raspberry Pi 4: int8 with calibration data and the accuracy gate.

Trains a small CNN on scikit-learn's handwritten digits (real data that ships in scikit-learn's wheel,
nothing is downloaded), then packages it twice with ``converters.package``: once float32 and once full-integer
int8 calibrated on labelled digits, so the report can put size and accuracy side by side. The int8 bundle is
then opened the way a device opens it (``edge_sdk.load``: signature, hashes, profile) and classifies digits it
has never seen.

Needs: pip install 'edge-deploy-sdk[host,litert]' (TensorFlow and scikit-learn to build, LiteRT to run).

    python examples/package_keras.py [--epochs 3] [--profile raspberry-pi-4] [--workdir DIR]
"""

from __future__ import annotations

import _common
from _common import heading, human_bytes, table


def main(args) -> int:
    from converters import package
    from converters.samples import DIGIT_LABELS, load_digits_split, train_digits_cnn

    work = args.workdir
    key, trusted = _common.development_keys(work)

    heading(f"training a small CNN on scikit-learn's digits ({args.epochs} epochs)")
    split = load_digits_split()
    model = train_digits_cnn(split, epochs=args.epochs)
    model.save(work / "digits.keras")
    print(f"   {len(split.train_labels)} training images; saved {work / 'digits.keras'}")

    # Calibration data: (image, label) pairs of digits the model was not trained on. The packager runs them
    # through the bundle's own preprocessing, calibrates int8 on 70% and measures float vs int8 on the other
    # 30%; the labels turn that measurement into accuracy rather than only agreement.
    calibration = list(zip(split.test_images[:args.samples], split.test_labels[:args.samples]))
    options = dict(signing_key=key, name="digits", version="1.0.0", labels=DIGIT_LABELS)

    heading(f"packaging for {args.profile}: float32, then int8 calibrated on {len(calibration)} labelled digits")
    float32 = package(model, args.profile, output=work / "bundles" / "float32", quantization="float32", **options)
    int8 = package(model, args.profile, calibration, output=work / "bundles" / "int8", max_accuracy_drop=1.0,
                   **options)

    report = int8.report
    validation = report["gate"]["validation"]
    model_bytes = {"float32": float32.report["compatibility"]["model_bytes"],
                   "int8": report["compatibility"]["model_bytes"]}
    table([(name, human_bytes(model_bytes[name]), human_bytes(result.path.stat().st_size), result.path)
           for name, result in (("float32", float32), ("int8", int8))], ("bundle", "model", "file", "path"))
    print(f"   int8 model is {model_bytes['int8'] / model_bytes['float32']:.2f}x the float32 model")
    print(f"   accuracy on {validation['samples']} held-out digits: float {validation['float_accuracy']:.1%}, "
          f"int8 {validation['quantized_accuracy']:.1%} (drop {validation['accuracy_drop_points']:.2f} points; "
          f"gate <= {report['gate']['max_accuracy_drop']:.1f}: {'passed' if report['gate']['passed'] else 'FAILED'})")
    print(f"   top-1 agreement {validation['top1_agreement']:.1%}; "
          + ", ".join(f"output cosine {o['cosine']:.5f}" for o in validation["outputs"]))
    print(f"   on this host: float {validation['float_latency_ms']:.3f} ms, int8 "
          f"{validation['quantized_latency_ms']:.3f} ms per inference"
          + (" (int8 is SLOWER here)" if validation["quantized_is_slower"] else ""))
    print("\n" + int8.compatibility.table())

    heading("loading the int8 bundle as a device does and classifying digits it has never seen")
    import edge_sdk

    unseen = range(args.samples, min(args.samples + args.digits, len(split.test_labels)))
    with edge_sdk.load(int8.path, trusted=trusted) as device_model:
        print(f"   {device_model!r}: verified and loaded, engine {device_model.engine.name} "
              f"({device_model.provider}); golden check {device_model.golden_check():.2g} of its tolerance")
        rows, correct = [], 0
        for i in unseen:
            top = device_model.predict(split.test_images[i]).top  # the 8x8 grey image, as a camera would give it
            correct += top.index == split.test_labels[i]
            rows.append((int(split.test_labels[i]), top.label, f"{top.score:.2f}"))
    table(rows, ("digit", "predicted", "score"))
    print(f"   {correct} of {len(rows)} correct")

    heading("done")
    print(f"   bundles:   {float32.path}\n              {int8.path}")
    print(f"   keys:      {key} (trusted by the 'device' in {trusted})")
    print(f"   the same from the shell:\n     edge-sdk package {work / 'digits.keras'} --profile {args.profile} "
          f"--calibration IMAGES_DIR --labels labels.txt --key {key} -o {work / 'bundles'}")
    return 0 if report["gate"]["passed"] and correct >= 0.8 * len(rows) else 1


if __name__ == "__main__":
    p = _common.parser("package_keras", __doc__)
    p.add_argument("--profile", default="raspberry-pi-4", help="device profile (default raspberry-pi-4)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3: a few seconds)")
    p.add_argument("--samples", type=int, default=300, help="labelled calibration digits (default 300)")
    p.add_argument("--digits", type=int, default=12, help="unseen digits to classify at the end (default 12)")
    _common.run(main, p.parse_args())
