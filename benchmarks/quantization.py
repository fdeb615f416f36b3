"""int8 vs float, measured in one run: size, latency (LiteRT and ONNX Runtime, 1 and 2 threads), agreement, cost.

Two models:

* MobileNetV2 224x224 (Keras architecture, random weights: nothing can be
  downloaded here; size and latency do not depend on the weights), calibrated
  on real scikit-image photos;
* the digits CNN trained on scikit-learn's real handwriting (agreement and
  accuracy mean something there).

For each, the converters produce float32 and int8 TFLite (through
``converters.backends.tflite``) and float32 and int8 QDQ ONNX with the x86
recipe (U8S8, per-channel; through ``converters.backends.onnx``), exactly as
``edge-sdk package`` would. Then, interleaved over repeats, each model's
median latency on the bare engine at 1 and 2 threads. Printed: size ratio
int8/float (goal <= 0.30), latency ratio int8/float per engine and thread
count (goal <= 0.65 on MobileNetV2), top-1 agreement int8 vs float (goal >=
99%), conversion time and peak memory of each conversion (each runs in its
own process so its peak RSS is its own).

    python benchmarks/quantization.py [--repeats 30] [--calibration 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _photos(count: int, size: int) -> list[np.ndarray]:
    import cv2
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
             "retina", "colorwheel", "cat", "logo"]
    frames = []
    rng = np.random.default_rng(0)
    while len(frames) < count:
        for name in names:
            if len(frames) >= count:
                break
            try:
                image = getattr(data, name)()
            except Exception:  # some photos need optional downloads in other scikit-image versions
                continue
            if image.ndim == 2:
                image = np.stack([image] * 3, -1)
            image = image[..., :3]
            h, w = image.shape[:2]
            y, x = rng.integers(0, max(1, h // 4)), rng.integers(0, max(1, w // 4))
            crop = image[y:y + 3 * h // 4, x:x + 3 * w // 4]
            frames.append(cv2.cvtColor(cv2.resize(crop, (size, size)), cv2.COLOR_RGB2BGR))
    return frames


def _model_and_data(which: str, calibration: int):
    from converters.calibration import Samples
    from converters.loaders import load_source
    from converters.samples import load_digits_split, train_digits_cnn
    from edge_sdk.bundle.manifest import InputSpec
    from edge_sdk.vision.preprocess import PreprocessConfig, preprocess

    if which == "mobilenet_v2":
        import tensorflow as tf

        keras_model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        spec = InputSpec("input", (1, 224, 224, 3), "float32", mean=(127.5,), std=(127.5,))
        config = PreprocessConfig.from_input_spec(spec)
        images = _photos(calibration * 2, 256)
        tensors = tuple(preprocess(img, config)[0] for img in images)
        return load_source(keras_model, (1, 224, 224, 3)), Samples(tensors[:calibration]), Samples(tensors[calibration:])
    split = load_digits_split()
    keras_model = train_digits_cnn(split)
    x = split.test_images.astype(np.float32) / 255.0
    tensors = tuple(x[i:i + 1] for i in range(len(x)))
    return (load_source(keras_model), Samples(tensors[:calibration]),
            Samples(tensors[calibration:], tuple(int(v) for v in split.test_labels[calibration:])))


def _convert_job(which, fmt, mode, calibration, queue):
    """Runs in a child process: convert once, report bytes, seconds and the child's own peak RSS."""
    from converters.backends import backend_for
    from converters.base import QuantRecipe

    source, calib, held_out = _model_and_data(which, calibration)
    recipe = QuantRecipe(mode=mode, activation_type="uint8" if fmt == "onnx" else "int8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    converted = backend_for(fmt).convert(source, recipe, calib if mode == "int8" else None)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"model": converted.model, "seconds": seconds, "peak_mib": peak / 1024, "before_mib": before / 1024,
               "held_out": [t for t in held_out.tensors[:64]], "labels": list(held_out.labels or [])[:64]})


