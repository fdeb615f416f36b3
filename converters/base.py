"""The shapes every converter backend shares: the loaded source model, the quantization recipe, the result.

One backend per output format (``tflite``, ``onnx``) implements :class:`Backend`
and is chosen through :data:`converters.backends.BACKENDS` by the profile's
``runtime.format``; nothing outside a backend says ``if fmt == "tflite"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from edge_sdk.errors import EdgeSDKError
from edge_sdk.runtime.base import TensorInfo

if TYPE_CHECKING:
    from converters.calibration import Samples

SOURCE_KINDS = ("keras", "saved_model", "onnx", "tflite")
MODES = ("float32", "fp16", "dynamic", "int8")


class ConversionError(EdgeSDKError):
    """A model could not be loaded, converted or quantized; ``source`` names the model file."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class SourceModel:
    """A user's trained model, loaded once, with its float input/output signature.

    ``obj`` is what the backend works from: a Keras model, a SavedModel path,
    an ``onnx.ModelProto`` or ``.tflite`` bytes, according to ``kind``.
    Input shapes are pinned (no -1 except possibly the batch dimension).
    """

    kind: str
    name: str  # for messages: the file name, or "<keras model>"
    obj: Any = field(repr=False, compare=False)
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    path: Path | None = None


@dataclass(frozen=True)
class QuantRecipe:
    """What to produce; made from the device profile by :func:`converters.recipe.recipe_for`.

    ``keep_float`` lists layers (TFLite tensor/op names or ONNX node names, as
    the backend's :meth:`Backend.layer_errors` reports them) to leave in float:
    the accuracy gate's fallback.
    """

    mode: str  # float32 | fp16 | dynamic | int8
    input_dtype: str = "float32"  # float32 | int8 | uint8
    output_dtype: str = "float32"
    activation_type: str = "int8"  # ONNX static int8: uint8 (U8S8) or int8 (S8S8)
    weight_type: str = "int8"
    per_channel: bool = True
    symmetric_activations: bool = False
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EdgeSDKError(f"quantization mode must be one of {', '.join(MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class Converted:
    """A converted model: its bytes, its actual I/O tensors and what was done to it."""

    model: bytes = field(repr=False)
    format: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    recipe: QuantRecipe
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerError:
    """How much quantizing one layer hurts, normalised so layers compare (larger is worse)."""

    name: str  # what QuantRecipe.keep_float takes
    op: str
    error: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "error": round(self.error, 6)}


class Backend(Protocol):
    """One output format."""

    format: str

    def convert(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples | None") -> Converted:
        """Convert ``source``; ``calibration`` (float tensors) is required for ``int8``."""
        ...

    def layer_errors(self, source: SourceModel, recipe: QuantRecipe, calibration: "Samples") -> list[LayerError]:
        """Per-layer quantization error of the int8 model, worst first."""
        ...

    def ops(self, model: bytes) -> list[str]:
        """Operator types the converted model uses, one entry per node (``CONV_2D``, ``Conv``, ...)."""
        ...
