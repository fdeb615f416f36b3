"""The smallest tensor arena a model runs in, measured in TFLite Micro's own interpreter.

Sizing the arena is guesswork on most projects: tflite-micro's Python
interpreter defaults to ten times the model size, and firmware authors pick a
number and lower it until ``AllocateTensors()`` fails. :func:`measure_arena`
does that search properly:

1. one run with a generous arena asks TFLite Micro's ``RecordingMicroAllocator``
   how much it used (an upper bound to start from, and a cross-check);
2. a bisection between 0 and that bound finds the smallest arena, to
   ``granularity`` bytes (16: TFLite Micro aligns every buffer to 16 bytes), in
   which the interpreter loads the model *and* invokes it. Every probe runs in a
   child process (:func:`edge_sdk.runtime.tflm.probe`), because a too-small
   arena can crash the interpreter rather than fail cleanly; the number of probes
   is log2(bound / granularity), e.g. 9 for a 6 KiB arena, 16 for a 1 MiB one;
3. the board margin is added: :attr:`Board.arena_alignment` bytes for the arena's
   start alignment and, where the profile names optimized kernels (CMSIS-NN,
   ESP-NN), their scratch buffers, which the reference kernels measured here do
   not request.

The host is 64-bit and the boards are 32-bit: TFLite Micro's per-tensor and
per-node bookkeeping uses pointers, so the same model needs slightly *less*
arena on the board than measured here. The measurement is therefore a safe
bound for the reference kernels; the scratch estimate covers the optimized ones.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from edge_sdk.errors import EngineError
from edge_sdk.runtime.tflm import PROBE_TIMEOUT_S, default_arena_bytes, probe
from firmware_tools.errors import FirmwareError

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

#: TFLite Micro's MicroArenaBufferAlignment(): every arena buffer starts on a 16-byte boundary.
ARENA_ALIGNMENT = 16
#: How many times the first, generous arena may be doubled before giving up.
MAX_GROWTH = 6

_TOTAL = re.compile(rb"Arena allocation total (\d+) bytes")


@dataclass(frozen=True)
class ArenaMeasurement:
    """The arena a model needs, and how it compares with the 10x rule.

    ``measured_bytes``: the smallest arena (a multiple of ``granularity``) in
    which TFLite Micro's reference kernels load and invoke the model on this
    host; ``measured_bytes - granularity`` fails. ``margin_bytes`` is what the
    board adds (alignment + optimized-kernel scratch); ``recommended_bytes`` is
    what to declare in firmware. ``recorded_bytes`` is what TFLite Micro's
    recording allocator reported for a generous arena.
    """

    model_bytes: int
    measured_bytes: int
    recorded_bytes: int
    alignment_bytes: int
    scratch_bytes: int
    granularity: int
    probes: int
    kernels: str | None = None

    @property
    def margin_bytes(self) -> int:
        return self.alignment_bytes + self.scratch_bytes

    @property
    def recommended_bytes(self) -> int:
        return _round_up(self.measured_bytes + self.margin_bytes, ARENA_ALIGNMENT)

    @property
    def naive_bytes(self) -> int:
        """The 10x-the-model rule tflite-micro's Python interpreter uses by default."""
        return default_arena_bytes(b"\0" * self.model_bytes)

    @property
    def naive_ratio(self) -> float:
        """How many times larger the 10x rule is than the recommended arena."""
        return self.naive_bytes / self.recommended_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"model_bytes": self.model_bytes, "measured_bytes": self.measured_bytes,
                "recorded_bytes": self.recorded_bytes, "alignment_bytes": self.alignment_bytes,
                "scratch_bytes": self.scratch_bytes, "margin_bytes": self.margin_bytes,
                "recommended_bytes": self.recommended_bytes, "naive_bytes": self.naive_bytes,
                "naive_ratio": round(self.naive_ratio, 2), "granularity": self.granularity, "probes": self.probes,
                "kernels": self.kernels}


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


#: Probe failures that say nothing about the arena: the child was killed from outside or ran out of time.
_NOT_THE_ARENA = ("(SIGKILL)", "(SIGTERM)", "did not finish")


