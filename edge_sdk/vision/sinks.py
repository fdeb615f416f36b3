"""Sinks: where the pipeline puts each frame's prediction.

Every sink follows the small :class:`Sink` protocol: ``write(frame,
prediction)``, ``close()`` and a context manager. ``open_sink(spec)`` turns the
CLI strings (``out.jsonl``, ``-``, ``images:dir/``, ``video:out.mp4``) into a
sink. Drawing is the pure function :func:`annotate`, shared by the image and
video sinks and usable on its own. OpenCV is imported lazily.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.types import Detection, Prediction, SegmentationMask

if TYPE_CHECKING:
    from types import TracebackType

    from edge_sdk.vision.sources import Frame

log = logging.getLogger(__name__)

#: Suffixes (lower case) ``open_sink`` writes as JSON lines, and as video with the FourCC used.
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def _make_palette(size: int = 256) -> np.ndarray:
    """``size`` well-separated BGR colours: hues spaced by the golden ratio, bright and saturated."""
    colours = []
    for i in range(size):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colours.append((round(b * 255), round(g * 255), round(r * 255)))
    palette = np.array(colours, dtype=np.uint8)
    palette.setflags(write=False)
    return palette


#: The fixed colour (BGR) of class index ``i`` is ``PALETTE[i % len(PALETTE)]``.
PALETTE = _make_palette()
#: Opacity of the segmentation overlay.
SEGMENTATION_ALPHA = 0.5


class SinkError(EdgeSDKError):
    """A sink could not be opened or written: bad spec, unwritable path, no video encoder.

    ``sink`` names the offending sink or path and ``reason`` says what went wrong.
    """

    def __init__(self, sink: str, reason: str) -> None:
        self.sink = str(sink)
        self.reason = reason
        super().__init__(f"{self.sink}: {reason}")


@runtime_checkable
class Sink(Protocol):
    """What the pipeline writes each frame and its prediction to."""

    def write(self, frame: "Frame", prediction: Prediction) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc: object) -> None: ...


class _SinkBase:
    """Context manager and the closed check shared by every sink."""

    name = "sink"
    _closed = False

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: "TracebackType | None"
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(self.name, "the sink is closed")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------- drawing


def annotate(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """A copy of the BGR ``image`` with ``prediction`` drawn on it; ``image`` itself is never changed.

    Segmentation is a translucent overlay (class 0, the background, is left
    clear); detections are boxes in their class colour with ``label score``
    above them and their keypoints as dots; a classification writes its top
    class in the top-left corner.
    """
    out = _bgr_copy(image)
    if prediction.segmentation is not None:
        _draw_segmentation(out, prediction.segmentation)
    thickness = line_thickness(out)
    for detection in prediction.detections:
        _draw_detection(out, detection, thickness)
    top = prediction.top
    if top is not None:
        text = f"{top.label or top.index} {top.score:.2f}"
        _draw_label(out, text, (thickness, thickness), _colour(top.index), thickness, below=True)
    return out


def line_thickness(image: np.ndarray) -> int:
    """Box line width in pixels for an image of this size (1 for 300 px, 2 for 600 px, ...)."""
    return max(1, round(min(image.shape[:2]) / 300))


def _bgr_copy(image: np.ndarray) -> np.ndarray:
    import cv2

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"annotate() needs a uint8 numpy image, got {getattr(image, 'dtype', type(image))!r}")
    if image.ndim == 3 and image.shape[2] == 3:
        return np.array(image, order="C", copy=True)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"annotate() needs an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {image.shape!r}")


def _colour(index: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[index % len(PALETTE)])  # type: ignore[return-value]


def _draw_segmentation(out: np.ndarray, segmentation: SegmentationMask) -> None:
    import cv2

    mask = np.asarray(segmentation.mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"a segmentation mask must be (H, W), got {mask.shape!r}")
    height, width = out.shape[:2]
    if mask.shape != (height, width):
        mask = cv2.resize(mask.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)
    mask = mask.astype(np.int64)
    covered = mask != 0
    if not covered.any():
        return
    colours = PALETTE[mask[covered] % len(PALETTE)].astype(np.float32)
    blended = out[covered].astype(np.float32) * (1.0 - SEGMENTATION_ALPHA) + colours * SEGMENTATION_ALPHA
    out[covered] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _draw_detection(out: np.ndarray, detection: Detection, thickness: int) -> None:
    import cv2

    box = detection.box
    if not all(math.isfinite(v) for v in box.to_list()):
        return
    height, width = out.shape[:2]
    clipped = box.clip(width - 1, height - 1)
    if clipped.width == 0 or clipped.height == 0:
        return  # outside the image, or degenerate
    x0, y0, x1, y1 = (round(v) for v in clipped.to_list())
    colour = _colour(detection.index)
    cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_8)
    for x, y in detection.keypoints:
        if math.isfinite(x) and math.isfinite(y) and 0 <= x < width and 0 <= y < height:
            cv2.circle(out, (round(x), round(y)), thickness + 2, colour, -1, cv2.LINE_AA)
    text = f"{detection.label or detection.index} {detection.score:.2f}"
    _draw_label(out, text, (x0, y0), colour, thickness, below=False)


def _draw_label(
    out: np.ndarray, text: str, anchor: tuple[int, int], colour: tuple[int, int, int], thickness: int, *, below: bool
) -> None:
    """``text`` on a filled box in ``colour`` whose left edge is at ``anchor``: above it, or below it."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.4 * thickness
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 1
    box_h = text_h + baseline + 2 * pad
    x, y = anchor
    top = y if below or y - box_h < 0 else y - box_h
    cv2.rectangle(out, (x, top), (x + text_w + 2 * pad, top + box_h), colour, -1, cv2.LINE_8)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (x + pad, top + pad + text_h), font, scale, ink, thickness, cv2.LINE_AA)


