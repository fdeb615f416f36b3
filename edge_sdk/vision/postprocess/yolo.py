"""YOLO heads without built-in NMS: YOLOv5 (with objectness) and YOLOv8 (without, optional pose).

One output tensor holds one row of attributes per candidate box:

- YOLOv5: ``cx, cy, w, h, objectness, class scores...`` (``5 + C``); the score
  of a class is ``objectness * class score``, as in YOLOv5's
  ``non_max_suppression`` (``x[:, 5:] *= x[:, 4:5]``).
- YOLOv8: ``cx, cy, w, h, class scores...[, K x (x, y, visibility)]``
  (``4 + C + 3K``); the score is the best class score, as in Ultralytics'
  ``ops.non_max_suppression``.

Exports store it either candidate-major ``(N, A)`` (YOLOv5's usual layout) or
attribute-major ``(A, N)`` (YOLOv8's ``(84, 8400)``). The layout is found from
the shape (the attribute axis is the one of length ``A`` when ``num_classes``
is given, otherwise the shorter one) unless ``transposed`` says it:
``transposed: true`` means attribute-major ``(A, N)``.

Candidates are filtered with whole-array operations before NMS; NMS is
class-aware unless ``class_agnostic`` (boxes only suppress boxes of their own
class, the effect of the ``class * max_wh`` offset trick in Ultralytics,
computed exactly). A candidate is kept when its score is strictly above
``conf_threshold``, as in both references. Boxes come out in model-input
pixels (``coordinates: "normalized"`` scales 0..1 outputs by the input size).
"""

from __future__ import annotations

import abc

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edge_sdk._fields import Fields
from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess.common import cxcywh_to_xyxy, nms, read_params, select_output, to_detections
from edge_sdk.vision.types import Detection

COORDINATES = ("pixels", "normalized")


