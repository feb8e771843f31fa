"""Where the access filter's cost goes: Orthanc's CPU time per request with variants of the layer's plugin.

    python -m tests.bench.filter_cost [--rounds 3] [--requests 3000] [--threads 4] [--output build/filter-cost]

On the running simulation stack (playbooks/site.yml with inventories/simulation: service auscat_orthanc on
127.0.0.1:8042), each variant of the layer's own auscat_plugin.py is bind-mounted over the image's copy in turn,
in alternating order over --rounds rounds:

    no-filter         the filter not registered (as with "AccessControl": false)
    true              a filter that only returns True
    true-kept         the same, with the thread's Python state kept (keep_thread_state)
    layer-not-kept    the layer's filter without keep_thread_state
    layer             the layer's plugin as the image has it

Each variant serves --requests GET /instances/{id}/tags (a small JSON answer, where a fixed cost per request
shows most) over --threads keep-alive connections, after a warm-up; reported are Orthanc's CPU time per request
(user + system of the process, from /proc/<pid>/stat) and requests per second, median over rounds. A 200-slice
phantom study is stored first when the server holds no instance, and removed at the end; the service is left
without the mount, as it was. Results: results.json and results.txt under --output.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import stack
from tests.bench.clients import timed_threads
from tests.bench.cpu import process_cpu_seconds
from tests.bench.servers import BenchError, run_command, write_results
from tests.harness import phantoms

PLUGIN = stack.REPOSITORY / "roles" / "orthanc_image" / "files" / "layer" / "auscat_plugin.py"
TARGET = "/usr/local/lib/auscat/auscat_plugin.py"
WARM_UP_REQUESTS = 200
READY_SECONDS = 180
# Each variant: (text of the layer's plugin, its replacement); the layer itself is not mounted.
_FILTER = "def on_http_request(uri: str, **request) -> bool:\n"
_KEEP = "def keep_thread_state() -> None:\n"
_REGISTER = "if ACCESS.enforced:\n"
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "no-filter": ((_REGISTER, "if False:\n"),),
    "true": ((_FILTER, _FILTER + "    return True\n"),),
    "true-kept": ((_FILTER, _FILTER + "    keep_thread_state()\n    return True\n"),),
    "layer-not-kept": ((_KEEP, _KEEP + "    return\n"),),
    "layer": (),
}


def say(message: str) -> None:
    print(message, flush=True)


def variant_text(name: str, plugin: str) -> str:
    text = plugin
    for old, new in VARIANTS[name]:
        if text.count(old) != 1:
            raise BenchError(f"{PLUGIN} no longer holds {old.strip()!r} once: variant {name} cannot be made")
        text = text.replace(old, new)
    return text


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        token = base64.b64encode(f"{args.username}:{args.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.port = args.port

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=self.headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise BenchError(f"{method} {path} answered {response.status}: {data[:200]!r}")
        return data


def service_run(args: argparse.Namespace, *options: str) -> None:
    command = ["docker", "service", "update", "--quiet", "--detach=false", *options, args.service]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def orthanc_pid(args: argparse.Namespace) -> int:
    output = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name={args.service}."],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if len(output) != 1:
        raise BenchError(f"expected one running container of {args.service}, found {len(output)}")
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", output[0]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(inspected.stdout)


def wait_ready(client: Client) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            client.request("GET", "/system")
            return
        except (OSError, BenchError, http.client.HTTPException) as error:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"Orthanc did not answer on 127.0.0.1:{client.port} within {READY_SECONDS} s: {error}"
                ) from error
            time.sleep(1)


def use_variant(args: argparse.Namespace, client: Client, name: str, directory: Path) -> None:
    service_run(args, "--mount-rm", TARGET)
    if VARIANTS[name]:
        service_run(args, "--mount-add", f"type=bind,src={directory / name}.py,dst={TARGET},readonly")
    wait_ready(client)


def load(client: Client, paths: list[str], requests: int, threads: int) -> float:
    """GET the paths in turn over ``threads`` keep-alive connections until ``requests`` were answered; seconds."""

    def work(index: int) -> None:
        connection = client.connection()
        try:
            for number in range(index, requests, threads):
                connection.request("GET", paths[number % len(paths)], headers=client.headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise BenchError(f"GET {paths[number % len(paths)]} answered {response.status}")
        finally:
            connection.close()

    return timed_threads(work, threads)


def measure(args: argparse.Namespace, client: Client, paths: list[str]) -> dict[str, float]:
    load(client, paths, WARM_UP_REQUESTS, args.threads)
    pid = orthanc_pid(args)
    cpu_before = process_cpu_seconds(pid)
    seconds = load(client, paths, args.requests, args.threads)
    cpu_after = process_cpu_seconds(pid)
    if cpu_before is None or cpu_after is None:
        raise BenchError(f"the CPU time of Orthanc (pid {pid}) cannot be read from /proc")
    return {"cpu_us_per_request": (cpu_after - cpu_before) / args.requests * 1e6, "per_second": args.requests / seconds}


def store_phantoms(client: Client) -> str | None:
    """Store a 200-slice study when the server holds no instance; its patient's Orthanc ID, to remove it after."""
    if json.loads(client.request("GET", "/instances?since=0&limit=1")):
        return None
    study = phantoms.make_study(slices=199)
    with tempfile.TemporaryDirectory() as directory:
        for path in phantoms.write_study(study, Path(directory)):
            stored = json.loads(client.request("POST", "/instances", path.read_bytes()))
    return stored["ParentPatient"]