# --------------------------------------------------------------------------- sinks


class JsonLinesSink(_SinkBase):
    """One JSON object per frame and line, flushed per line.

    Each line holds ``source``, ``index``, ``timestamp``, ``path``, ``label``
    (only for labelled frames) and the keys of ``prediction.to_dict()``.
    ``path_or_stream`` is a file path (truncated, or appended to with
    ``append=True``), ``"-"`` for standard output, or an open text stream,
    which the sink does not close.
    """

    def __init__(self, path_or_stream: str | Path | IO[str], *, append: bool = False) -> None:
        self._owned = False
        if path_or_stream == "-":
            self.name = "-"
            self._stream: IO[str] = sys.stdout
        elif isinstance(path_or_stream, (str, Path)):
            self.name = str(path_or_stream)
            path = Path(path_or_stream)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream = open(path, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise SinkError(self.name, f"cannot open for writing: {exc.strerror or exc}") from exc
            self._owned = True
        else:
            self.name = getattr(path_or_stream, "name", "stream")
            self._stream = path_or_stream

    def write(self, frame: "Frame", prediction: Prediction) -> None:
        self._check_open()
        self._stream.write(json.dumps(self.record(frame, prediction)) + "\n")
        self._stream.flush()

    @staticmethod
    def record(frame: "Frame", prediction: Prediction) -> dict:
        """The JSON object written for one frame."""
        record: dict = {
            "source": frame.source,
            "index": frame.index,
            "timestamp": round(frame.timestamp, 6),
            "path": frame.path,
        }
        if frame.label is not None:
            record["label"] = frame.label
        record.update(prediction.to_dict())
        return record

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


def _safe_name(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "frame"


class AnnotatedImageSink(_SinkBase):
    """Each frame with its prediction drawn, as ``<directory>/<source>-<index:06d>.jpg``.

    The source name is made file-name safe (``camera:0`` becomes ``camera_0``).
    """

    def __init__(self, directory: str | Path, *, quality: int = 90) -> None:
        self.directory = Path(directory)
        self.name = str(directory)
        if not 0 <= quality <= 100:
            raise ValueError(f"JPEG quality must be between 0 and 100, got {quality!r}")
        self.quality = quality
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(self.name, f"cannot create the directory: {exc.strerror or exc}") from exc

    def path_for(self, frame: "Frame") -> Path:
        """Where the annotated ``frame`` is written."""
        return self.directory / f"{_safe_name(frame.source)}-{frame.index:06d}.jpg"

    def write(self, frame: "Frame", prediction: Prediction) -> None:
        import cv2

        self._check_open()
        path = self.path_for(frame)
        ok, encoded = cv2.imencode(".jpg", annotate(frame.image, prediction), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise SinkError(str(path), "cannot encode the annotated frame as JPEG")
        try:
            path.write_bytes(encoded.tobytes())
        except OSError as exc:
            raise SinkError(str(path), f"cannot write: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._closed = True


class AnnotatedVideoSink(_SinkBase):
    """Each frame with its prediction drawn, into one video file.

    The frame size is taken from the first frame; later frames of another size
    are resized to it. The FourCC comes from the suffix (``.mp4``/``.mov``:
    ``mp4v``; ``.avi``/``.mkv``: ``MJPG``) unless ``fourcc`` is given.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, *, fourcc: str | None = None) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        if fourcc is None:
            fourcc = VIDEO_FOURCC.get(self.path.suffix.lower())
            if fourcc is None:
                raise SinkError(
                    self.name,
                    f"cannot choose a video codec for suffix {self.path.suffix!r}; "
                    f"use one of {', '.join(sorted(VIDEO_FOURCC))} or pass fourcc=",
                )
        if len(fourcc) != 4:
            raise ValueError(f"a FourCC has 4 characters, got {fourcc!r}")
        self.fourcc = fourcc
        self.size: tuple[int, int] | None = None  # (width, height), from the first frame
        self.frames_written = 0
        self._writer = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(self.name, f"cannot create the directory: {exc.strerror or exc}") from exc

    def write(self, frame: "Frame", prediction: Prediction) -> None:
        import cv2

        self._check_open()
        image = annotate(frame.image, prediction)
        height, width = image.shape[:2]
        if self._writer is None:
            self._writer = self._open_writer(width, height)
        elif (width, height) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def _open_writer(self, width: int, height: int):
        import cv2

        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            writer.release()
            raise SinkError(self.name, f"cannot open a video writer for FourCC {self.fourcc!r} at {width}x{height}")
        self.size = (width, height)
        return writer

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class CallbackSink(_SinkBase):
    """Calls ``fn(frame, prediction)`` for each frame.

    An exception from ``fn`` is logged and counted in ``errors``; it never
    stops the pipeline.
    """

    def __init__(self, fn: Callable[["Frame", Prediction], object], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.errors = 0

    def write(self, frame: "Frame", prediction: Prediction) -> None:
        self._check_open()
        try:
            self.fn(frame, prediction)
        except Exception:  # the callback is user code: report it, keep the pipeline running
            self.errors += 1
            log.exception("sink %s raised on frame %d of %s", self.name, frame.index, frame.source)

    def close(self) -> None:
        self._closed = True


# --------------------------------------------------------------------------- the CLI form


def open_sink(spec: str) -> JsonLinesSink | AnnotatedImageSink | AnnotatedVideoSink:
    """The sink a ``--sink`` string names.

    ``-`` (JSON lines on standard output); ``jsonl:PATH`` or a path ending in
    ``.jsonl``/``.ndjson``; ``images:DIR`` or a path ending in ``/``;
    ``video:PATH`` or a path ending in a video suffix (``.mp4``, ``.avi``, ...).
    """
    kind, _, target = spec.partition(":")
    if target and kind in ("jsonl", "images", "video"):
        if kind == "jsonl":
            return JsonLinesSink(target)
        if kind == "images":
            return AnnotatedImageSink(target)
        return AnnotatedVideoSink(target)
    if spec == "-":
        return JsonLinesSink("-")
    suffix = Path(spec).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return JsonLinesSink(spec)
    if suffix in VIDEO_FOURCC:
        return AnnotatedVideoSink(spec)
    if spec.endswith(("/", "\\")) or Path(spec).is_dir():
        return AnnotatedImageSink(spec)
    raise SinkError(
        spec or repr(spec),
        "unknown sink; use '-', jsonl:PATH or PATH.jsonl, images:DIR or DIR/, video:PATH or PATH.mp4|.avi",
    )


__all__ = [
    "AnnotatedImageSink",
    "AnnotatedVideoSink",
    "CallbackSink",
    "JSONL_SUFFIXES",
    "JsonLinesSink",
    "PALETTE",
    "SEGMENTATION_ALPHA",
    "Sink",
    "SinkError",
    "VIDEO_FOURCC",
    "annotate",
    "line_thickness",
    "open_sink",
]
