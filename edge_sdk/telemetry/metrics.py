"""Device health without heavy dependencies: CPU, memory, disk, temperature, process RSS.

Everything comes from the kernel's text files (``/proc/stat``,
``/proc/meminfo``, ``/proc/self/status``, ``/sys/class/thermal``) and
``shutil.disk_usage``; no psutil. The parsers are pure functions of the
file's text, so they are tested with sample text from a Pi, a Jetson and a
PC; :class:`DeviceHealth` is the thin part that reads the files.

A value the device does not expose is ``None`` (a PC in a VM has no thermal
zones).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pure parsers


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU time from the ``cpu`` line of ``/proc/stat``, in clock ticks."""

    busy: int
    total: int


def parse_cpu_times(stat_text: str) -> CpuTimes:
    """The ``cpu`` (all cores) line of ``/proc/stat``.

    Columns: user nice system idle iowait irq softirq steal guest guest_nice.
    ``guest`` and ``guest_nice`` are already counted in user and nice, so
    they are left out; idle time is idle + iowait.
    """
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            ticks = [int(value) for value in parts[1:9]]
            if len(ticks) < 4:
                break
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            total = sum(ticks)
            return CpuTimes(busy=total - idle, total=total)
    raise ValueError(f"no aggregate 'cpu' line in /proc/stat text {stat_text[:80]!r}")


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Percent of all cores busy between two samples; None when no tick passed in between."""
    total = after.total - before.total
    if total <= 0:
        return None
    busy = min(max(after.busy - before.busy, 0), total)
    return 100.0 * busy / total


def parse_meminfo(meminfo_text: str) -> dict[str, int]:
    """``/proc/meminfo`` as {field: bytes} (the file counts in kB; counts without a unit stay as they are)."""
    values = {}
    for line in meminfo_text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        values[name.strip()] = int(parts[0]) * scale
    return values


def memory_percent(meminfo: dict[str, int]) -> float | None:
    """Percent of RAM in use, as ``free`` counts it: (MemTotal - MemAvailable) / MemTotal.

    Kernels before 3.14 have no ``MemAvailable``; MemFree + Buffers + Cached
    stands in for it there.
    """
    total = meminfo.get("MemTotal")
    if not total:
        return None
    available = meminfo.get("MemAvailable")
    if available is None:
        available = meminfo.get("MemFree", 0) + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    return 100.0 * min(max(total - available, 0), total) / total


def parse_rss_bytes(status_text: str) -> int | None:
    """Resident set size from ``/proc/<pid>/status`` (the ``VmRSS:`` line, in kB)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def parse_thermal_millidegrees(temp_text: str) -> float | None:
    """A thermal zone's ``temp`` file (millidegrees Celsius) in degrees; None for an unreadable value."""
    text = temp_text.strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return value / 1000.0


def cpu_temperature(zones: dict[str, float]) -> float | None:
    """The temperature to chart from {zone type: degrees}: the CPU's zone when one is named so, else the hottest.

    Zone types seen in the field: ``cpu-thermal`` (Raspberry Pi), ``CPU-therm``
    (Jetson), ``x86_pkg_temp`` (Intel). Jetson also has ``PMIC-Die``, which
    reads a constant 100 C on some boards, so the hottest zone is only a fallback.
    """
    if not zones:
        return None
    for name, value in zones.items():
        lowered = name.lower()
        if lowered.startswith("cpu") or lowered == "x86_pkg_temp" or lowered == "soc_thermal":
            return value
    return max(zones.values())


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class HealthSample:
    """One reading of the device's health. Fields a device does not expose are None."""

    cpu_percent: float | None
    memory_percent: float | None
    disk_free_bytes: int | None
    disk_free_percent: float | None
    temperature_c: float | None
    process_rss_bytes: int | None
    temperatures_c: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class DeviceHealth:
    """Samples the device's health; CPU percent is over the time since the previous sample.

    Samples closer together than one kernel tick (10 ms) repeat the previous
    CPU figure instead of dividing by zero.

    ``data_dir`` is the directory whose file system's free space matters (the
    one holding the outbox and the model slots). The roots are parameters so
    that tests can point them at sample trees.
    """

    def __init__(
        self,
        data_dir: str | Path = ".",
        *,
        proc_root: str | Path = "/proc",
        thermal_root: str | Path = "/sys/class/thermal",
    ) -> None:
        self.data_dir = Path(data_dir)
        self._proc = Path(proc_root)
        self._thermal = Path(thermal_root)
        self._cpu_before = self._read_cpu_times()  # so the first sample covers the time since construction
        self._cpu_last: float | None = None

    def _read(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def _read_cpu_times(self) -> CpuTimes | None:
        text = self._read(self._proc / "stat")
        if text is None:
            return None
        try:
            return parse_cpu_times(text)
        except ValueError:
            log.debug("unexpected %s/stat format", self._proc)
            return None

    def temperatures(self) -> dict[str, float]:
        """{zone type (or zone directory name): degrees C} for every readable thermal zone."""
        zones: dict[str, float] = {}
        for zone in sorted(self._thermal.glob("thermal_zone*")):
            text = self._read(zone / "temp")
            value = parse_thermal_millidegrees(text) if text is not None else None
            if value is None:
                continue
            name = (self._read(zone / "type") or "").strip() or zone.name
            if name in zones:
                name = f"{name}:{zone.name}"
            zones[name] = value
        return zones

    def sample(self) -> HealthSample:
        after = self._read_cpu_times()
        cpu = cpu_percent(self._cpu_before, after) if self._cpu_before and after else None
        if cpu is not None:
            self._cpu_before, self._cpu_last = after, cpu
        elif after is not None and self._cpu_before is None:
            self._cpu_before = after
        else:  # no clock tick since the previous sample: keep its baseline, repeat its value
            cpu = self._cpu_last
        meminfo_text = self._read(self._proc / "meminfo")
        memory = memory_percent(parse_meminfo(meminfo_text)) if meminfo_text else None
        try:
            usage = shutil.disk_usage(self.data_dir)
            disk_free, disk_free_percent = usage.free, 100.0 * usage.free / usage.total if usage.total else None
        except OSError:
            disk_free = disk_free_percent = None
        status_text = self._read(self._proc / "self" / "status")
        zones = self.temperatures()
        return HealthSample(
            cpu_percent=cpu,
            memory_percent=memory,
            disk_free_bytes=disk_free,
            disk_free_percent=disk_free_percent,
            temperature_c=cpu_temperature(zones),
            process_rss_bytes=parse_rss_bytes(status_text) if status_text else None,
            temperatures_c=zones,
        )
