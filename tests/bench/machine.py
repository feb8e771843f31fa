"""What the benchmark ran on: host, kernel, tools and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _first_line(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if done.returncode == 0 and text else None


def _meminfo_bytes(key: str) -> int | None:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    return None


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return None


def _filesystem(path: Path) -> str | None:
    while not path.exists():
        path = path.parent
    done = subprocess.run(["df", "-PT", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) < 2:
        return None
    fields = lines[1].split()
    return f"{fields[0]} ({fields[1]}) mounted on {fields[-1]}"


def describe(work_root: Path, storescu: str) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_bytes": _meminfo_bytes("MemTotal"),
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "pydicom": metadata.version("pydicom"),
        "pynetdicom": metadata.version("pynetdicom"),
        "docker": _first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
        "dcmtk": _first_line([storescu, "--version"]),
        "data_filesystem": _filesystem(work_root),
    }
