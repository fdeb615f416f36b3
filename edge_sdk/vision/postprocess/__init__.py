"""Post-processors: raw model outputs -> typed results, chosen by name from the manifest.

The registry maps each ``task.decoder`` name of the bundle manifest to a
decoder class; :func:`make_decoder` reads the task's ``params`` into that
class's frozen, typed configuration once, so a typo or an ill-typed value in a
manifest fails when the bundle is loaded, naming ``task.params.<key>``::

    decoder = make_decoder(manifest.task, labels, input_size=(width, height))
    result = decoder(outputs)  # float32 arrays, one per model output, batch removed

Every decoder is a pure function of its outputs; detection boxes and
keypoints are in model-input pixels, for the runtime to map back to the frame.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import numpy as np

from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess.common import dequantize, nms, sigmoid, softmax, weighted_nms

if TYPE_CHECKING:
    from edge_sdk.bundle.manifest import TaskSpec


class Decoder(Protocol):
    """What the runtime calls: ``decoder(outputs)`` -> the task's typed result."""

    def __call__(self, outputs: Sequence[np.ndarray]) -> Any: ...


# decoder name -> (module, class, the task kind it produces). Modules load on first use, so a
# classification bundle never imports the SSD or YOLO code (cold start on a device matters).
DECODERS: dict[str, tuple[str, str, str]] = {
    "classification": ("edge_sdk.vision.postprocess.classify", "ClassificationDecoder", "classification"),
    "ssd": ("edge_sdk.vision.postprocess.ssd", "SsdDecoder", "detection"),
    "yolov5": ("edge_sdk.vision.postprocess.yolo", "Yolov5Decoder", "detection"),
    "yolov8": ("edge_sdk.vision.postprocess.yolo", "Yolov8Decoder", "detection"),
    "segmentation": ("edge_sdk.vision.postprocess.segment", "SegmentationDecoder", "segmentation"),
}

_LAZY = {
    "ClassificationDecoder": "edge_sdk.vision.postprocess.classify",
    "SsdDecoder": "edge_sdk.vision.postprocess.ssd",
    "generate_anchors": "edge_sdk.vision.postprocess.ssd",
    "Yolov5Decoder": "edge_sdk.vision.postprocess.yolo",
    "Yolov8Decoder": "edge_sdk.vision.postprocess.yolo",
    "SegmentationDecoder": "edge_sdk.vision.postprocess.segment",
    "mask_to_frame": "edge_sdk.vision.postprocess.segment",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decoder_class(name: str) -> type:
    """The decoder class registered under ``name`` (imported on first use)."""
    try:
        module, cls, _kind = DECODERS[name]
    except KeyError:
        raise EdgeSDKError(f"task.decoder: unknown decoder {name!r}; known decoders: {', '.join(DECODERS)}") from None
    return getattr(importlib.import_module(module), cls)

# The decoder a task kind gets when the manifest names none. Detection has no
# default: SSD and YOLO outputs cannot be told apart safely.
DEFAULT_DECODERS: Mapping[str, str] = {
    "classification": "classification",
    "segmentation": "segmentation",
}


def make_decoder(task: "TaskSpec", labels: Sequence[str], input_size: tuple[int, int]) -> Decoder:
    """The decoder ``task`` names, configured from ``task.params``.

    ``labels`` maps class indices to names (missing ones read as the index);
    ``input_size`` is the model input's ``(width, height)`` in pixels.
    """
    name = task.decoder
    if name is None:
        name = DEFAULT_DECODERS.get(task.kind)
        if name is None:
            choices = [n for n, (_m, _c, kind) in DECODERS.items() if kind == task.kind]
            if not choices:
                raise EdgeSDKError(
                    f"task.kind: no decoder produces {task.kind!r} results; use model.infer() for raw outputs"
                )
            raise EdgeSDKError(
                f"task.decoder: a {task.kind!r} task needs a decoder named in the manifest; "
                f"choose one of: {', '.join(choices)}"
            )
    cls = decoder_class(name)
    if cls.task_kind != task.kind:
        raise EdgeSDKError(
            f"task.decoder: decoder {name!r} produces {cls.task_kind} results but task.kind is {task.kind!r}"
        )
    return cls.from_params(task.params, tuple(labels), (int(input_size[0]), int(input_size[1])))


__all__ = [
    "DECODERS",
    "DEFAULT_DECODERS",
    "ClassificationDecoder",
    "Decoder",
    "SegmentationDecoder",
    "SsdDecoder",
    "Yolov5Decoder",
    "Yolov8Decoder",
    "decoder_class",
    "dequantize",
    "generate_anchors",
    "make_decoder",
    "mask_to_frame",
    "nms",
    "sigmoid",
    "softmax",
    "weighted_nms",
]
