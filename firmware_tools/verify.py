"""Does the model compute on the board what it computes on the host? TFLite Micro against LiteRT.

:func:`verify` runs every input through TFLite Micro's own interpreter (the
kernels a firmware build runs) and through LiteRT twice: with its reference
kernels (``OpResolverType.BUILTIN_REF``), which TFLite Micro's reference
kernels should match bit for bit, and with its default optimized kernels and
XNNPACK, which may round differently by a few LSB. Each comparison reports the
top-1 agreement of the first output and the largest difference in quantization
steps (LSB) over every integer output.

Inputs are the bundle's golden input, any validation images given (through the
bundle's own preprocessing), and seeded random tensors over the input's whole
integer range, which reach the saturating corners real images rarely do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edge_sdk.errors import MissingDependencyError
from edge_sdk.runtime import EngineConfig, create_engine
from edge_sdk.runtime.base import TensorInfo

if TYPE_CHECKING:
    from edge_sdk.bundle.manifest import InputSpec

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 32


@dataclass(frozen=True)
class Agreement:
    """TFLite Micro against one LiteRT configuration over ``samples`` inputs."""

    against: str
    samples: int
    top1_agreement: float  # fraction of inputs whose first output has the same argmax
    max_lsb: int | None  # largest difference in quantization steps over integer outputs (None: no integer output)
    max_abs_diff: float  # largest difference of the dequantized outputs

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "samples": self.samples, "top1_agreement": self.top1_agreement,
                "max_lsb": self.max_lsb, "max_abs_diff": self.max_abs_diff}


@dataclass(frozen=True)
class Verification:
    """The verdict: ``ok`` when TFLite Micro agrees with LiteRT's reference kernels on every top-1."""

    golden: int
    validation: int
    random: int
    reference: Agreement
    optimized: Agreement
    arena_bytes: int

    @property
    def samples(self) -> int:
        return self.golden + self.validation + self.random

    @property
    def ok(self) -> bool:
        return self.reference.top1_agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "golden": self.golden, "validation": self.validation, "random": self.random,
                "arena_bytes": self.arena_bytes, "ok": self.ok, "reference": self.reference.to_dict(),
                "optimized": self.optimized.to_dict()}

    def summary(self) -> str:
        def one(a: Agreement) -> str:
            lsb = f"max {a.max_lsb} LSB" if a.max_lsb is not None else f"max |diff| {a.max_abs_diff:.3g}"
            return f"{a.against}: top-1 {a.top1_agreement:.1%}, {lsb}"

        return (f"TFLite Micro vs LiteRT on {self.samples} inputs ({self.golden} golden, {self.validation} validation, "
                f"{self.random} random): {one(self.reference)}; {one(self.optimized)}")


def images_to_inputs(images: Sequence[np.ndarray] | np.ndarray, spec: "InputSpec") -> np.ndarray:
    """Validation images (H, W[, C] uint8; BGR for colour) -> model input tensors (N, ...) through the bundle's
    preprocessing and input quantization."""
    from edge_sdk.vision.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig.from_input_spec(spec)
    info = TensorInfo(spec.name, spec.shape, spec.dtype, spec.scale, spec.zero_point)
    tensors = [info.quantize(preprocess(np.asarray(image), config)[0]) for image in images]
    return np.concatenate(tensors) if tensors else np.zeros((0, *spec.shape[1:]), spec.dtype)


def random_inputs(info: TensorInfo, count: int, seed: int = 0) -> np.ndarray:
    """``count`` tensors of ``info``'s shape spread over its whole value range (seeded)."""
    rng = np.random.default_rng(seed)
    shape = (count, *[max(d, 1) for d in info.shape[1:]])
    if np.issubdtype(np.dtype(info.dtype), np.integer):
        limits = np.iinfo(info.dtype)
        return rng.integers(limits.min, limits.max, size=shape, endpoint=True).astype(info.dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(info.dtype)


class _LiteRT:
    """A LiteRT interpreter with a chosen op resolver, one input at a time."""

    def __init__(self, model: bytes, reference: bool) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as exc:
            raise MissingDependencyError("ai-edge-litert", "litert", "comparing TFLite Micro with LiteRT") from exc
        resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
        self.interpreter = Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def run(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        for detail, tensor in zip(self.inputs, tensors):
            self.interpreter.set_tensor(detail["index"], tensor)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.outputs]


def verify(
    model: bytes,
    arena_bytes: int,
    *,
    golden: np.ndarray | None = None,
    validation: np.ndarray | None = None,
    random: int = RANDOM_SAMPLES,
) -> Verification:
    """Run ``golden`` (one input tensor), ``validation`` (N input tensors) and ``random`` seeded inputs in
    TFLite Micro with ``arena_bytes`` and in LiteRT; compare (see the module doc). Single-input models."""
    micro = create_engine("tflite-micro", model, EngineConfig(arena_bytes=arena_bytes))
    try:
        info = micro.inputs[0]
        batches = [b for b in (golden, validation) if b is not None and len(b)]
        if random:
            batches.append(random_inputs(info, random))
        inputs = np.concatenate([np.asarray(b, dtype=info.dtype).reshape(-1, *info.shape[1:]) for b in batches])
        micro_out = [micro.run({info.name: x[None]}) for x in inputs]
    finally:
        micro.close()
    agreements = [_compare(micro_out, _LiteRT(model, reference), inputs, micro.outputs,
                           "LiteRT reference kernels" if reference else "LiteRT optimized/XNNPACK")
                  for reference in (True, False)]
    return Verification(golden=0 if golden is None else len(golden.reshape(-1, *info.shape[1:])),
                        validation=0 if validation is None else len(validation), random=random,
                        reference=agreements[0], optimized=agreements[1], arena_bytes=arena_bytes)


def _compare(micro_out: list[list[np.ndarray]], litert: _LiteRT, inputs: np.ndarray,
             outputs: Sequence[TensorInfo], against: str) -> Agreement:
    agree, max_lsb, max_abs = 0, None, 0.0
    for x, got in zip(inputs, micro_out):
        expected = litert.run([x[None]])
        agree += int(np.argmax(got[0]) == np.argmax(expected[0]))
        for info, a, b in zip(outputs, got, expected):
            if np.issubdtype(a.dtype, np.integer):
                lsb = int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)), initial=0))
                max_lsb = lsb if max_lsb is None else max(max_lsb, lsb)
            diff = np.abs(info.dequantize(a) - info.dequantize(b))
            max_abs = max(max_abs, float(np.max(diff, initial=0.0)))
    count = len(inputs)
    return Agreement(against, count, agree / count if count else 1.0, max_lsb, max_abs)
