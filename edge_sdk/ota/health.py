"""The health check of a freshly activated model.

Two parts. Before the model serves a single frame, the bundle's golden input
runs through it and must reproduce the expected output within the bundle's
tolerance (:meth:`edge_sdk.model.Model.golden_check`); a model that computes
something else never reaches the pipeline. Then, serving, it is watched for
a window: pipeline errors, frames still flowing (when they flowed before),
and latency against what the previous model did on the same stream.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from edge_sdk.errors import EdgeSDKError


@dataclass(frozen=True)
class HealthPolicy:
    """What "healthy" means after a swap; the defaults suit a camera stream.

    ``window_s``: how long the new model is watched. ``max_errors``: pipeline
    errors allowed in the window. ``max_latency_ratio`` and
    ``latency_slack_ms``: the new p50 may be at most ``max(ratio x old p50,
    old p50 + slack)``. ``min_frames``: frames needed before latency is judged.
    ``require_golden``: refuse bundles without a golden pair.
    """

    window_s: float = 10.0
    max_errors: int = 0
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 5.0
    min_frames: int = 5
    require_golden: bool = True

    def __post_init__(self) -> None:
        if not self.window_s >= 0 or self.max_errors < 0 or not self.max_latency_ratio >= 1.0:
            raise EdgeSDKError(f"invalid health policy {self}: window_s >= 0, max_errors >= 0 and "
                               "max_latency_ratio >= 1 are required")


@dataclass(frozen=True)
class PipelineSample:
    """Cumulative pipeline counters plus the most recent per-frame latencies (oldest first)."""

    frames_out: int = 0
    errors: int = 0
    latencies_ms: Sequence[float] = ()
    running: bool = False


class Watched(Protocol):
    def sample(self) -> PipelineSample: ...


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str | None
    frames: int
    errors: int
    p50_before_ms: float | None
    p50_after_ms: float | None


def golden_problem(model, policy: HealthPolicy) -> str | None:
    """Why the model fails its golden check, or ``None`` when it passes."""
    if model.manifest.golden is None:
        return "the bundle has no golden input/output pair to check" if policy.require_golden else None
    try:
        worst = model.golden_check()
    except Exception as exc:  # noqa: BLE001 - any failure to run the golden input fails the check
        return f"golden input could not run: {exc}"
    if not worst <= 1.0:
        shown = "a different output shape" if math.isinf(worst) else f"{worst:.1f}x the allowed error"
        return f"golden output mismatch: {shown} (tolerance atol={model.manifest.golden.atol:g}, " \
               f"rtol={model.manifest.golden.rtol:g})"
    return None


def _p50(values: Sequence[float]) -> float | None:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else None


def watch(pipeline: Watched, before: PipelineSample, policy: HealthPolicy, cancel: threading.Event,
          poll_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> HealthResult:
    """Watch the pipeline for ``policy.window_s`` after a swap; fail fast on errors."""
    p50_before = _p50(before.latencies_ms)
    deadline = clock() + policy.window_s
    sample = before
    while True:
        sample = pipeline.sample()
        frames = max(sample.frames_out - before.frames_out, 0)
        errors = max(sample.errors - before.errors, 0)
        if errors > policy.max_errors:
            return HealthResult(False, f"{errors} pipeline error(s) in the first {frames} frame(s) after the swap "
                                f"(allowed {policy.max_errors})", frames, errors, p50_before, None)
        if clock() >= deadline or cancel.wait(poll_s):
            break
    new_latencies = list(sample.latencies_ms)[-frames:] if frames else []
    p50_after = _p50(new_latencies)
    if before.running and sample.running and frames == 0 and policy.window_s > 0:
        return HealthResult(False, f"no frame came out of the pipeline in the {policy.window_s:g} s after the swap",
                            0, errors, p50_before, None)
    if p50_before is not None and p50_after is not None and frames >= policy.min_frames:
        limit = max(policy.max_latency_ratio * p50_before, p50_before + policy.latency_slack_ms)
        if p50_after > limit:
            return HealthResult(False, f"latency p50 {p50_after:.1f} ms after the swap vs {p50_before:.1f} ms before "
                                f"(limit {limit:.1f} ms)", frames, errors, p50_before, p50_after)
    return HealthResult(True, None, frames, errors, p50_before, p50_after)
