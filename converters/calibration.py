"""Calibration and validation data: images, ``.npy`` files or Python iterables -> model-ready float tensors.

Images go through exactly the runtime's preprocessing (``edge_sdk.vision.preprocess``
with the bundle's input spec), stopping before input quantization: a float
model is calibrated on the real values the quantized model's input
quantization will later map to integers. So what the device feeds and what
calibration saw are the same numbers.

Accepted sources:

* a directory of images (jpg/jpeg/png/bmp/webp; class subdirectories are
  searched too and their names become labels for accuracy measurement);
* a ``.npy`` file: ``uint8`` arrays of shape (N, H, W, C) are BGR images
  (OpenCV's order) and are preprocessed; float arrays are taken as
  already-preprocessed input tensors (N, ...);
* an iterable of images (uint8 HxWxC BGR) or of ready tensors, or of
  ``(image, label)`` pairs.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edge_sdk.bundle.manifest import InputSpec
from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.preprocess import PreprocessConfig, preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_SAMPLES = 300


class CalibrationError(EdgeSDKError):
    """Calibration or validation data is missing, unreadable or of the wrong shape."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class Samples:
    """Model-ready float32 input tensors, each (1, ...), with optional integer labels."""

    tensors: tuple[np.ndarray, ...]
    labels: tuple[int, ...] | None = None
    label_names: tuple[str, ...] = ()
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.tensors)

    def batches(self) -> Iterable[list[np.ndarray]]:
        """What TFLite's representative dataset and ONNX Runtime's calibration reader want: one list per sample."""
        for tensor in self.tensors:
            yield [tensor]

    def split(self, fraction: float) -> tuple["Samples", "Samples"]:
        """Deterministic split into (first, rest) — calibration and validation never share a sample."""
        cut = max(1, int(len(self) * fraction))
        labels = self.labels
        return (
            Samples(self.tensors[:cut], labels[:cut] if labels else None, self.label_names, self.source),
            Samples(self.tensors[cut:], labels[cut:] if labels else None, self.label_names, self.source),
        )


def float_config(spec: InputSpec) -> PreprocessConfig:
    """The runtime's preprocessing for ``spec``, producing the real (float32) values before input quantization."""
    return dataclasses.replace(PreprocessConfig.from_input_spec(spec), dtype="float32", scale=None, zero_point=None)


def load_samples(
    source: Any,
    spec: InputSpec,
    limit: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Samples:
    """Read up to ``limit`` samples from ``source`` (see the module docstring) as preprocessed float tensors."""
    config = float_config(spec)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _from_directory(path, config, limit, seed, progress)
        if path.suffix == ".npy":
            return _from_npy(path, config, limit)
        if not path.exists():
            raise CalibrationError(str(path), "calibration data not found (give a directory of images or a .npy file)")
        raise CalibrationError(str(path), "unsupported calibration data: expected a directory of images or a .npy file")
    if isinstance(source, np.ndarray):
        return _from_array(source, config, limit, "<array>")
    if isinstance(source, Samples):
        return source
    return _from_iterable(source, config, limit)


def _from_directory(path: Path, config: PreprocessConfig, limit: int, seed: int, progress) -> Samples:
    import cv2

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CalibrationError(str(path), f"no images ({', '.join(IMAGE_SUFFIXES)}) in this directory")
    if len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    class_names = sorted({f.parent.name for f in files if f.parent != path})
    tensors, labels = [], []
    for n, file in enumerate(files):
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(str(file), "cannot read this image (corrupt or not an image)")
        tensors.append(preprocess(image, config)[0])
        if class_names and file.parent != path:
            labels.append(class_names.index(file.parent.name))
        if progress is not None:
            progress(n + 1, len(files))
    have_labels = class_names and len(labels) == len(tensors)
    return Samples(tuple(tensors), tuple(labels) if have_labels else None, tuple(class_names), str(path))


def _from_npy(path: Path, config: PreprocessConfig, limit: int) -> Samples:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(str(path), f"cannot read .npy file: {exc}") from exc
    return _from_array(array, config, limit, str(path))


def _from_array(array: np.ndarray, config: PreprocessConfig, limit: int, where: str) -> Samples:
    if array.ndim < 2 or len(array) == 0:
        raise CalibrationError(where, f"expected an array of samples (N, ...), got shape {array.shape}")
    array = array[:limit]
    if array.dtype == np.uint8:
        return Samples(tuple(preprocess(image, config)[0] for image in array), source=where)
    expected = _input_shape(config)
    if tuple(array.shape[1:]) != expected:
        raise CalibrationError(where, f"float samples must have shape (N, {', '.join(map(str, expected))}), "
                                      f"got {array.shape}")
    return Samples(tuple(np.ascontiguousarray(a[None], dtype=np.float32) for a in array), source=where)


def _from_iterable(items: Iterable, config: PreprocessConfig, limit: int) -> Samples:
    tensors, labels = [], []
    expected = _input_shape(config)
    for item in items:
        if len(tensors) >= limit:
            break
        label = None
        if isinstance(item, tuple) and len(item) == 2:
            item, label = item
        item = np.asarray(item)
        if item.dtype == np.uint8 and item.ndim in (2, 3):
            tensors.append(preprocess(item, config)[0])
        elif tuple(item.shape[-len(expected):]) == expected:
            tensors.append(np.ascontiguousarray(item.reshape(1, *expected), dtype=np.float32))
        else:
            raise CalibrationError("<iterable>", f"sample {len(tensors)} has shape {item.shape} and dtype {item.dtype}; "
                                                 f"expected a uint8 image or a float tensor of shape {expected}")
        if label is not None:
            labels.append(int(label))
    if not tensors:
        raise CalibrationError("<iterable>", "no samples")
    return Samples(tuple(tensors), tuple(labels) if len(labels) == len(tensors) else None, source="<iterable>")


def _input_shape(config: PreprocessConfig) -> tuple[int, ...]:
    if config.layout == "NCHW":
        return (config.channels, config.height, config.width)
    return (config.height, config.width, config.channels)


def random_samples(spec: InputSpec, count: int, seed: int = 0) -> Samples:
    """Noise images through the real preprocessing, for a smoke calibration when no data is given."""
    config = float_config(spec)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, config.height, config.width, 3), dtype=np.uint8)
    return Samples(tuple(preprocess(image, config)[0] for image in images), source="<random>")


def stack(samples: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(samples), axis=0)
