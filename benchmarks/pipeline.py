"""Pipeline throughput next to the bare engine, on the same model, thread count and frames.

Builds (or finds cached) a float MobileNetV2 224x224 bundle (benchmarks/_models.py),
writes --frames 640x480 JPEG frames cut from scikit-image photos into a temp
directory and the same frames into an MJPG .avi, then in one run, interleaved
and repeated, times over every frame:

  bare       the bare LiteRT interpreter (edge_sdk.runtime.bare.bare_runner)
             invoking on one pre-prepared tensor in a tight loop: no decode,
             no preprocessing, no post-processing. The denominator of every ratio.
  naive      a hand-written single-thread loop as people write it today:
             cv2.imread, cv2.resize, cvtColor, normalise, set_tensor/invoke, argmax
  images     edge_sdk Pipeline over open_source(<JPEG directory>) (decode and
             preprocess on the capture thread), results dropped in on_result
  arrays     edge_sdk Pipeline over frames already decoded in memory (ArraySource)
  video      edge_sdk Pipeline over open_source(<the .avi>)

and prints median frames per second and the ratios to bare. Goals: images
>= 0.90x bare, arrays >= 0.97x bare. Every case runs once untimed first;
the order of the cases rotates between repeats.

    python benchmarks/pipeline.py [--frames 200] [--repeats 3] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _models import mobilenet_v2_bundle  # noqa: E402

import edge_sdk  # noqa: E402
from edge_sdk.runtime.bare import bare_runner  # noqa: E402
from edge_sdk.vision.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_sdk.vision.sources import ArraySource, open_source  # noqa: E402

WIDTH, HEIGHT = 640, 480
GOALS = {"images": 0.90, "arrays": 0.97}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "camera", "grass", "brick", "coins")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_figures(args) -> dict:
    """What every MobileNetV2 pipeline benchmark reports about its run (--json)."""
    return {
        "model": "mobilenet_v2 224x224 float32 (random weights)",
        "engine": "litert",
        "threads": args.threads,
        "cores": usable_cores(),
        "cpu": cpu_model(),
        "frames": args.frames,
        "repeats": args.repeats,
    }


def make_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` varied 640x480 BGR frames: random zoom, crop, flip and gain over scikit-image photos."""
    import cv2
    from skimage import data

    photos = []
    for name in PHOTOS:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        else:
            image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2BGR)
        photos.append(image)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        zoom = max(WIDTH / w, HEIGHT / h) * rng.uniform(1.0, 1.5)  # cover the frame, then zoom in a little
        scaled = cv2.resize(photo, (max(WIDTH, round(w * zoom)), max(HEIGHT, round(h * zoom))),
                            interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        top = int(rng.integers(0, scaled.shape[0] - HEIGHT + 1))
        left = int(rng.integers(0, scaled.shape[1] - WIDTH + 1))
        frame = scaled[top : top + HEIGHT, left : left + WIDTH]
        if rng.random() < 0.5:
            frame = frame[:, ::-1]
        frame = cv2.convertScaleAbs(frame, alpha=rng.uniform(0.7, 1.3), beta=rng.uniform(-20, 20))
        frames.append(np.ascontiguousarray(frame))
    return frames


def write_media(frames: list[np.ndarray], work: Path) -> tuple[Path, Path]:
    """The frames as numbered JPEGs in ``work/frames`` and as an MJPG ``work/frames.avi``."""
    import cv2

    directory = work / "frames"
    directory.mkdir()
    for i, frame in enumerate(frames):
        if not cv2.imwrite(str(directory / f"{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise RuntimeError(f"cannot write {directory / f'{i:05d}.jpg'}")
    video = work / "frames.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG .avi files here")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return directory, video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames per timed run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each case (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="engine threads, bare and edge-sdk alike (default 2)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the converted model is cached "
                        "(default ~/.cache/edge-sdk-bench)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import cv2

    work = Path(tempfile.mkdtemp(prefix="edge-bench-pipeline-"))
    try:
        bench = mobilenet_v2_bundle(work, args.cache_dir)
        frames = make_frames(args.frames)
        directory, video = write_media(frames, work)
        files = sorted(directory.iterdir())
        model = edge_sdk.load(bench.bundle, trusted=bench.trusted, num_threads=args.threads)
        bare, close_bare = bare_runner("litert", bench.tflite.read_bytes(), args.threads)
        tensor, _ = model.prepare(frames[0])
        inference_ms: dict[str, list[float]] = {}

        def bare_case() -> None:
            for _ in frames:
                bare(tensor)

        def naive_case() -> None:  # what a hand-written loop looks like; same interpreter API as bare
            for path in files:
                image = cv2.imread(str(path))
                image = cv2.resize(image, (224, 224))
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                x = (image.astype(np.float32) - 127.5) / 127.5
                (scores,) = bare(x[None])
                int(np.argmax(scores))

        def pipeline_case(name: str, make_source: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                results = []
                pipeline = Pipeline(model, [make_source()], config=PipelineConfig(),
                                    on_result=lambda frame, prediction: results.append(None))
                stats = pipeline.run()
                inference_ms.setdefault(name, []).append(stats["inference_ms_p50"])
                if stats["errors"] or len(results) != len(frames):
                    raise RuntimeError(f"{name}: {len(results)} results for {len(frames)} frames, "
                                       f"{stats['errors']} errors")

            return run

        cases: dict[str, Callable[[], None]] = {
            "bare": bare_case,
            "naive": naive_case,
            "images": pipeline_case("images", lambda: open_source(str(directory), strict=True)),
            "arrays": pipeline_case("arrays", lambda: ArraySource(frames)),
            "video": pipeline_case("video", lambda: open_source(str(video))),
        }
        for fn in cases.values():  # warm the engines, OpenCV and the page cache
            fn()
        inference_ms.clear()
        fps: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.repeats):  # interleaved, order rotated, so drift on a shared machine hits every case alike
            for name in names[r % len(names):] + names[: r % len(names)]:
                start = time.perf_counter()
                cases[name]()
                fps[name].append(len(frames) / (time.perf_counter() - start))
        close_bare()
        model.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in fps.items()}
    figures = {
        **run_figures(args),
        "fps": {name: round(value, 2) for name, value in med.items()},
        "fps_samples": {name: [round(v, 2) for v in values] for name, values in fps.items()},
        "over_bare": {name: round(med[name] / med["bare"], 3) for name in med if name != "bare"},
        "bare_invoke_ms": round(1000 / med["bare"], 3),
        "pipeline_inference_ms_p50": {name: round(statistics.median(v), 3) for name, v in inference_ms.items()},
        "goals": GOALS,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    ratio = figures["over_bare"]
    print(f"pipeline throughput, {figures['model']}, LiteRT {args.threads} thread(s) on {figures['cores']} core(s)")
    print(f"  cpu: {figures['cpu']}; {args.frames} frames 640x480, median of {args.repeats} interleaved runs")
    print(f"  {'bare invoke, one prepared tensor':<36}  {med['bare']:7.1f} fps  "
          f"({figures['bare_invoke_ms']:.2f} ms per invoke)")
    for name, label in (("naive", "naive loop (imread .. argmax)"), ("images", "pipeline, JPEG directory (decode)"),
                        ("arrays", "pipeline, decoded arrays"), ("video", "pipeline, MJPG video")):
        goal = f"  (goal >= {GOALS[name]:.2f}x)" if name in GOALS else ""
        print(f"  {label:<36}  {med[name]:7.1f} fps  {ratio[name]:6.3f}x bare{goal}")
    inference = ", ".join(f"{k} {v:.2f}" for k, v in figures["pipeline_inference_ms_p50"].items())
    print(f"  invoke inside the pipeline, p50 ms: {inference}  (bare {figures['bare_invoke_ms']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
