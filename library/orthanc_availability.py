#!/usr/bin/python
"""Ansible module orthanc_availability: measure how long Orthanc's HTTP port gives no answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # imported as a library by the backup helper on a host without Ansible
    AnsibleModule = None

DOCUMENTATION = r"""
---
module: orthanc_availability
short_description: Measure how long Orthanc's HTTP port gives no answer while other tasks run
description:
  - O(state=started) starts a detached poller on the managed host that requests O(url) every O(interval) seconds
    without credentials. Any HTTP answer, 401 included, counts as up; a refused or reset connection, an answer
    that is no HTTP, or no answer within a second counts as down, and so does the wait for an answer that took
    more than half a second (a frozen server answers late, not never). The certificate of an https URL is not
    verified, since nothing secret is sent.
  - O(state=stopped) asks the poller to stop, waits up to 30 seconds for its summary and returns it.
  - The poller stops by itself after O(max_seconds), and a later O(state=stopped) still returns its summary.
  - Files live in O(run_dir) as C(auscat-NAME-availability.py) (the poller), C(.pid), C(.stop) and
    C(.json) (the summary).
options:
  state:
    description:
      - V(started) starts a watch, ending a poller a previous watch of the same O(name) left running.
      - V(stopped) ends the watch and returns what it measured.
    type: str
    choices: [started, stopped]
    required: true
  name:
    description:
      - Name of the watch, used in its file names; letters, digits, C(.), C(_) and C(-) only.
    type: str
    required: true
  url:
    description:
      - http or https URL to poll, for example C(https://127.0.0.1:8042/system). Required with O(state=started).
    type: str
  run_dir:
    description:
      - Directory of the watch's files.
    type: path
    default: /run
  interval:
    description:
      - Seconds between two requests.
    type: float
    default: 0.1
  max_seconds:
    description:
      - Seconds after which the poller stops by itself, so a failed play leaves nothing running for long.
    type: int
    default: 900
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
author:
  - AusCAT Orthanc maintainers
"""

EXAMPLES = r"""
- name: Watch HTTP availability
  orthanc_availability:
    state: started
    name: auscat
    url: "https://127.0.0.1:8042/system"
    max_seconds: 540

- name: Stop watching availability
  orthanc_availability:
    state: stopped
    name: auscat
  register: __orthanc_availability
"""

RETURN = r"""
pid:
  description: Process ID of the poller.
  returned: state=started
  type: int
  sample: 41233
samples:
  description: Requests the poller made.
  returned: state=stopped
  type: int
  sample: 412
seconds_observed:
  description: Seconds the poller ran.
  returned: state=stopped
  type: float
  sample: 48.3
outages:
  description: Length in seconds of each stretch without an answer, in order.
  returned: state=stopped
  type: list
  elements: float
  sample: [3.41]
total_downtime_seconds:
  description: Sum of RV(outages).
  returned: state=stopped
  type: float
  sample: 3.41
longest_outage_seconds:
  description: Longest of RV(outages), 0 without any.
  returned: state=stopped
  type: float
  sample: 3.41
down_at_end:
  description: Whether the URL gave no answer when the poller stopped; its last outage then lasts until the end.
  returned: state=stopped
  type: bool
  sample: false
"""

SUMMARY_KEYS = (
    "samples",
    "seconds_observed",
    "outages",
    "total_downtime_seconds",
    "longest_outage_seconds",
    "down_at_end",
)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
STOP_WAIT_SECONDS = 30.0

# The poller runs on after the module has exited, and Ansible removes the module's own files then, so the
# module writes this source into run_dir and starts it from there. Only the standard library is used.
POLLER = r'''#!/usr/bin/env python3
"""Poller of the orthanc_availability module: measure how long URL gives no HTTP answer.

Requests URL without credentials every INTERVAL seconds: any HTTP answer (401 included) means up; a refused
or reset connection, an answer that is no HTTP, or a timeout means down, and an answer later than STALL_SECONDS
means down while it was awaited. Runs until STOP_FILE exists or
MAX_SECONDS pass, then writes a JSON summary to OUTPUT:

    python3 auscat-NAME-availability.py URL OUTPUT STOP_FILE [--interval 0.1] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Reachability only: no credentials are sent, so the certificate of an https URL need not be trusted.
UNVERIFIED = ssl._create_unverified_context()  # noqa: S323
# An answer awaited longer than this (milliseconds on loopback) was held up: the time counts as down.
STALL_SECONDS = 0.5


def is_up(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=UNVERIFIED):  # noqa: S310 - URL from the play
            return True
    except urllib.error.HTTPError:
        return True  # 401 and friends: the server answered
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False


def measure(
    probe: Callable[[], bool],
    should_stop: Callable[[], bool],
    interval: float,
    max_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stall: float = STALL_SECONDS,
) -> dict:
    """Probes until should_stop() or max_seconds; an outage runs from the start of its first failed probe
    to the start of the next answered one, or to the answer of a probe that took longer than STALL."""
    started = clock()
    outages: list[float] = []
    down_since: float | None = None
    samples = 0
    while not should_stop() and clock() - started < max_seconds:
        before = clock()
        up = probe()
        after = clock()
        samples += 1
        if up and after - before > stall:
            outages.append(after - (before if down_since is None else down_since))
            down_since = None
        elif not up and down_since is None:
            down_since = before
        elif up and down_since is not None:
            outages.append(before - down_since)
            down_since = None
        sleep(interval)
    ended = clock()
    if down_since is not None:
        outages.append(ended - down_since)
    return {
        "samples": samples,
        "seconds_observed": round(ended - started, 2),
        "outages": [round(seconds, 2) for seconds in outages],
        "total_downtime_seconds": round(sum(outages), 2),
        "longest_outage_seconds": round(max(outages, default=0.0), 2),
        "down_at_end": down_since is not None,
    }


def write_summary(path: Path, summary: dict) -> None:
    # The module waits for the file to appear, so it must never see it half written.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(summary), encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("stop_file", type=Path)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)
    summary = measure(lambda: is_up(args.url), args.stop_file.exists, args.interval, args.max_seconds)
    write_summary(args.output, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


class WatchError(Exception):
    """A failure whose message names the watch and the file at fault."""


@dataclass(frozen=True)
class WatchFiles:
    name: str
    script: Path
    pid: Path
    stop: Path
    summary: Path

    @classmethod
    def of(cls, run_dir: Path, name: str) -> WatchFiles:
        if not NAME_PATTERN.fullmatch(name):
            raise WatchError(f"name {name!r} may hold only letters, digits, '.', '_' and '-': it names files")
        stem = f"auscat-{name}-availability"
        return cls(
            name=name,
            script=Path(run_dir) / f"{stem}.py",
            pid=Path(run_dir) / f"{stem}.pid",
            stop=Path(run_dir) / f"{stem}.stop",
            summary=Path(run_dir) / f"{stem}.json",
        )


def write_poller(path: Path) -> None:
    path.write_text(POLLER, encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours
    return True


def _runs_script(pid: int, script: Path) -> bool:
    """Whether pid is a poller started from script, so a reused pid never gets a signal."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(str(script)) in argv


def _end_previous(files: WatchFiles) -> None:
    try:
        pid = int(files.pid.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if _runs_script(pid, files.script):
        # Left by a play that failed before stopping its watch; it would overwrite the new summary.
        os.kill(pid, signal.SIGTERM)


def start_watch(
    files: WatchFiles,
    url: str,
    interval: float = 0.1,
    max_seconds: int = 900,
    python: str = sys.executable,
) -> int:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise WatchError(f"url {url!r} of availability watch {files.name} must start with http:// or https://")
    if interval <= 0 or max_seconds <= 0:
        raise WatchError(f"availability watch {files.name} needs a positive interval and max_seconds")
    files.script.parent.mkdir(parents=True, exist_ok=True)
    _end_previous(files)
    for path in (files.summary, files.stop, files.pid):
        path.unlink(missing_ok=True)
    write_poller(files.script)
    argv = [python, str(files.script), url, str(files.summary), str(files.stop)]
    argv += ["--interval", str(interval), "--max-seconds", str(max_seconds)]
    # Detached and without inherited pipes, so neither the module nor Ansible's connection waits for it.
    process = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter and the poller written above
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd=files.script.parent,
    )
    files.pid.write_text(str(process.pid), encoding="utf-8")
    return process.pid


def stop_watch(
    files: WatchFiles,
    wait_seconds: float = STOP_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    try:
        pid = int(files.pid.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WatchError(f"no availability watch {files.name} is running: start it with state=started") from None
    except (OSError, ValueError) as exc:
        raise WatchError(f"availability watch {files.name}: cannot read a pid from {files.pid}: {exc}") from exc
    files.stop.touch()
    deadline = clock() + wait_seconds
    while not files.summary.exists():
        if not _alive(pid) and not files.summary.exists():
            _remove(files.pid, files.stop)
            raise WatchError(
                f"availability watch {files.name} (pid {pid}) ended without writing {files.summary}: "
                f"run {files.script} by hand to see why"
            )
        if clock() >= deadline:
            raise WatchError(
                f"availability watch {files.name} (pid {pid}) wrote no {files.summary} "
                f"within {wait_seconds:.0f} s of {files.stop} appearing"
            )
        sleep(0.1)
    try:
        summary = json.loads(files.summary.read_text(encoding="utf-8"))
        result = {key: summary[key] for key in SUMMARY_KEYS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WatchError(f"availability watch {files.name}: {files.summary} holds no summary: {exc!r}") from exc
    _remove(files.pid, files.stop)
    return result


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["started", "stopped"], "required": True},
            "name": {"type": "str", "required": True},
            "url": {"type": "str"},
            "run_dir": {"type": "path", "default": "/run"},
            "interval": {"type": "float", "default": 0.1},
            "max_seconds": {"type": "int", "default": 900},
        },
        required_if=[("state", "started", ("url",))],
        supports_check_mode=False,
    )
    params: dict[str, Any] = module.params
    try:
        files = WatchFiles.of(Path(params["run_dir"]), params["name"])
        if params["state"] == "started":
            pid = start_watch(files, params["url"], params["interval"], params["max_seconds"])
            module.exit_json(changed=True, pid=pid)
        module.exit_json(changed=True, **stop_watch(files))
    except WatchError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
