"""Numeric building blocks shared by the post-processors.

Everything here is a pure function over numpy arrays: dequantization, the two
activations, box overlap, and the two kinds of non-maximum suppression the
decoders use (greedy "hard" NMS, optionally class-aware, and MediaPipe's
weighted NMS, which blends every box of a cluster instead of dropping it).

The NMS functions loop once per *kept* box and do the work of each step as
one vectorised comparison against every box still in play, so their cost is
proportional to (kept boxes) x (candidates), never a Python loop over
candidates.
"""

from __future__ import annotations

from typing import Any, Mapping, NoReturn

import numpy as np

from edge_sdk._fields import Fields
from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.types import BBox, Detection

PARAMS_PREFIX = "task.params"


def _fail_param(key: str, reason: str) -> NoReturn:
    raise EdgeSDKError(f"{key}: {reason}")


def read_params(params: Mapping[str, Any]) -> Fields:
    """A strict reader for a decoder's ``task.params``; errors name ``task.params.<key>``."""
    return Fields(params, _fail_param, PARAMS_PREFIX)


def label_for(labels: tuple[str, ...], index: int) -> str:
    """The label of class ``index``, or the index as text when the labels file has no such line."""
    return labels[index] if 0 <= index < len(labels) else str(index)


def select_output(outputs: Any, index: int, decoder: str) -> np.ndarray:
    """Output ``index`` of the model as a float32 array, or an error naming the decoder."""
    if not isinstance(outputs, (list, tuple)):
        raise EdgeSDKError(
            f"{decoder} decoder: expected a list of output arrays, got {type(outputs).__name__}"
        )
    if not 0 <= index < len(outputs):
        raise EdgeSDKError(
            f"{decoder} decoder: needs output #{index} but the model gave {len(outputs)} output(s); "
            "check the output index parameters in task.params"
        )
    return np.asarray(outputs[index], dtype=np.float32)


# --------------------------------------------------------------------------- numbers