@dataclass(frozen=True)
class _YoloDecoder(abc.ABC):
    """What YOLOv5 and YOLOv8 heads share: thresholds, layout and the NMS step."""

    task_kind: ClassVar[str] = "detection"
    name: ClassVar[str] = "yolo"
    # Attributes per candidate before the class scores (4 box + objectness for v5).
    head: ClassVar[int] = 4
    # Which layout a square (ambiguous) tensor is read in: the family's usual export.
    native_transposed: ClassVar[bool] = False

    input_size: tuple[int, int]
    labels: tuple[str, ...] = ()
    num_classes: int | None = None
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    max_candidates: int = 30000
    class_agnostic: bool = False
    coordinates: str = "pixels"
    transposed: bool | None = None
    output: int = 0

    @classmethod
    def _common(cls, f: Fields, labels: Sequence[str], input_size: tuple[int, int]) -> dict[str, Any]:
        values = dict(
            input_size=(int(input_size[0]), int(input_size[1])),
            labels=tuple(labels),
            num_classes=f.int("num_classes", None, minimum=1),
            conf_threshold=f.float("conf_threshold", 0.25),
            iou_threshold=f.float("iou_threshold", 0.45),
            max_detections=f.int("max_detections", 300, minimum=1),
            max_candidates=f.int("max_candidates", 30000, minimum=1),
            class_agnostic=f.bool("class_agnostic", False),
            coordinates=f.choice("coordinates", COORDINATES, "pixels"),
            transposed=f.bool("transposed", None),
            output=f.int("output", 0, minimum=0),
        )
        if not 0.0 <= values["iou_threshold"] <= 1.0:
            f.fail("iou_threshold", f"must be within [0, 1], got {values['iou_threshold']!r}")
        if values["coordinates"] == "normalized" and min(values["input_size"]) < 1:
            f.fail("coordinates", f"normalized coordinates need the model input size, got {input_size!r}")
        return values

    # ------------------------------------------------------------------ layout

    def _tail(self) -> int:
        """Attributes after the class scores (keypoints for YOLOv8-pose)."""
        return 0

    def rows(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The output as an ``(N, A)`` view, whichever layout the model wrote."""
        raw = select_output(outputs, self.output, self.name)
        while raw.ndim > 2 and raw.shape[0] == 1:
            raw = raw[0]
        if raw.ndim != 2:
            raise EdgeSDKError(
                f"{self.name} decoder: output #{self.output} has shape {raw.shape}; expected (N, A) or (A, N)"
            )
        transposed = self.transposed
        if transposed is None:
            transposed = self._guess_transposed(raw.shape)
        pred = raw.T if transposed else raw
        classes = pred.shape[1] - self.head - self._tail()
        if classes < 1 or (self.num_classes is not None and classes != self.num_classes):
            expected = f"{self.head} + {self.num_classes or 'C'}" + (f" + {self._tail()}" if self._tail() else "")
            raise EdgeSDKError(
                f"{self.name} decoder: output #{self.output} of shape {raw.shape} read as "
                f"{'(A, N)' if transposed else '(N, A)'} has {pred.shape[1]} attributes per box; expected "
                f"{expected}; set task.params.num_classes or task.params.transposed"
            )
        return pred

    def _guess_transposed(self, shape: tuple[int, ...]) -> bool:
        a, b = shape
        if self.num_classes is not None:
            attributes = self.head + self.num_classes + self._tail()
            if a == attributes and b != attributes:
                return True
            if b == attributes and a != attributes:
                return False
            return self.native_transposed
        if a == b:
            return self.native_transposed
        return a < b

    # ------------------------------------------------------------------ decoding

    @abc.abstractmethod
    def candidates(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows above ``conf_threshold``, with their score and class (vectorised)."""

    def _limit(self, rows: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> tuple:
        if rows.size > self.max_candidates:
            top = np.argpartition(-scores, self.max_candidates - 1)[: self.max_candidates]
            rows, scores, classes = rows[top], scores[top], classes[top]
        return rows, scores, classes

    def __call__(self, outputs: Sequence[np.ndarray]) -> tuple[Detection, ...]:
        pred = self.rows(outputs)
        rows, scores, classes = self._limit(*self.candidates(pred))
        if not rows.size:
            return ()
        xywh = pred[rows, :4].astype(np.float64)
        keypoints = self._keypoints(pred, rows)
        if self.coordinates == "normalized":
            width, height = self.input_size
            xywh *= np.array([width, height, width, height], dtype=np.float64)
            if keypoints is not None:
                keypoints *= np.array([width, height], dtype=np.float64)
        boxes = cxcywh_to_xyxy(xywh[:, 0], xywh[:, 1], xywh[:, 2], xywh[:, 3])
        finite = np.all(np.isfinite(boxes), axis=1)
        if not finite.all():
            boxes, scores, classes = boxes[finite], scores[finite], classes[finite]
            keypoints = None if keypoints is None else keypoints[finite]
        keep = nms(boxes, scores, self.iou_threshold, self.max_detections, None if self.class_agnostic else classes)
        return to_detections(
            boxes[keep], scores[keep], classes[keep], self.labels, None if keypoints is None else keypoints[keep]
        )

    def _keypoints(self, pred: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class Yolov5Decoder(_YoloDecoder):
    """YOLOv5 ``(N, 5 + C)`` rows ``cx, cy, w, h, objectness, class scores``; score = obj x cls.

    Parameters: ``conf_threshold`` (0.25), ``iou_threshold`` (0.45),
    ``max_detections`` (300), ``max_candidates`` (30000, the most boxes fed
    to NMS), ``class_agnostic`` (false), ``coordinates`` ("pixels" |
    "normalized"), ``transposed`` (auto; true = ``(5 + C, N)``),
    ``num_classes`` (from the shape), ``output`` (0).
    """

    name: ClassVar[str] = "yolov5"
    head: ClassVar[int] = 5
    native_transposed: ClassVar[bool] = False

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], labels: Sequence[str] = (), input_size: tuple[int, int] = (0, 0)
    ) -> "Yolov5Decoder":
        f = read_params(params)
        decoder = cls(**cls._common(f, labels, input_size))
        f.done()
        return decoder

    def candidates(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        objectness = pred[:, 4]
        # obj * cls <= obj for scores in [0, 1], so the objectness test alone
        # already drops most rows before any class score is touched.
        rows = np.flatnonzero(objectness > self.conf_threshold)
        scores = pred[rows, 5:] * objectness[rows, None]
        classes = np.argmax(scores, axis=1)
        best = scores[np.arange(rows.size), classes]
        keep = best > self.conf_threshold
        return rows[keep], best[keep], classes[keep]


@dataclass(frozen=True)
class Yolov8Decoder(_YoloDecoder):
    """YOLOv8 ``(4 + C [+ 3K], N)`` columns ``cx, cy, w, h, class scores[, keypoints]``.

    Parameters: as :class:`Yolov5Decoder` (``transposed`` auto; true =
    ``(4 + C, N)``, the usual export), plus ``num_keypoints`` (0; YOLOv8-pose
    has 17 ``x, y, visibility`` triples after the class scores).
    """

    name: ClassVar[str] = "yolov8"
    head: ClassVar[int] = 4
    native_transposed: ClassVar[bool] = True

    num_keypoints: int = 0

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], labels: Sequence[str] = (), input_size: tuple[int, int] = (0, 0)
    ) -> "Yolov8Decoder":
        f = read_params(params)
        decoder = cls(**cls._common(f, labels, input_size), num_keypoints=f.int("num_keypoints", 0, minimum=0))
        f.done()
        return decoder

    def _tail(self) -> int:
        return 3 * self.num_keypoints

    def candidates(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stop = pred.shape[1] - self._tail()
        class_scores = pred[:, 4:stop]
        # For the (A, N) layout ``pred`` is a transposed view and this max runs
        # over contiguous rows of the original tensor.
        best = class_scores.max(axis=1)
        rows = np.flatnonzero(best > self.conf_threshold)
        classes = np.argmax(class_scores[rows], axis=1)
        return rows, best[rows], classes

    def _keypoints(self, pred: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        if not self.num_keypoints:
            return None
        start = pred.shape[1] - self._tail()
        triples = pred[rows, start:].astype(np.float64).reshape(rows.size, self.num_keypoints, 3)
        return triples[..., :2].copy()
