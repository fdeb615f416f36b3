"""Will the model fit the board? The compatibility report's fit table, with the measured arena.

The checks are :func:`converters.compat.analyze`'s, so the table reads the same
as ``edge-sdk package`` prints: model bytes against the model partition, model +
:data:`~converters.compat.TFLM_RUNTIME_BYTES` of TFLite Micro code against the
flash, and, given a measured arena, the recommended arena +
:data:`~converters.compat.MCU_HEADROOM_BYTES` of stacks and heap against the
internal SRAM (and SRAM + external RAM where the board has it). Ops the
profile's firmware does not register (``runtime.ops``) are problems too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from converters.compat import MCU_HEADROOM_BYTES, CompatReport, analyze
from firmware_tools.errors import FitError

if TYPE_CHECKING:
    from device_profiles import DeviceProfile
    from firmware_tools.arena import ArenaMeasurement


def fit_report(model: bytes, profile: "DeviceProfile", arena: "ArenaMeasurement | int | None" = None,
               headroom_bytes: int = MCU_HEADROOM_BYTES) -> CompatReport:
    """The compatibility report of ``model`` on ``profile``, its RAM checks using ``arena`` when given."""
    arena_bytes = arena if isinstance(arena, int) or arena is None else arena.recommended_bytes
    return analyze(model, "tflite", profile, arena_bytes=arena_bytes, headroom_bytes=headroom_bytes)


def check_fit(report: CompatReport, source: str | Path, force: bool = False) -> None:
    """Raise :class:`FitError` (with the table) when the report has problems, unless ``force``."""
    if not report.compatible and not force:
        raise FitError(source, report)
