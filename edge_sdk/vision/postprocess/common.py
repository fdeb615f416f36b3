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


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray, area: Any = None, areas: Any = None) -> np.ndarray:
    """Intersection over union of one box with each of ``boxes`` (0 where the union is empty)."""
    if area is None:
        area = box_areas(box)
    if areas is None:
        areas = box_areas(boxes)
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


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
    min_suppression_threshold``, OpenCV's ``overlap <= nms_threshold`` keeps).
    With ``classes`` the suppression is class-aware: boxes only suppress boxes
    of their own class. ``max_detections <= 0`` keeps everything that survives.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise EdgeSDKError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = _descending(scores)
    areas = box_areas(boxes)
    cls = None if classes is None else np.asarray(classes).reshape(-1)
    limit = max_detections if max_detections > 0 else boxes.shape[0]
    keep: list[int] = []
    while order.size and len(keep) < limit:
        top = order[0]
        keep.append(int(top))
        rest = order[1:]
        if not rest.size:
            break
        iou = iou_one_to_many(boxes[top], boxes[rest], areas[top], areas[rest])
        survives = iou <= iou_threshold
        if cls is not None:
            survives |= cls[rest] != cls[top]
        order = rest[survives]
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
    order = _descending(scores)
    areas = box_areas(boxes)
    limit = max_detections if max_detections > 0 else boxes.shape[0]
    tops: list[int] = []
    merged_boxes: list[np.ndarray] = []
    merged_kps: list[np.ndarray] = []
    while order.size and len(tops) < limit:
        top = order[0]
        iou = iou_one_to_many(boxes[top], boxes[order], areas[top], areas[order])
        cluster = iou > iou_threshold
        if cls is not None:
            cluster &= cls[order] == cls[top]
        cluster[0] = True
        members = order[cluster]
        weights = scores[members]
        total = weights.sum()
        tops.append(int(top))
        if total > 0:
            merged_boxes.append(weights @ boxes[members] / total)
            if kps is not None:
                merged_kps.append(weights @ kps[members] / total)
        else:
            merged_boxes.append(boxes[top])
            if kps is not None:
                merged_kps.append(kps[top])
        order = order[~cluster]
    indices = np.asarray(tops, dtype=np.int64)
    out_boxes = np.asarray(merged_boxes, dtype=np.float64).reshape(-1, 4)
    out_kps = None
    if kps is not None:
        out_kps = np.asarray(merged_kps, dtype=np.float64).reshape(len(tops), kps.shape[1])
    return indices, out_boxes, out_kps
