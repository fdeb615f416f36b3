"""Errors of the microcontroller tooling: every one names the file it is about and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    from converters.compat import CompatReport


class FirmwareError(EdgeSDKError):
    """A bundle or image could not be exported, measured, verified or signed for a microcontroller."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FitError(FirmwareError):
    """The model does not fit the board (or uses ops its firmware lacks); ``report`` holds the fit table."""

    def __init__(self, path: str | Path, report: "CompatReport") -> None:
        self.report = report
        super().__init__(
            path,
            f"the model cannot run on {report.profile!r}:\n  - " + "\n  - ".join(report.problems)
            + "\n" + report.table() + "\n(pass --force / force=True to export it anyway)",
        )


class ImageError(FirmwareError):
    """An MCUboot image could not be signed, or failed verification (tampered, wrong key, malformed)."""
