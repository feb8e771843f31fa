"""What every benchmarked Orthanc has in common: where it answers, how to wait for it, what its logs say."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import requests

from tests.harness.orthanc import Orthanc

HOST = "127.0.0.1"
AET = "ORTHANC"
USERNAME = "bench"
HEALTH_TIMEOUT_SECONDS = 180
COMMAND_TIMEOUT_SECONDS = 600
# Every directory the benchmark writes outside its output directory lives below this one.
WORK_ROOT = Path("/var/lib/auscat-bench")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


class ServerGone(BenchError):
    """An Orthanc process under test ended: nothing measured after that would mean anything."""


@dataclass
class Server:
    """One Orthanc under test, reached on 127.0.0.1."""

    name: str
    http_port: int
    dicom_port: int
    password: str = field(repr=False)
    logs: Callable[[], str] = field(repr=False, default=lambda: "")
    username: str = USERNAME
    aet: str = AET
    description: str = ""
    pid: int | None = None  # the Orthanc process, as the host sees it
    host: str = HOST  # 127.0.0.1, or the address of a container this benchmark created

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def client(self) -> Orthanc:
        return Orthanc(self.url, self.username, self.password)


def run(command: Sequence[str], what: str, timeout: float = COMMAND_TIMEOUT_SECONDS, **kwargs) -> str:
    """Run a command; its standard output, or BenchError naming ``what`` with the command's error output."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except FileNotFoundError as error:
        raise BenchError(f"{what}: {command[0]} is not installed ({error})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: {' '.join(command[:3])} ... did not finish within {timeout} s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise BenchError(f"{what}: {' '.join(command[:3])} ... exited with {done.returncode}: {output}")
    return done.stdout


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def require_free_ports(owner: str, ports: Sequence[int]) -> None:
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        raise BenchError(
            f"{owner}: port(s) {', '.join(map(str, busy))} on {HOST} are already in use "
            "(a previous benchmark still running? `ss -ltnp` names the process)"
        )


def wait_healthy(server: Server, timeout: float = HEALTH_TIMEOUT_SECONDS) -> dict:
    """Poll GET /system with the server's credentials until it answers; its JSON, or BenchError with the logs."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    client = server.client()
    while time.monotonic() < deadline:
        try:
            reply = client.session.get(server.url + "/system", timeout=5)
            reply.raise_for_status()
            system = reply.json()
            client.get("/statistics")  # an authenticated request that reads the index
            return system
        except (requests.RequestException, ValueError) as error:
            last_error = f"{type(error).__name__}: {error}"
        time.sleep(1)
    raise BenchError(
        f"{server.name} Orthanc ({server.description or server.url}) never became healthy within {timeout:.0f} s; "
        f"last error of GET {server.url}/system: {last_error}\n--- last log lines ---\n{server.logs()}"
    )


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read {path}: {error.strerror})"


def container_pid(container: str) -> int | None:
    """Host PID of a container's main process (Orthanc, which the entrypoint execs)."""
    output = run(["docker", "inspect", "--format", "{{.State.Pid}}", container], f"inspecting container {container}")
    return int(output.strip()) or None


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    root = path.resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        # Field 5 is the mount point, with spaces and other specials octal-escaped.
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(found, key=lambda item: len(item.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a directory tree, refusing to when anything is mounted inside it (a bound /dev, say)."""
    mounted = mounts_under(path)
    if mounted:
        raise BenchError(f"not removing {path}: {', '.join(map(str, mounted))} still mounted there")
    if path.exists():
        shutil.rmtree(path)


def write_results(output: Path, results: dict[str, Any], text: str) -> None:
    """A benchmark's figures as results.json and its table as results.txt under ``output``."""
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output / "results.txt").write_text(text + "\n", encoding="utf-8")


def run_command(main: Callable[[list[str]], int], what: str) -> NoReturn:
    """Exit with ``main(sys.argv[1:])``; a BenchError is printed as "<what> failed: ..." (1), ^C exits 130."""
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"{what} failed: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
