"""``edge-sdk bench BUNDLE``: latency percentiles, throughput, per-stage split, peak memory, vs the bare engine."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edge_sdk.cli._args import add_json, add_model_options, load_model, positive_int
from edge_sdk.cli._output import emit_json, table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure a bundle's latency and throughput on this machine",
        description="Loads the bundle as a device would, warms it up, then times N end-to-end predictions "
        "(preprocess, inference, postprocess) on a real image and reports percentiles. With --vs-bare the same "
        "model runs on the bare engine API with the same threads and input, interleaved, for a ratio.",
    )
    add_model_options(p)
    p.add_argument("--runs", type=positive_int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=positive_int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--image", type=Path, default=None, help="image to run on (default: a photo from scikit-image, "
                   "or a fixed noise frame when scikit-image is absent)")
    p.add_argument("--vs-bare", action="store_true", help="also time the bare engine on the same model and input")
    p.add_argument("--histogram", type=Path, default=None, metavar="PNG", help="write a latency histogram image")
    add_json(p)
    p.set_defaults(func=run)


def _frame(path: Path | None) -> np.ndarray:
    import cv2

    from edge_sdk.errors import EdgeSDKError

    if path is not None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EdgeSDKError(f"{path}: cannot read image")
        return image
    try:
        from skimage import data

        return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def percentiles(values_ms: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(values_ms), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(values_ms)),
            "min": float(np.min(values_ms))}


def run(args: argparse.Namespace) -> int:
    from edge_sdk.cli._output import step
    from edge_sdk.runtime.bare import bare_runner

    t0 = time.perf_counter()
    model = load_model(args)
    load_ms = (time.perf_counter() - t0) * 1e3
    with model:
        vision = model.manifest.task.kind != "raw" and len(model.manifest.inputs) == 1
        frame = _frame(args.image) if vision else None
        tensor = model.prepare(frame)[0] if vision else None
        bare = None
        if args.vs_bare and vision:
            threads = args.threads or model.profile.runtime.num_threads
            bare, _close = bare_runner(model.manifest.engine, model.bundle.read(model.manifest.model), threads,
                                       model.manifest.compatibility.get("arena_bytes"))
        if not args.json:
            step(f"warming up {model!r} ({args.warmup} runs), then {args.runs} timed runs")
        for _ in range(args.warmup):
            _once(model, frame)
            if bare is not None:
                bare(tensor)
        total, stages, bare_ms = [], {"preprocess": [], "inference": [], "postprocess": []}, []
        started = time.perf_counter()
        for i in range(args.runs):
            t = time.perf_counter()
            _once(model, frame)
            total.append((time.perf_counter() - t) * 1e3)
            if vision:
                stages["preprocess"].append(model.last_times.preprocess_ms)
                stages["inference"].append(model.last_times.inference_ms)
                stages["postprocess"].append(model.last_times.postprocess_ms)
            if bare is not None:  # interleaved, so machine noise hits both alike
                t = time.perf_counter()
                bare(tensor)
                bare_ms.append((time.perf_counter() - t) * 1e3)
            if not args.json and (i + 1) % max(1, args.runs // 10) == 0:
                print(f"\r  {i + 1}/{args.runs} runs", end="", file=sys.stderr, flush=True)
        if not args.json:
            print(file=sys.stderr)
        ours_elapsed = sum(total) / 1e3
        report = {
            "bundle": str(args.bundle),
            "model": f"{model.name} {model.version}",
            "engine": model.engine.name,
            "provider": model.provider,
            "threads": args.threads or model.profile.runtime.num_threads,
            "runs": args.runs,
            "load_ms": round(load_ms, 2),
            "latency_ms": percentiles(total),
            "throughput_fps": args.runs / ours_elapsed,
            "stages_ms_p50": {k: float(np.median(v)) for k, v in stages.items() if v},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "wall_s": time.perf_counter() - started,
        }
        if bare_ms:
            report["bare_latency_ms"] = percentiles(bare_ms)
            report["inference_over_bare_p50"] = report["stages_ms_p50"]["inference"] / report["bare_latency_ms"]["p50"]
            report["end_to_end_over_bare_p50"] = report["latency_ms"]["p50"] / report["bare_latency_ms"]["p50"]
        if args.histogram:
            write_histogram(args.histogram, total, bare_ms)
            report["histogram"] = str(args.histogram)
    if args.json:
        emit_json(report)
        return 0
    _print_report(report)
    return 0


def _once(model, frame) -> None:
    if frame is not None:
        model.predict(frame)
    else:
        model.warmup(1)


def _print_report(r: dict) -> None:
    lat = r["latency_ms"]
    print(f"{r['model']} on {r['engine']}/{r['provider']}, {r['threads']} thread(s), {r['runs']} runs "
          f"(load {r['load_ms']:.0f} ms, peak RSS {r['peak_rss_mib']:.0f} MiB)")
    rows = [("end to end", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{r['throughput_fps']:.1f}")]
    if "bare_latency_ms" in r:
        b = r["bare_latency_ms"]
        rows.append(("bare engine", f"{b['p50']:.2f}", f"{b['p90']:.2f}", f"{b['p99']:.2f}", f"{1000 / b['mean']:.1f}"))
    table(rows, ("", "p50 ms", "p90 ms", "p99 ms", "fps"))
    if r["stages_ms_p50"]:
        print("stages (p50 ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms_p50"].items()))
    if "inference_over_bare_p50" in r:
        print(f"inference / bare engine: {r['inference_over_bare_p50']:.3f}x; "
              f"end to end / bare engine: {r['end_to_end_over_bare_p50']:.3f}x")


def write_histogram(path: Path, ours_ms: list[float], bare_ms: list[float]) -> None:
    """A latency histogram as a PNG, drawn with OpenCV (no plotting library needed on a device)."""
    import cv2

    width, height, margin = 640, 360, 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    values = np.asarray(ours_ms + bare_ms)
    lo, hi = float(values.min()), float(np.percentile(values, 99))  # the slowest 1% go into the last bin
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    series = [(ours_ms, (200, 120, 30), "edge-sdk")] + ([(bare_ms, (40, 160, 40), "bare engine")] if bare_ms else [])
    counts = [np.histogram(np.clip(v, bins[0], bins[-1]), bins)[0] for v, _, _ in series]
    top = max(int(c.max()) for c in counts) or 1
    bar_w = (width - 2 * margin) / (len(bins) - 1)
    for k, ((_, color, label), c) in enumerate(zip(series, counts)):
        for i, n in enumerate(c):
            x0 = int(margin + i * bar_w + k * bar_w / len(series))
            x1 = int(x0 + bar_w / len(series)) - 1
            y0 = int(height - margin - (height - 2 * margin) * n / top)
            cv2.rectangle(canvas, (x0, y0), (max(x0, x1), height - margin), color, -1)
        cv2.putText(canvas, label, (width - 160, margin + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
    cv2.line(canvas, (margin, height - margin), (width - margin, height - margin), (0, 0, 0), 1)
    cv2.putText(canvas, f"{lo:.2f} ms", (margin, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(canvas, f">= {hi:.2f} ms", (width - margin - 95, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1)
    cv2.putText(canvas, "latency histogram", (margin, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
