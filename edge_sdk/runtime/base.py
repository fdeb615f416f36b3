"""The engine Protocol every inference backend implements, and its typed configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol

import numpy as np

if TYPE_CHECKING:
    from device_profiles import DeviceProfile


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the engine sees it."""

    name: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale > 0

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """Real values -> this tensor's dtype (``round(real / scale + zero_point)``, saturated) when it is integer."""
        if self.dtype in ("int8", "uint8", "int16") and self.quantized:
            limits = np.iinfo(self.dtype)
            q = np.rint(real / np.float32(self.scale) + np.float32(self.zero_point or 0))
            return np.clip(q, limits.min, limits.max).astype(self.dtype)
        return real.astype(self.dtype, copy=False)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """This tensor's values as float32 reals (``scale * (q - zero_point)`` when quantized)."""
        if self.quantized:
            return (values.astype(np.float32) - np.float32(self.zero_point or 0)) * np.float32(self.scale)
        return values.astype(np.float32, copy=False)


def default_cache_dir() -> Path:
    """Where engines keep build caches (TensorRT engines, optimised graphs)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("EDGE_SDK_CACHE_DIR") or Path(base) / "edge-sdk")


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model on one device, resolved from its profile once.

    ``delegates`` lists delegates (LiteRT: edgetpu, xnnpack, gpu) or execution
    providers (ONNX Runtime: tensorrt, cuda, cpu) in order of preference.
    ``fallback_to_cpu`` decides what happens when the preferred accelerator is
    absent: run on the CPU (logged) or fail with an :class:`EngineError`.
    """

    num_threads: int = 1
    delegates: tuple[str, ...] = ()
    fallback_to_cpu: bool = True
    fp16: bool = False
    cache_dir: Path | None = None
    arena_bytes: int | None = None  # TFLite Micro tensor arena
    graph_optimization: str = "all"  # ONNX Runtime: disable | basic | extended | all

    @classmethod
    def from_profile(
        cls,
        profile: "DeviceProfile",
        *,
        allow_cpu_fallback: bool | None = None,
        num_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        arena_bytes: int | None = None,
    ) -> "EngineConfig":
        runtime = profile.runtime
        return cls(
            num_threads=num_threads or runtime.num_threads,
            delegates=tuple(runtime.delegates),
            fallback_to_cpu=runtime.fallback_to_cpu if allow_cpu_fallback is None else allow_cpu_fallback,
            fp16="fp16" in runtime.allowed_quantization,
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
            arena_bytes=arena_bytes,
        )


class Engine(Protocol):
    """A loaded model on one inference engine.

    ``run`` takes inputs by name in the engine's own dtypes and returns the raw
    outputs in model order. ``provider`` says what actually executes the
    graph (``xnnpack``, ``edgetpu``, ``CUDAExecutionProvider``, ...), which
    may differ from what the profile preferred when a fallback happened.
    """

    name: str
    provider: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def check_feeds(engine: Engine, feeds: Mapping[str, np.ndarray]) -> None:
    """Name, dtype and rank of every feed against the engine's inputs, with a clear error."""
    from edge_sdk.errors import EngineError

    expected = {t.name: t for t in engine.inputs}
    missing = sorted(set(expected) - set(feeds))
    unknown = sorted(set(feeds) - set(expected))
    if missing or unknown:
        raise EngineError(
            engine.name,
            f"inputs {sorted(feeds)!r} do not match the model's inputs {sorted(expected)!r}"
            + (f" (missing {missing!r})" if missing else "")
            + (f" (unknown {unknown!r})" if unknown else ""),
        )
    for name, array in feeds.items():
        info = expected[name]
        if str(array.dtype) != info.dtype:
            raise EngineError(engine.name, f"input {name!r} must be {info.dtype}, got {array.dtype}")
        if len(array.shape) != len(info.shape) or any(
            want not in (-1, got) for want, got in zip(info.shape[1:], array.shape[1:])
        ):
            raise EngineError(engine.name, f"input {name!r} must have shape {list(info.shape)!r}, got {list(array.shape)!r}")