def _convert(which, fmt, mode, calibration):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_convert_job, args=(which, fmt, mode, calibration, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result


def _runner(fmt: str, model: bytes, threads: int):
    from converters.base import Converted, QuantRecipe
    from converters.validate import Runner

    engine = {"tflite": "litert", "onnx": "onnxruntime"}[fmt]
    return Runner(Converted(model, fmt, (), (), QuantRecipe("float32")), engine, threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per model and thread count (default 30)")
    parser.add_argument("--calibration", type=int, default=64, help="calibration samples (default 64)")
    parser.add_argument("--models", default="mobilenet_v2,digits", help="comma-separated: mobilenet_v2, digits")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    figures: dict = {}
    for which in args.models.split(","):
        conv = {(fmt, mode): _convert(which, fmt, mode, args.calibration)
                for fmt in ("tflite", "onnx") for mode in ("float32", "int8")}
        held_out = conv[("tflite", "float32")]["held_out"]
        labels = conv[("tflite", "float32")]["labels"]
        entry: dict = {"conversion": {f"{fmt}-{mode}": {"seconds": round(c["seconds"], 2),
                                                         "peak_rss_mib": round(c["peak_mib"], 1)}
                                      for (fmt, mode), c in conv.items()}}
        for fmt in ("tflite", "onnx"):
            f_bytes, q_bytes = conv[(fmt, "float32")]["model"], conv[(fmt, "int8")]["model"]
            entry[f"{fmt}_size_ratio"] = round(len(q_bytes) / len(f_bytes), 4)
            entry[f"{fmt}_bytes"] = {"float32": len(f_bytes), "int8": len(q_bytes)}
            for threads in (1, 2):
                runners = {"float32": _runner(fmt, f_bytes, threads), "int8": _runner(fmt, q_bytes, threads)}
                tensor = held_out[0]
                for r in runners.values():
                    for _ in range(3):
                        r(tensor)
                times = {k: [] for k in runners}
                for _ in range(args.repeats):  # interleaved
                    for k, r in runners.items():
                        start = time.perf_counter()
                        r(tensor)
                        times[k].append((time.perf_counter() - start) * 1e3)
                med = {k: statistics.median(v) for k, v in times.items()}
                entry[f"{fmt}_{threads}t_ms"] = {k: round(v, 3) for k, v in med.items()}
                entry[f"{fmt}_{threads}t_latency_ratio"] = round(med["int8"] / med["float32"], 3)
                if threads == 1:
                    f_top = [int(np.argmax(runners["float32"](t)[0])) for t in held_out]
                    q_top = [int(np.argmax(runners["int8"](t)[0])) for t in held_out]
                    entry[f"{fmt}_top1_agreement"] = round(float(np.mean(np.equal(f_top, q_top))), 4)
                    if labels:
                        entry[f"{fmt}_accuracy"] = {
                            "float32": round(float(np.mean(np.equal(f_top, labels))), 4),
                            "int8": round(float(np.mean(np.equal(q_top, labels))), 4)}
                for r in runners.values():
                    r.close()
        figures[which] = entry

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for which, e in figures.items():
        print(f"{which}: int8 vs float32, median of {args.repeats} interleaved runs")
        for fmt in ("tflite", "onnx"):
            b = e[f"{fmt}_bytes"]
            print(f"  {fmt:6s} size  {b['float32'] / 1e6:7.2f} MB -> {b['int8'] / 1e6:7.2f} MB   ratio "
                  f"{e[f'{fmt}_size_ratio']:.3f}  (goal <= 0.30)")
            for threads in (1, 2):
                ms = e[f"{fmt}_{threads}t_ms"]
                print(f"  {fmt:6s} {threads} thread(s)  float {ms['float32']:8.3f} ms  int8 {ms['int8']:8.3f} ms  "
                      f"ratio {e[f'{fmt}_{threads}t_latency_ratio']:.3f}  (goal <= 0.65 on MobileNetV2)")
            agree = e[f"{fmt}_top1_agreement"]
            line = f"  {fmt:6s} top-1 agreement int8 vs float {100 * agree:.1f}%  (goal >= 99%)"
            if f"{fmt}_accuracy" in e:
                acc = e[f"{fmt}_accuracy"]
                line += f"; accuracy float {100 * acc['float32']:.1f}% int8 {100 * acc['int8']:.1f}%"
            print(line)
        for name, c in e["conversion"].items():
            print(f"  conversion {name:15s} {c['seconds']:6.2f} s  peak RSS {c['peak_rss_mib']:7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
