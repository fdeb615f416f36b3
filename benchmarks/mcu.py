"""The microcontroller path, measured: tensor arena vs the 10x rule and the boards' RAM, TFLM vs LiteRT, export time.

Two models, each packaged int8 for ``esp32-s3`` with ``converters.package`` (as
``edge-sdk package`` would) and exported for every MCU profile with
``firmware_tools.export`` (as ``edge-sdk firmware export`` would):

* the digits CNN trained on scikit-learn's real handwriting, validated on the
  held-out digits;
* MobileNetV2 (alpha 0.35, 96x96x3, 10 classes: the size class of TFLite Micro's
  person-detection model; Keras architecture with seeded random weights, since
  nothing can be downloaded here, so agreement is over real scikit-image photos
  but accuracy means nothing; logits out, see ``_mobilenet``), calibrated and
  validated on those photos.

Printed per model: the measured arena (bisected in the real tflite-micro
interpreter) and the recommended one (+ board margin) against the 10x-model
rule (the ratio), against each profile's internal RAM, and whether the model
fits each board; TFLite Micro vs LiteRT's reference kernels and LiteRT's
optimized/XNNPACK kernels (top-1 agreement, max LSB difference) over the golden
input, validation images and 32 random inputs; the export time per profile
(median of ``--repeats`` full exports, arena bisection included).

    python benchmarks/mcu.py [--repeats 3] [--models digits,mobilenet] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROFILES = ("esp32-s3", "stm32h747-disco", "arduino-nano-33-ble")


def _digits():
    from converters.samples import DIGIT_LABELS, load_digits_split, train_digits_cnn

    split = load_digits_split()
    return (train_digits_cnn(split), split.test_images[:200], split.test_images[200:400],
            dict(labels=DIGIT_LABELS, std=(255.0,)))


def _mobilenet():
    import tensorflow as tf

    from benchmarks.quantization import _photos

    tf.keras.utils.set_random_seed(0)
    # Logits out (no SOFTMAX): with these random weights TFLite Micro's int8 SOFTMAX aborts (SIGABRT, no message)
    # in the tflite-micro interpreter at any arena size; the top-1 class is the same either way.
    model = tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), classes=10, weights=None,
                                              classifier_activation=None)
    photos = np.stack(_photos(96, 128))
    # Random weights: int8 agreement with float means nothing for accuracy, so the gate is opened.
    return model, photos[:64], photos[64:], dict(labels=tuple(str(i) for i in range(10)), mean=(127.5,),
                                                 std=(127.5,), max_accuracy_drop=100.0)


MODELS = {"digits": ("digits CNN", _digits), "mobilenet": ("MobileNetV2-0.35 96x96", _mobilenet)}


def _package(model, calibration: np.ndarray, options: dict, work: Path, key) -> Path:
    from converters import package
    from converters.packager import PackageOptions, Preprocessing

    np.save(work / "calib.npy", calibration)
    opts = PackageOptions(labels=options["labels"], max_accuracy_drop=options.get("max_accuracy_drop", 1.0),
                          preprocessing=Preprocessing(mean=options.get("mean", (0.0,)), std=options["std"]),
                          calibration_samples=len(calibration), input_shape=(1, *model.input_shape[1:]))
    with contextlib.redirect_stdout(sys.stderr):
        return package(model, "esp32-s3", work / "calib.npy", output=work, signing_key=key, options=opts).path


def _measure(name: str, build, repeats: int) -> dict:
    from edge_sdk.bundle import SigningKey, TrustStore, generate_keypair
    from firmware_tools.export import export

    with tempfile.TemporaryDirectory(prefix="edge-sdk-mcu-bench-") as tmp:
        work = Path(tmp)
        pair = generate_keypair(work / "keys")
        TrustStore.from_dir(work / "trusted").add_file(pair.public_path, work / "trusted")
        model, calibration, validation, options = build()
        bundle = _package(model, calibration, options, work, SigningKey.from_file(pair.private_path))
        entry: dict = {"model": name, "profiles": {}}
        for profile in PROFILES:
            seconds, result = [], None
            for run in range(repeats):
                start = time.perf_counter()
                result = export(bundle, work / f"{profile}-{run}", profile=profile, trusted=work / "trusted",
                                force=True, validation_images=validation)
                seconds.append(time.perf_counter() - start)
            from device_profiles import load_profile

            ram = load_profile(profile).memory.ram_bytes
            entry["model_bytes"] = result.arena.model_bytes
            entry["profiles"][profile] = {
                "arena": result.arena.to_dict(), "ram_bytes": ram,
                "arena_fraction_of_ram": round(result.arena.recommended_bytes / ram, 4),
                "fits": result.fit.compatible, "failed_checks": [f.name for f in result.fit.fits if not f.ok],
                "verification": result.verification.to_dict(),
                "export_seconds_median": round(statistics.median(seconds), 3),
                "export_seconds": [round(s, 3) for s in seconds],
            }
        return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="exports per model and profile (default 3)")
    parser.add_argument("--models", default="digits,mobilenet", help="comma-separated: digits, mobilenet")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {which: _measure(*MODELS[which], args.repeats) for which in args.models.split(",")}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for e in figures.values():
        first = e["profiles"][PROFILES[0]]
        a = first["arena"]
        print(f"{e['model']} ({e['model_bytes'] / 1024:.1f} KiB int8): arena measured {a['measured_bytes']} B "
              f"in {a['probes']} interpreter runs, TFLM's recording allocator {a['recorded_bytes']} B; "
              f"10x rule {a['naive_bytes']} B")
        for profile, p in e["profiles"].items():
            a = p["arena"]
            fit = "fits" if p["fits"] else f"does NOT fit ({', '.join(p['failed_checks'])})"
            print(f"  {profile:20s} recommended {a['recommended_bytes']:7d} B (margin {a['margin_bytes']:5d} B)  "
                  f"10x rule / recommended {a['naive_ratio']:6.1f}x  {100 * p['arena_fraction_of_ram']:5.1f}% of "
                  f"{p['ram_bytes'] // 1024} KiB RAM  {fit}  export {p['export_seconds_median']:.2f} s "
                  f"(median of {len(p['export_seconds'])})")
        v = first["verification"]
        for key in ("reference", "optimized"):
            r = v[key]
            print(f"  TFLM vs {r['against']:26s} on {v['samples']} inputs ({v['golden']} golden, {v['validation']} "
                  f"validation, {v['random']} random): top-1 {100 * r['top1_agreement']:.1f}%, max {r['max_lsb']} LSB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
