"""Immutable value types for vision results and frame geometry.

Pure data: numpy in, values out. Nothing here touches an engine, a camera or
a file, so every post-processor can be tested with arrays alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box in pixels: ``xmin <= xmax``, ``ymin <= ymax``."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return max(0.0, self.xmax - self.xmin)

    @property
    def height(self) -> float:
        return max(0.0, self.ymax - self.ymin)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.xmin + self.xmax) / 2.0, (self.ymin + self.ymax) / 2.0)

    def scale(self, sx: float, sy: float) -> "BBox":
        return BBox(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)

    def translate(self, dx: float, dy: float) -> "BBox":
        return BBox(self.xmin + dx, self.ymin + dy, self.xmax + dx, self.ymax + dy)

    def clip(self, width: float, height: float) -> "BBox":
        return BBox(
            min(max(self.xmin, 0.0), width),
            min(max(self.ymin, 0.0), height),
            min(max(self.xmax, 0.0), width),
            min(max(self.ymax, 0.0), height),
        )

    def iou(self, other: "BBox") -> float:
        ix = max(0.0, min(self.xmax, other.xmax) - max(self.xmin, other.xmin))
        iy = max(0.0, min(self.ymax, other.ymax) - max(self.ymin, other.ymin))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_list(self) -> list[float]:
        return [self.xmin, self.ymin, self.xmax, self.ymax]


@dataclass(frozen=True)
class Classification:
    """One class of a classification result."""

    index: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Detection:
    """One detected object: box in pixels of the frame it came from, score, class, optional keypoints."""

    box: BBox
    score: float
    index: int
    label: str
    keypoints: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box.to_list()],
            "score": round(self.score, 6),
            "index": self.index,
            "label": self.label,
        }
        if self.keypoints:
            data["keypoints"] = [[round(x, 2), round(y, 2)] for x, y in self.keypoints]
        return data


@dataclass(frozen=True)
class SegmentationMask:
    """Per-pixel class indices at the frame's resolution (read-only array), with the label of each index."""

    mask: np.ndarray
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.mask.setflags(write=False)

    def class_fractions(self) -> dict[int, float]:
        """Share of the frame each present class covers."""
        values, counts = np.unique(self.mask, return_counts=True)
        total = float(self.mask.size)
        return {int(v): float(c) / total for v, c in zip(values, counts)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.mask.shape),
            "classes": {
                (self.labels[k] if k < len(self.labels) else str(k)): round(v, 6)
                for k, v in self.class_fractions().items()
            },
        }


@dataclass(frozen=True)
class FrameTransform:
    """How a frame's pixels map into the model's input: ``input = original * scale + offset``.

    Built by preprocessing (stretch, letterbox or centre crop) and used by
    post-processing to map boxes and keypoints back to the original frame.
    """

    original_size: tuple[int, int]  # (width, height) of the frame
    input_size: tuple[int, int]  # (width, height) of the model input
    scale: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)

    def to_original_point(self, x: float, y: float) -> tuple[float, float]:
        return ((x - self.offset[0]) / self.scale[0], (y - self.offset[1]) / self.scale[1])

    def to_original_box(self, box: BBox) -> BBox:
        x0, y0 = self.to_original_point(box.xmin, box.ymin)
        x1, y1 = self.to_original_point(box.xmax, box.ymax)
        return BBox(x0, y0, x1, y1).clip(*self.original_size)

    def to_original_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Vectorised form for an (N, 4) array of xmin, ymin, xmax, ymax in input pixels."""
        sx, sy = self.scale
        ox, oy = self.offset
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - ox) / sx
        out[:, 1::2] = (boxes[:, 1::2] - oy) / sy
        w, h = self.original_size
        np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
        return out


@dataclass(frozen=True)
class Prediction:
    """What ``model.predict(frame)`` returns: the task's results for one frame."""

    task: str
    classes: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()
    segmentation: SegmentationMask | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def top(self) -> Classification | None:
        return self.classes[0] if self.classes else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task": self.task}
        if self.classes:
            data["classes"] = [c.to_dict() for c in self.classes]
        if self.task == "detection":
            data["detections"] = [d.to_dict() for d in self.detections]
        if self.segmentation is not None:
            data["segmentation"] = self.segmentation.to_dict()
        return data
