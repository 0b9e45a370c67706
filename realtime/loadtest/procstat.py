"""CPU time and resident memory of a process on this machine, from /proc (Linux).

Every reader returns None when it cannot read (another OS, a pid that is gone or on
another machine), so callers report "-" instead of failing.
"""

from __future__ import annotations

import os
import time
from typing import Any

try:
    CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    CLK_TCK = 100


def cpu_seconds(pid: int | str = "self") -> float | None:
    """utime + stime of all the process's threads, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessWatch:
    """CPU use (cores) and RSS of one process, sampled by the caller (about every second)."""

    def __init__(self, pid: int | str, label: str) -> None:
        self.pid = pid
        self.label = label
        self.readable = cpu_seconds(pid) is not None
        self._last_cpu = cpu_seconds(pid)
        self._last_t = time.perf_counter()
        self.rss_start_kib = rss_kib(pid)
        self.marks: dict[str, int | None] = {}
        self.samples: list[tuple[float, float | None, int | None]] = []  # (t, cores, rss)
        self._cpu_at: dict[str, tuple[float, float | None]] = {}

    def sample(self, t: float) -> tuple[float | None, int | None]:
        """(cores used since the previous sample, RSS KiB now); records it at `t`."""
        now = time.perf_counter()
        cpu = cpu_seconds(self.pid)
        cores = None
        if cpu is not None and self._last_cpu is not None and now > self._last_t:
            cores = (cpu - self._last_cpu) / (now - self._last_t)
        self._last_cpu, self._last_t = cpu, now
        rss = rss_kib(self.pid)
        self.samples.append((t, cores, rss))
        return cores, rss

    def mark(self, name: str) -> None:
        """Remember RSS and CPU time at a phase boundary (e.g. 'connected', 'writes_done')."""
        self.marks[name] = rss_kib(self.pid)
        self._cpu_at[name] = (time.perf_counter(), cpu_seconds(self.pid))

    def cores_between(self, first: str, last: str) -> float | None:
        a, b = self._cpu_at.get(first), self._cpu_at.get(last)
        if a is None or b is None or a[1] is None or b[1] is None or b[0] <= a[0]:
            return None
        return (b[1] - a[1]) / (b[0] - a[0])

    def cpu_seconds_between(self, first: str, last: str) -> float | None:
        a, b = self._cpu_at.get(first), self._cpu_at.get(last)
        if a is None or b is None or a[1] is None or b[1] is None:
            return None
        return b[1] - a[1]

    def summary(self) -> dict[str, Any]:
        rss = [s[2] for s in self.samples if s[2] is not None]
        cores = [s[1] for s in self.samples if s[1] is not None]
        return {
            "pid": self.pid if isinstance(self.pid, int) else os.getpid(),
            "label": self.label,
            "readable": self.readable,
            "rss_start_mib": _mib(self.rss_start_kib),
            "rss_marks_mib": {k: _mib(v) for k, v in self.marks.items()},
            "rss_max_mib": _mib(max(rss)) if rss else None,
            "cpu_cores_max": round(max(cores), 2) if cores else None,
            "cpu_cores_connect": _round(self.cores_between("connect_start", "connected")),
            "cpu_cores_writes": _round(self.cores_between("writes_start", "writes_done")),
        }


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib is not None else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def cpu_pressure_seconds() -> float | None:
    """Seconds in which some runnable task waited for a CPU (Linux PSI, /proc/pressure/cpu)."""
    try:
        with open("/proc/pressure/cpu") as handle:
            first = handle.readline().split()
    except OSError:
        return None
    for field in first:
        if field.startswith("total="):
            return int(field[6:]) / 1e6
    return None


class MachineWatch:
    """Busy cores of the whole machine between marks: others' load shows up here."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[float, float | None]] = {}
        self._stall: dict[str, float | None] = {}

    def mark(self, name: str) -> None:
        self._at[name] = (time.perf_counter(), machine_busy_seconds())
        self._stall[name] = cpu_pressure_seconds()

    def cpu_stall_share(self, first: str, last: str) -> float | None:
        """Share of the time between two marks in which something waited for a CPU."""
        a, b = self._stall.get(first), self._stall.get(last)
        t0, t1 = self._at.get(first), self._at.get(last)
        if a is None or b is None or t0 is None or t1 is None or t1[0] <= t0[0]:
            return None
        return (b - a) / (t1[0] - t0[0])

    def cores_between(self, first: str, last: str) -> float | None:
        a, b = self._at.get(first), self._at.get(last)
        if a is None or b is None or a[1] is None or b[1] is None or b[0] <= a[0]:
            return None
        return (b[1] - a[1]) / (b[0] - a[0])


def loadavg() -> list[float] | None:
    try:
        with open("/proc/loadavg") as handle:
            return [float(v) for v in handle.read().split()[:3]]
    except (OSError, ValueError):
        return None