def works(model: bytes, arena_bytes: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether TFLite Micro loads and invokes ``model`` with ``arena_bytes`` (in a child process).

    A child killed from outside (the OOM killer's SIGKILL) or timed out raises
    :class:`EngineError` instead of answering "no", so a busy host cannot bend the bisection.
    """
    try:
        probe(model, arena_bytes, timeout)
    except EngineError as exc:
        if any(marker in exc.reason for marker in _NOT_THE_ARENA):
            raise
        log.debug("arena %d bytes: %s", arena_bytes, exc.reason)
        return False
    return True


def recorded_arena(model: bytes, arena_bytes: int, timeout: float = PROBE_TIMEOUT_S) -> int:
    """What TFLite Micro's RecordingMicroAllocator used after one invoke with ``arena_bytes`` (child process)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "firmware_tools.arena", "--record", str(arena_bytes)],
                              input=model, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise EngineError("tflite-micro", f"the model did not finish one inference in {timeout:.0f} s") from exc
    found = _TOTAL.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or found is None:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith((" ", "Traceback"))]
        raise EngineError("tflite-micro", "; ".join(lines[-3:]) or f"exit status {proc.returncode}")
    return int(found.group(1))


def kernel_scratch_bytes(model: bytes, kernels: str | None) -> int:
    """Scratch the optimized kernels request beyond the reference kernels, for the largest layer.

    CMSIS-NN (``arm_convolve_s8_get_buffer_size``, DSP build as on Cortex-M4/M7):
    an im2col buffer of 2 columns of int16, ``2 * in_c * k_h * k_w * 2`` bytes
    per CONV_2D; ``arm_depthwise_conv_s8_opt_get_buffer_size``: ``in_c * k_h *
    k_w * 2`` bytes per DEPTHWISE_CONV_2D. ESP-NN's convolutions use scratch of
    the same order; the same bound is applied to it as an estimate. Scratch
    buffers live only while their op runs, so the largest one counts.
    """
    if not kernels:
        return 0
    from converters.compat import parse_tflite

    graph = parse_tflite(model)
    largest = 0
    for node in graph.nodes + graph.nested:
        if node.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(node.inputs) < 2 or node.inputs[1] < 0:
            continue
        data, weights = graph.tensors[node.inputs[0]].shape, graph.tensors[node.inputs[1]].shape
        if len(data) != 4 or len(weights) != 4:
            continue
        in_c, k_h, k_w = data[3], weights[1], weights[2]
        columns = _round_up(in_c * k_h * k_w, 4)
        largest = max(largest, 2 * columns * 2 if node.op == "CONV_2D" else in_c * k_h * k_w * 2)
    return _round_up(largest, ARENA_ALIGNMENT)


def measure_arena(
    model: bytes,
    profile: "DeviceProfile | None" = None,
    *,
    granularity: int = ARENA_ALIGNMENT,
    source: str = "model.tflite",
    progress: Callable[[str], None] | None = None,
) -> ArenaMeasurement:
    """Bisect the smallest working arena for ``model`` and add ``profile``'s board margin (see the module doc)."""
    from firmware_tools.boards import GENERIC, board_for

    if granularity < 1:
        raise ValueError(f"granularity must be at least 1, got {granularity!r}")
    say = progress or (lambda _msg: None)
    board = board_for(profile) if profile is not None else GENERIC
    kernels = profile.runtime.optimized_kernels if profile is not None else None
    start = _round_up(default_arena_bytes(model), granularity)
    recorded, error = None, None
    for _ in range(MAX_GROWTH + 1):
        try:
            recorded = recorded_arena(model, start)
            break
        except EngineError as exc:
            error, start = exc, start * 2
    if recorded is None:
        raise FirmwareError(source, f"TFLite Micro cannot run the model even with a {start // 2}-byte arena: "
                                    f"{error.reason if error else 'unknown error'}")
    say(f"TFLite Micro recorded {recorded} bytes; bisecting the smallest working arena")
    high, probes = _round_up(recorded, granularity), 0
    while not works(model, high):  # the recording allocator's own bookkeeping may differ slightly; step up
        probes += 1
        if high >= start:
            raise FirmwareError(source, f"TFLite Micro ran the model with {start} bytes but not with {high}")
        high = min(high * 2, start)
    probes += 1
    low = 0  # an empty arena never works
    while high - low > granularity:
        mid = (low + high) // 2 // granularity * granularity
        probes += 1
        try:
            fits = works(model, mid)
        except EngineError as exc:
            raise FirmwareError(source, f"an arena probe of {mid} bytes failed for a reason other than the arena "
                                        f"({exc.reason}); measure again on a less busy host") from exc
        high, low = (mid, low) if fits else (high, mid)
        say(f"arena between {low} and {high} bytes ({probes} probes)")
    return ArenaMeasurement(model_bytes=len(model), measured_bytes=high, recorded_bytes=recorded,
                            alignment_bytes=board.arena_alignment, scratch_bytes=kernel_scratch_bytes(model, kernels),
                            granularity=granularity, probes=probes, kernels=kernels)


def _record_main(arena_bytes: int) -> int:
    from edge_sdk.runtime.tflm import load_and_invoke

    load_and_invoke(sys.stdin.buffer.read(), arena_bytes).print_allocations()
    return 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--record":
    sys.exit(_record_main(int(sys.argv[2])))