def dequantize(values: np.ndarray, scale: Any, zero_point: Any) -> np.ndarray:
    """Real values of a quantized tensor: ``scale * (q - zero_point)`` as float32.

    ``scale`` and ``zero_point`` are scalars, or arrays that broadcast against
    ``values`` for per-channel quantization.
    """
    q = np.asarray(values)
    return (q.astype(np.float32) - np.asarray(zero_point, dtype=np.float32)) * np.asarray(scale, dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, free of overflow for any finite input (keeps float32 as float32)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    # 1 / (1 + e^-x) == exp(-log(1 + e^-x)); logaddexp never overflows.
    return np.exp(-np.logaddexp(x.dtype.type(0), -x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


# --------------------------------------------------------------------------- boxes


def cxcywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(N, 4) corner boxes from centre/size columns."""
    half_w = w * 0.5
    half_h = h * 0.5
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Area of each (xmin, ymin, xmax, ymax) box; inverted boxes have area 0."""
    return np.maximum(boxes[..., 2] - boxes[..., 0], 0) * np.maximum(boxes[..., 3] - boxes[..., 1], 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) pairwise IoU of two sets of corner boxes."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# --------------------------------------------------------------------------- NMS


def _descending(scores: np.ndarray) -> np.ndarray:
    # Stable, so equal scores keep their input order (as OpenCV's and MediaPipe's sorts do).
    return np.argsort(-scores, kind="stable")


class _SortedBoxes:
    """Boxes sorted best first, as contiguous columns, for the NMS loops.

    Each step compares the first (best) remaining box with all the others in
    a handful of whole-array operations, then drops boxes by boolean masks.
    "Overlaps" means IoU strictly above the threshold, tested as
    ``inter > threshold * union`` so that no division (and no 0/0) happens.
    """

    def __init__(self, boxes: np.ndarray, order: np.ndarray, classes: np.ndarray | None) -> None:
        ordered = boxes[order]
        self.x0 = np.ascontiguousarray(ordered[:, 0])
        self.y0 = np.ascontiguousarray(ordered[:, 1])
        self.x1 = np.ascontiguousarray(ordered[:, 2])
        self.y1 = np.ascontiguousarray(ordered[:, 3])
        self.area = np.maximum(self.x1 - self.x0, 0.0) * np.maximum(self.y1 - self.y0, 0.0)
        self.cls = None if classes is None else classes[order]
        self.index = order

    def overlaps_first(self, threshold: float) -> np.ndarray:
        """For every box (the first included): does it overlap the first one (same class only)?"""
        iw = np.minimum(self.x1, self.x1[0])
        iw -= np.maximum(self.x0, self.x0[0])
        np.maximum(iw, 0.0, out=iw)
        ih = np.minimum(self.y1, self.y1[0])
        ih -= np.maximum(self.y0, self.y0[0])
        np.maximum(ih, 0.0, out=ih)
        iw *= ih  # intersection
        union = self.area + self.area[0]
        union -= iw
        union *= threshold
        over = iw > union
        if self.cls is not None:
            over &= self.cls == self.cls[0]
        return over

    def keep_only(self, mask: np.ndarray) -> None:
        self.x0, self.y0, self.x1, self.y1 = self.x0[mask], self.y0[mask], self.x1[mask], self.y1[mask]
        self.area = self.area[mask]
        self.index = self.index[mask]
        if self.cls is not None:
            self.cls = self.cls[mask]


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int = -1,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, best score first.

    A box is suppressed when its IoU with an already kept box is strictly
    greater than ``iou_threshold`` (MediaPipe's ``similarity >
    min_suppression_threshold``; OpenCV's NMSBoxes keeps ``overlap <=
    nms_threshold``). With ``classes`` the suppression is class-aware: boxes
    only suppress boxes of their own class. ``max_detections <= 0`` keeps
    everything that survives.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise EdgeSDKError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    cls = None if classes is None else np.asarray(classes).reshape(-1)
    rest = _SortedBoxes(boxes, _descending(scores), cls)
    limit = max_detections if max_detections > 0 else boxes.shape[0]
    keep: list[int] = []
    while rest.index.size and len(keep) < limit:
        keep.append(int(rest.index[0]))
        if rest.index.size == 1:
            break
        survivors = ~rest.overlaps_first(iou_threshold)
        survivors[0] = False
        rest.keep_only(survivors)
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int = -1,
    keypoints: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted NMS: each cluster is replaced by its score-weighted average.

    Follows ``WeightedNonMaxSuppression`` in MediaPipe's
    ``calculators/util/non_max_suppression_calculator.cc``: take the best
    remaining detection, gather every remaining detection whose IoU with it is
    strictly above ``iou_threshold`` (the best one included), and output one
    detection whose box corners and keypoints are the score-weighted means of
    the gathered ones and whose score is the best one's. Repeat on the rest.
    With ``classes``, only detections of the best one's class are gathered.

    One deliberate difference: MediaPipe stops altogether when a best box does
    not overlap itself (a zero-area box); here such a box forms a cluster of
    its own and the loop goes on. The decoders drop empty boxes beforehand, so
    valid inputs give MediaPipe's result.

    Returns ``(indices, merged_boxes, merged_keypoints)``: ``indices`` are the
    best detection of each cluster (its score and class are the output's),
    best first; ``merged_keypoints`` is ``None`` when no keypoints were given.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise EdgeSDKError(f"weighted_nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    kps = None if keypoints is None else np.asarray(keypoints, dtype=np.float64).reshape(boxes.shape[0], -1)
    cls = None if classes is None else np.asarray(classes).reshape(-1)
    rest = _SortedBoxes(boxes, _descending(scores), cls)
    limit = max_detections if max_detections > 0 else boxes.shape[0]
    tops: list[int] = []
    merged_boxes: list[np.ndarray] = []
    merged_kps: list[np.ndarray] = []
    while rest.index.size and len(tops) < limit:
        top = int(rest.index[0])
        cluster = rest.overlaps_first(iou_threshold)
        cluster[0] = True
        members = rest.index[cluster]
        weights = scores[members]
        total = weights.sum()
        tops.append(top)
        if total > 0:
            merged_boxes.append(weights @ boxes[members] / total)
            if kps is not None:
                merged_kps.append(weights @ kps[members] / total)
        else:
            merged_boxes.append(boxes[top])
            if kps is not None:
                merged_kps.append(kps[top])
        rest.keep_only(~cluster)
    indices = np.asarray(tops, dtype=np.int64)
    out_boxes = np.asarray(merged_boxes, dtype=np.float64).reshape(-1, 4)
    out_kps = None
    if kps is not None:
        out_kps = np.asarray(merged_kps, dtype=np.float64).reshape(len(tops), kps.shape[1])
    return indices, out_boxes, out_kps


def to_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    labels: tuple[str, ...],
    keypoints: np.ndarray | None = None,
) -> tuple[Detection, ...]:
    """Value objects for the final (already suppressed) detections, in the given order.

    ``keypoints`` is ``(N, K, 2)`` or ``None``. The loop runs over the few
    detections that survived NMS, never over candidates.
    """
    result = []
    box_list = np.asarray(boxes, dtype=np.float64).tolist()
    score_list = np.asarray(scores, dtype=np.float64).tolist()
    class_list = np.asarray(classes).astype(np.int64).tolist()
    kp_list = None if keypoints is None else np.asarray(keypoints, dtype=np.float64).tolist()
    for i, (x0, y0, x1, y1) in enumerate(box_list):
        index = class_list[i]
        points: tuple[tuple[float, float], ...] = ()
        if kp_list is not None:
            points = tuple((p[0], p[1]) for p in kp_list[i])
        result.append(
            Detection(
                box=BBox(x0, y0, x1, y1),
                score=score_list[i],
                index=index,
                label=label_for(labels, index),
                keypoints=points,
            )
        )
    return tuple(result)