def table(summary: dict[str, dict[str, float]], rounds: int) -> str:
    rows = [f"Orthanc CPU per GET /instances/{{id}}/tags, median over {rounds} rounds", "",
            "| variant | CPU per request (µs) | requests/s | CPU over no-filter (µs) |",
            "|---|---:|---:|---:|"]  # fmt: skip
    base = summary["no-filter"]["cpu_us_per_request"]
    for name, figures in summary.items():
        cpu = figures["cpu_us_per_request"]
        rows.append(f"| {name} | {cpu:.0f} | {figures['per_second']:.0f} | {cpu - base:+.0f} |")
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.filter_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all variants (3)")
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per variant and round (3000)")
    parser.add_argument("--threads", type=int, default=4, help="keep-alive connections (4)")
    parser.add_argument("--service", default="auscat_orthanc", help="the Orthanc service (auscat_orthanc)")
    parser.add_argument("--port", type=int, default=8042, help="its published HTTP port (8042)")
    parser.add_argument("--username", default="orthanc", help="an admin user (the simulation's orthanc)")
    parser.add_argument("--password", default="orthanc", help="its password (the simulation's)")
    parser.add_argument("--output", type=Path, default=stack.REPOSITORY / "build" / "filter-cost")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.requests < args.threads:
        parser.error("--rounds and --threads must be at least 1, and --requests at least --threads")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    client = Client(args)
    wait_ready(client)
    plugin = PLUGIN.read_text(encoding="utf-8")
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"rounds": args.rounds, "requests": args.requests, "threads": args.threads},
        "rounds": [],
    }
    patient = store_phantoms(client)
    with tempfile.TemporaryDirectory(prefix="auscat-filter-cost-") as name:
        directory = Path(name)
        directory.chmod(0o755)  # read by Orthanc's user in the container
        for variant in VARIANTS:
            (directory / f"{variant}.py").write_text(variant_text(variant, plugin), encoding="utf-8")
            (directory / f"{variant}.py").chmod(0o644)
        try:
            paths = [f"/instances/{ident}/tags" for ident in json.loads(client.request("GET", "/instances"))]
            for number in range(args.rounds):
                order = list(VARIANTS) if number % 2 == 0 else list(VARIANTS)[::-1]
                entry = {}
                for variant in order:
                    use_variant(args, client, variant, directory)
                    entry[variant] = measure(args, client, paths)
                    say(f"round {number + 1}/{args.rounds} {variant}: "
                        f"{entry[variant]['cpu_us_per_request']:.0f} µs/request, "
                        f"{entry[variant]['per_second']:.0f} requests/s")  # fmt: skip
                results["rounds"].append(entry)
        finally:
            use_variant(args, client, "layer", directory)
            if patient:
                client.request("DELETE", f"/patients/{patient}")
    results["summary"] = {
        variant: {key: statistics.median(entry[variant][key] for entry in results["rounds"])
                  for key in ("cpu_us_per_request", "per_second")}
        for variant in VARIANTS
    }  # fmt: skip
    results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = table(results["summary"], args.rounds)
    write_results(args.output, results, text)
    say(text)
    return 0


if __name__ == "__main__":
    run_command(main, "filter cost benchmark")
