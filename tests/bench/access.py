"""Access benchmark: what the HTTP access filter and its audit trail cost, side by side in one run.

    python -m tests.bench.access [--instances 400] [--rounds 5] [--threads 4] [--output build/access-bench]

Two stacks from the same image with the role's defaults, rolled out by playbooks/site.yml from
tests/bench/inventory/access-on (roles: the filter decides and audits every request) and access-off
("AccessControl": false: no filter registered, no HTTP audit line). Every round runs on both servers, in
alternating order, with --threads keep-alive connections each:

    ingest   POST /instances of --instances small CT slices (a few kB: the per-request cost shows most)
    file     GET /instances/{id}/file of each instance just stored (what pyorthanc and PyDicer fetch)
    tags     GET /instances/{id}/tags of each (a small JSON answer)

With the filter on, ingest runs as an uploader and the reads as a researcher, whose role has the most rules.
Reported per operation: requests per second on each server (median over rounds) and the paired ratio
on / off of each round, its median and range; the goal is a ratio of at least 0.90 (at most 10 % slower).
Results: results.json and results.txt under --output. The stacks and their data are removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import http.client
import secrets
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench import payload, stack
from tests.bench.clients import REST_TIMEOUT_SECONDS, Timed, rest_store, timed_threads
from tests.bench.servers import BenchError, Server, remove_tree, run_command, wait_healthy, write_results

WORK_ROOT = Path("/var/lib/auscat-bench-access")
SERVERS = ("access-on", "access-off")
UPLOADER, READER, ADMIN = "bench", "reader", "bench-admin"
OPERATIONS = ("ingest", "file", "tags")
GOAL_RATIO = 0.90


def say(message: str) -> None:
    print(message, flush=True)


class Reader:
    """GET requests over one keep-alive connection as one user; a non-200 answer is an error."""

    def __init__(self, server: Server, username: str) -> None:
        self.server = server
        self.connection = http.client.HTTPConnection(server.host, server.http_port, timeout=REST_TIMEOUT_SECONDS)
        credentials = base64.b64encode(f"{username}:{server.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}"}

    def get(self, path: str) -> int:
        self.connection.request("GET", path, headers=self.headers)
        reply = self.connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise BenchError(f"GET {path} on {self.server.name}: HTTP {reply.status} {body[:200]!r}")
        return len(body)

    def close(self) -> None:
        self.connection.close()


def read_all(server: Server, paths: Sequence[str], threads: int) -> Timed:
    """GET every path, split over ``threads`` keep-alive connections as the reader; wall seconds."""
    readers = [Reader(server, READER) for _ in range(threads)]
    for reader in readers:
        reader.connection.connect()
    shares = [paths[index::threads] for index in range(threads)]
    sizes = [0] * threads

    def read(index: int) -> None:
        for path in shares[index]:
            sizes[index] += readers[index].get(path)

    try:
        seconds = timed_threads(read, threads)
    finally:
        for reader in readers:
            reader.close()
    return Timed(seconds, transferred=sum(sizes))


def instances_of(server: Server, batch: payload.Batch) -> list[str]:
    """The Orthanc IDs of a batch's instances, through its studies."""
    client = dataclasses.replace(server, username=ADMIN).client()
    found: list[str] = []
    for study_uid in batch.study_uids:
        matches = client.session.post(f"{server.url}/tools/lookup", data=study_uid, timeout=REST_TIMEOUT_SECONDS).json()
        study = next(match["ID"] for match in matches if match["Type"] == "Study")
        found += [item["ID"] for item in client.get(f"/studies/{study}/instances").json()]
    if len(found) != batch.instances:
        raise BenchError(f"{server.name} holds {len(found)} of the {batch.instances} instances just stored")
    return found


def one_round(server: Server, stamper: payload.Stamper, args: argparse.Namespace) -> dict[str, float]:
    """Requests per second of each operation on one server."""
    batch = stamper.batch(args.instances, args.threads)
    ingest = rest_store(server, [part.instances for part in batch.parts])
    ids = instances_of(server, batch)
    files = read_all(server, [f"/instances/{instance}/file" for instance in ids], args.threads)
    tags = read_all(server, [f"/instances/{instance}/tags" for instance in ids], args.threads)
    return {
        "ingest": batch.instances / ingest.seconds,
        "file": len(ids) / files.seconds,
        "tags": len(ids) / tags.seconds,
    }


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per operation: median requests/s on each server and the paired on/off ratios of the rounds."""
    summary = {}
    for operation in OPERATIONS:
        ratios = [entry["access-on"][operation] / entry["access-off"][operation] for entry in rounds]
        summary[operation] = {
            "on_per_second": statistics.median(entry["access-on"][operation] for entry in rounds),
            "off_per_second": statistics.median(entry["access-off"][operation] for entry in rounds),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "goal_met": statistics.median(ratios) >= GOAL_RATIO,
        }
    return summary


def table(summary: dict[str, dict[str, Any]], rounds: int) -> str:
    lines = [
        f"HTTP access filter on vs off, {rounds} paired rounds (goal: on/off >= {GOAL_RATIO:.2f})",
        f"{'operation':<10}{'on req/s':>10}{'off req/s':>11}{'on/off':>8}  range        goal",
    ]
    for operation, entry in summary.items():
        lines.append(
            f"{operation:<10}{entry['on_per_second']:>10.1f}{entry['off_per_second']:>11.1f}"
            f"{entry['ratio_median']:>8.3f}  {entry['ratio_min']:.3f}-{entry['ratio_max']:.3f}  "
            f"{'met' if entry['goal_met'] else 'MISSED'}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.access", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--instances", type=int, default=400, help="instances per round and server (400)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (5)")
    parser.add_argument("--threads", type=int, default=4, help="connections per operation (4)")
    parser.add_argument("--output", type=Path, default=stack.REPOSITORY / "build" / "access-bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 instances, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.rounds = 100, 2
    if args.instances < args.threads or args.rounds < 1 or args.threads < 1:
        parser.error("--instances must be at least --threads, and --rounds and --threads at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"instances": args.instances, "rounds": args.rounds, "threads": args.threads},
        "rounds": [],
    }
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(remove_tree, WORK_ROOT)
        vars_file = stack.write_users_file(WORK_ROOT / "secrets", dict.fromkeys((ADMIN, UPLOADER, READER), password))
        servers = {}
        for name in SERVERS:
            item = stack.Stack.for_backend(name)
            cleanup.callback(stack.remove, item)
            say(f"deploying stack {item.name} with playbooks/site.yml ...")
            stack.deploy(item, vars_file, args.output / f"playbook-{name}.log")
            servers[name] = Server(name, item.http_port, item.dicom_port, password, username=UPLOADER)
            wait_healthy(dataclasses.replace(servers[name], username=ADMIN))
        results["image"] = stack.image_of(stack.Stack.for_backend(SERVERS[0]))
        stamper = payload.Stamper([payload.small_template()])
        for number in range(args.rounds):
            order = SERVERS if number % 2 == 0 else SERVERS[::-1]
            entry = {name: one_round(servers[name], stamper, args) for name in order}
            results["rounds"].append(entry)
            say(f"round {number + 1}/{args.rounds}: " + ", ".join(
                f"{op} {entry['access-on'][op] / entry['access-off'][op]:.3f}" for op in OPERATIONS
            ) + " (on/off)")  # fmt: skip
        results["summary"] = summarise(results["rounds"])
        results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = table(results["summary"], args.rounds)
    write_results(args.output, results, text)
    say(text)
    say(f"results: {args.output / 'results.json'}")
    return 0


if __name__ == "__main__":
    run_command(main, "access benchmark")
