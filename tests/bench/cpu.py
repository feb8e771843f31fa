"""CPU time of the Orthanc process under test and of the whole host, around a timed run.

Client and server share the host's CPUs: when the host is busy nearly all the time, a
rate is limited by CPU, and the server's CPU time per instance says how much of it is
Orthanc's own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | None) -> float | None:
    """User plus system time of a process and all its threads; None when it cannot be read."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def host_cpu_ticks(stat: str | None = None) -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot, from /proc/stat; idle and iowait count as not busy."""
    line = (stat if stat is not None else Path("/proc/stat").read_text(encoding="utf-8")).splitlines()[0]
    values = [int(value) for value in line.split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user/nice]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def background_busy(seconds: float = 2.0) -> float:
    """Fraction of the host's CPU time busy while the benchmark itself does nothing: others' load."""
    busy_before, total_before = host_cpu_ticks()
    time.sleep(seconds)
    busy_after, total_after = host_cpu_ticks()
    return (busy_after - busy_before) / max(total_after - total_before, 1)


@dataclass
class Meter:
    """Started before a timed run; ``stop()`` gives (server CPU seconds, fraction of the host's CPUs busy)."""

    pid: int | None
    _server: float | None = field(default=None, init=False)
    _host: tuple[int, int] = field(default=(0, 0), init=False)

    def start(self) -> Meter:
        self._server = process_cpu_seconds(self.pid)
        self._host = host_cpu_ticks()
        return self

    def stop(self) -> tuple[float | None, float | None]:
        server = process_cpu_seconds(self.pid)
        busy, total = host_cpu_ticks()
        used = server - self._server if server is not None and self._server is not None else None
        elapsed = total - self._host[1]
        return used, ((busy - self._host[0]) / elapsed if elapsed > 0 else None)
