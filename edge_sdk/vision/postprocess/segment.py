"""Semantic segmentation: per-pixel class scores -> a class-index map, and back to the frame.

:class:`SegmentationDecoder` returns the ``(H, W)`` class map at the
output's own resolution; :func:`mask_to_frame` then maps such a map onto the
original frame, undoing the resize, letterbox padding or centre crop that
preprocessing applied (described by a
:class:`~edge_sdk.vision.types.FrameTransform`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess.common import read_params, select_output
from edge_sdk.vision.types import FrameTransform

LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class SegmentationDecoder:
    """One output -> ``np.ndarray`` ``(H, W)`` int32 class indices at the output's resolution.

    Accepted outputs (batch dimension already removed):

    - ``(H, W, C)`` scores or logits with ``layout: "NHWC"`` (default), or
      ``(C, H, W)`` with ``layout: "NCHW"``: arg-max over classes;
    - ``(H, W)`` or ``(H, W, 1)`` (``(1, H, W)`` for NCHW): already class
      indices (rounded to the nearest integer), or, with
      ``binary_threshold`` set, a foreground score map: class 1 where the
      score is above the threshold, else 0 (selfie-segmentation style).

    Parameters: ``layout``, ``binary_threshold`` (none), ``output`` (0).
    """

    task_kind: ClassVar[str] = "segmentation"

    labels: tuple[str, ...] = ()
    layout: str = "NHWC"
    binary_threshold: float | None = None
    output: int = 0

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], labels: Sequence[str] = (), input_size: tuple[int, int] = (0, 0)
    ) -> "SegmentationDecoder":
        f = read_params(params)
        decoder = cls(
            labels=tuple(labels),
            layout=f.choice("layout", LAYOUTS, "NHWC"),
            binary_threshold=f.float("binary_threshold", None),
            output=f.int("output", 0, minimum=0),
        )
        f.done()
        return decoder

    def __call__(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        raw = select_output(outputs, self.output, "segmentation")
        if raw.ndim == 3:
            channels_axis = 0 if self.layout == "NCHW" else 2
            if raw.shape[channels_axis] == 1:
                raw = np.squeeze(raw, axis=channels_axis)
            else:
                return np.argmax(raw, axis=channels_axis).astype(np.int32)
        if raw.ndim != 2:
            raise EdgeSDKError(
                f"segmentation decoder: output #{self.output} has shape {raw.shape}; expected "
                f"{'(C, H, W)' if self.layout == 'NCHW' else '(H, W, C)'} scores or an (H, W) class map"
            )
        if self.binary_threshold is not None:
            return (raw > self.binary_threshold).astype(np.int32)
        if not np.all(np.isfinite(raw)):
            raise EdgeSDKError(f"segmentation decoder: output #{self.output} holds NaN or infinite class indices")
        return np.rint(raw).astype(np.int32)


def mask_to_frame(mask: np.ndarray, transform: FrameTransform) -> np.ndarray:
    """Map a class map from model-input space onto the original frame, nearest neighbour.

    ``mask`` is ``(h, w)`` at the model input's resolution or at any other
    (the output's, typically smaller); it is taken to cover the whole model
    input. Each frame pixel takes the class of the mask cell under its centre:
    frame pixel ``(x + 0.5, y + 0.5)`` -> input point ``p * scale + offset``
    -> mask cell ``floor(point * mask_size / input_size)``. Letterbox padding
    is thereby never sampled; frame pixels a centre crop cut away take the
    nearest edge cell. Returns an ``(original_height, original_width)`` array
    of the mask's dtype.

    For a plain resize this is ``cv2.resize(..., INTER_NEAREST_EXACT)``
    (pixel centres, as Pillow and TensorFlow sample), up to frame pixels whose
    centre falls exactly on a cell boundary; it is done as one index gather,
    so any dtype works, nothing is interpolated and OpenCV is not needed.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise EdgeSDKError(f"mask_to_frame: expected an (H, W) class map, got shape {mask.shape}")
    mask_h, mask_w = mask.shape
    in_w, in_h = transform.input_size
    out_w, out_h = transform.original_size
    sx, sy = transform.scale
    ox, oy = transform.offset
    if min(mask_h, mask_w, in_w, in_h) < 1 or out_w < 0 or out_h < 0 or sx <= 0 or sy <= 0:
        raise EdgeSDKError(
            f"mask_to_frame: cannot map a {mask_w}x{mask_h} mask through {transform!r}"
        )
    xs = ((np.arange(out_w, dtype=np.float64) + 0.5) * sx + ox) * (mask_w / in_w)
    ys = ((np.arange(out_h, dtype=np.float64) + 0.5) * sy + oy) * (mask_h / in_h)
    cols = np.clip(np.floor(xs).astype(np.int64), 0, mask_w - 1)
    rows = np.clip(np.floor(ys).astype(np.int64), 0, mask_h - 1)
    return mask[rows[:, None], cols[None, :]]
