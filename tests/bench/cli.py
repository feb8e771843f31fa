"""Command line of the benchmark: bring the servers up, measure, report, tear everything down."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import secrets
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tests.bench import analysis, bare, clients, machine, measure, payload, report, stack, stats, stock
from tests.bench.servers import (
    USERNAME,
    WORK_ROOT,
    BenchError,
    Server,
    container_pid,
    remove_tree,
    run,
    wait_healthy,
)

BACKENDS = ("sqlite", "postgresql")
SERVER_OF_BACKEND = {"sqlite": "deployed", "postgresql": "postgresql"}
DEFAULTS = {"growth": 100_000, "rounds": 3, "instances": 120, "finds": 50}
QUICK = {"growth": 2_000, "rounds": 1, "instances": 16, "finds": 10}
# REST threads that grow each index, the same for both so that their rates compare. Debian's
# PostgreSQL index plugin (5.0) runs SERIALIZABLE transactions that all update one statistics row:
# over more than one index connection parallel writers collide (the client resends on HTTP 503).
GROWTH_THREADS = {"sqlite": 4, "postgresql": 4}
INSTANCES_PER_PATIENT = 100
CONTAINER_HTTP_PORT = 8042
CONTAINER_DICOM_PORT = 4242
MAX_TEMPLATES = 200
SCRATCH_PARENT = Path("/dev/shm")  # noqa: S108 - client files live in memory, off the disk under test
REDACTED = "<redacted>"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Benchmark the deployed AusCAT Orthanc against stock and bare Orthanc; "
        "brings up its own servers and removes them at the end.",
        epilog="Run time on a 2-core host: about an hour with the defaults (growing each index to 100,000 "
        "instances is most of it), about 3 minutes with --quick.",
    )
    parser.add_argument("--output", type=Path, default=stack.REPOSITORY / "build" / "bench", help="default build/bench")
    parser.add_argument("--growth", type=int, help=f"instances to grow each index to (default {DEFAULTS['growth']})")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds of the side-by-side ingest runs (default {DEFAULTS['rounds']})"
    )
    parser.add_argument(
        "--instances",
        type=int,
        help=f"CT slices per ingest run, split over its associations (default {DEFAULTS['instances']})",
    )
    parser.add_argument(
        "--finds", type=int, help=f"finds timed at each growth checkpoint (default {DEFAULTS['finds']})"
    )
    parser.add_argument(
        "--growth-threads",
        type=parse_threads,
        default={},
        help="REST threads that grow the archive: N for every backend, or BACKEND=N,... (default "
        + ",".join(f"{backend}={count}" for backend, count in GROWTH_THREADS.items())
        + ")",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="index backends to deploy and grow, comma-separated (default sqlite,postgresql); "
        "the SQLite stack is always deployed: it is the reference of every ratio",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run of a few minutes")
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the stacks, the stock container and {WORK_ROOT} (the bare Orthanc is stopped all the same)",
    )
    args = parser.parse_args(argv)
    for key, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.backends = [backend.strip() for backend in args.backends.split(",") if backend.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown or not args.backends:
        parser.error(f"--backends takes {' and/or '.join(BACKENDS)}, not {args.backends!r}")
    if args.instances < max(measure.CONCURRENCIES):
        parser.error(f"--instances must be at least {max(measure.CONCURRENCIES)} (one per association)")
    if args.growth < 1 or args.rounds < 1 or args.finds < 1:
        parser.error("--growth, --rounds and --finds must be positive")
    args.growth_threads = {**GROWTH_THREADS, **args.growth_threads}
    return args


def parse_threads(text: str) -> dict[str, int]:
    """``N`` (every backend) or ``BACKEND=N,...``, each N at least 1."""
    try:
        if "=" not in text:
            return dict.fromkeys(BACKENDS, _positive(int(text)))
        threads = {}
        for item in text.split(","):
            backend, _, count = item.partition("=")
            if backend.strip() not in BACKENDS:
                raise ValueError(f"unknown backend {backend.strip()!r}")
            threads[backend.strip()] = _positive(int(count))
        return threads
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def _positive(count: int) -> int:
    if count < 1:
        raise ValueError("thread counts must be at least 1")
    return count


def redact(value: Any) -> Any:
    """A configuration with every user list and password replaced, safe to write to results.json."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key == "RegisteredUsers" or "password" in key.lower() else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def write_vars_file(directory: Path, password: str) -> Path:
    """The playbook's -e @file with the benchmark user's password, readable by root only."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "bench-users.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump({"orthanc_registered_users": {USERNAME: password}}, stream)
    return path


def say(message: str) -> None:
    print(message, flush=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Benchmark:
    """One run: servers brought up on an ExitStack (so that they come down in reverse), measurements, results."""

    def __init__(self, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> None:
        self.args = args
        self.cleanup = cleanup
        self.logs = args.output / "logs"
        self.servers: dict[str, Server] = {}
        self.samples: list[stats.Sample] = []
        self.growth: dict[str, dict[str, Any]] = {}
        self.storescu = "storescu"
        self.failures: list[str] = []
        self.results: dict[str, Any] = {
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "complete": False,
            "error": None,
            "settings": {
                "instances_per_run": args.instances,
                "rounds": args.rounds,
                "concurrencies": list(measure.CONCURRENCIES),
                "clients": list(measure.CLIENTS),
                "growth": args.growth,
                "growth_threads": args.growth_threads,
                "growth_instances_per_patient": INSTANCES_PER_PATIENT,
                "finds_per_checkpoint": args.finds,
                "backends": args.backends,
                "quick": args.quick,
                "storescu_options": "--required, TCP_NODELAY=1",
                "pynetdicom_options": "TCP_NODELAY on the socket, dataset bytes sent from file as encoded",
            },
            "servers": {},
        }
        self.started = time.monotonic()

    def on_exit(self, callback: Callable[[], None], what: str, keep: bool = False) -> None:
        """Run ``callback`` at the end (unless ``keep``), reporting rather than raising its failure."""

        def guarded() -> None:
            if keep:
                say(f"kept: {what}")
                return
            try:
                callback()
                say(f"removed: {what}")
            except Exception as error:
                say(f"cleanup failed: {what}: {error}")

        self.cleanup.callback(guarded)

    def bring_up(self) -> None:
        keep = self.args.keep
        self.storescu = clients.ensure_dcmtk()
        self.results["machine"] = machine.describe(WORK_ROOT, self.storescu)
        self.on_exit(lambda: remove_tree(WORK_ROOT), str(WORK_ROOT), keep)
        password = secrets.token_urlsafe(24)
        vars_file = write_vars_file(WORK_ROOT / "secrets", password)
        self.on_exit(vars_file.unlink, f"{vars_file}", keep)

        stacks = {backend: stack.Stack.for_backend(backend) for backend in ["sqlite", *self.args.backends]}
        for backend, item in stacks.items():
            name = SERVER_OF_BACKEND[backend]
            say(f"deploying stack {item.name} ({backend} index) with playbooks/site.yml ...")
            self.on_exit(lambda item=item: stack.remove(item), f"stack {item.name} and its secrets", keep)
            started = time.monotonic()
            stack.deploy(item, vars_file, self.logs / f"playbook-{backend}.log")
            server = item.server(name, password)
            self.add_server(server, time.monotonic() - started)
            server.pid = container_pid(stack.running_container(item))
            if backend == "sqlite":
                self.add_direct_view(item, server)
            self.results["servers"][name]["config"] = redact(stack.merged_config(item))
            self.results["servers"][name]["environment"] = stack.container_spec(item).get("Env") or []

        reference = stacks["sqlite"]
        image = stack.image_of(reference)
        image_info = json.loads(run(["docker", "image", "inspect", image], f"inspecting {image}"))[0]
        self.results["image"] = {"ref": image, "id": image_info["Id"], "labels": image_info["Config"].get("Labels")}

        say(f"starting stock Orthanc from {image} ...")
        self.on_exit(stock.stop, f"container {stock.CONTAINER}", keep)
        started = time.monotonic()
        server = stock.start(image, password)
        self.add_server(server, time.monotonic() - started)
        server.pid = container_pid(stock.CONTAINER)
        self.results["servers"]["stock"]["config"] = redact(stock.stock_config(password))
        self.results["servers"]["stock"]["environment"] = image_info["Config"].get("Env") or []

        say(f"exporting {image} to {bare.ROOTFS} and starting bare Orthanc ...")
        started = time.monotonic()
        bare.export_rootfs(image, image_info["Id"])
        service_env = stack.container_spec(reference).get("Env") or []
        process = bare.Bare(
            image=image,
            image_config=image_info["Config"],
            service_env=service_env,
            config=stack.merged_config(reference),
            password=password,
            log_path=self.logs / "bare.log",
        )
        self.on_exit(process.stop, "bare Orthanc process and its mounts")
        self.add_server(process.start(), time.monotonic() - started)
        self.results["servers"]["bare"]["config"] = redact(bare.bare_config(process.config))
        self.results["servers"]["bare"]["environment"] = bare.environment(
            image_info["Config"].get("Env") or [], service_env
        )

    def add_direct_view(self, item: stack.Stack, server: Server) -> None:
        """The deployed Orthanc again, at its container's address: what the published port's docker-proxy costs."""
        address = stack.gateway_address(item)
        direct = Server(
            name=analysis.DIRECT,
            http_port=CONTAINER_HTTP_PORT,
            dicom_port=CONTAINER_DICOM_PORT,
            password=server.password,
            logs=server.logs,
            description=f"{item.service} at its docker_gwbridge address {address}, no docker-proxy",
            pid=server.pid,
            host=address,
        )
        self.add_server(direct, 0.0)

    def add_server(self, server: Server, startup_seconds: float) -> None:
        system = wait_healthy(server)
        self.servers[server.name] = server
        self.results["servers"][server.name] = {
            "url": server.url,
            "dicom_port": server.dicom_port,
            "aet": server.aet,
            "description": server.description,
            "orthanc_version": system.get("Version"),
            "database_version": system.get("DatabaseVersion"),
            "startup_seconds": round(startup_seconds, 1),
        }
        say(f"  {server.name} is up: Orthanc {system.get('Version')} at {server.url}, DICOM port {server.dicom_port}")

    def measure(self) -> None:
        args = self.args
        storescu = self.storescu
        say(f"generating {min(args.instances, MAX_TEMPLATES)} CT slice templates ...")
        stamper = payload.Stamper(payload.ct_templates(min(args.instances, MAX_TEMPLATES)))
        self.results["settings"]["instance_mb"] = len(stamper.templates[0]) / stats.MB

        pool = clients.PynetdicomPool(max(measure.CONCURRENCIES))
        self.on_exit(pool.close, "pynetdicom worker processes")
        scratch_parent = SCRATCH_PARENT if SCRATCH_PARENT.is_dir() else None
        scratch = Path(tempfile.mkdtemp(prefix="auscat-bench-", dir=scratch_parent))
        self.on_exit(partial(shutil.rmtree, scratch, True), f"client files in {scratch}")

        order = [name for name in report.SERVER_ORDER if name in self.servers]
        plan = measure.Plan(instances=args.instances, rounds=args.rounds)
        ingest = measure.Ingest(
            [self.servers[name] for name in order],
            plan,
            stamper,
            scratch,
            WORK_ROOT / "disk-probe",
            storescu,
            pool,
            say,
        )
        say(f"ingest: {args.rounds} round(s) of {args.instances} CT slices per run on {', '.join(order)}")
        try:
            ingest.run()
        finally:
            self.samples = ingest.samples
            self.failures = ingest.failures
            self.results["background_load"] = ingest.background

        checkpoints = tuple(stats.checkpoints(args.growth))
        rng = random.Random(20261127)  # noqa: S311 - picks PatientIDs to query, not a secret
        for backend in args.backends:
            threads = args.growth_threads[backend]
            growth_plan = measure.GrowthPlan(args.growth, threads, args.finds, INSTANCES_PER_PATIENT, checkpoints)
            server = self.servers[SERVER_OF_BACKEND[backend]]
            say(f"growth on {backend} ({server.name}): emptied, then 0 -> {args.growth} instances")
            measure.clear(server)
            self.growth[backend] = measure.grow(server, backend, growth_plan, rng, say)

    def finish(self, error: str | None) -> dict[str, Any]:
        """The results document from whatever was measured."""
        results = self.results
        results["error"] = error
        results["complete"] = error is None
        results["duration_seconds"] = round(time.monotonic() - self.started, 1)
        summaries = stats.summarise(self.samples)
        ratios = analysis.build_ratios(summaries, measure.CLIENTS, measure.CONCURRENCIES, list(self.servers))
        goals = analysis.build_goals(ratios, measure.CLIENTS, self.growth)
        results["samples"] = [sample.to_json() for sample in self.samples]
        results["summaries"] = [summary.to_json() for summary in summaries]
        results["growth"] = self.growth
        results["ratios"] = [item.to_json() for item in ratios]
        results["goals"] = [goal.to_json() for goal in goals]
        results["failures"] = self.failures
        return results


def write_outputs(results: dict[str, Any], output: Path) -> str:
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "results.json")
    table = report.format_table(results)
    (output / "results.txt").write_text(table, encoding="utf-8")
    if results.get("samples") or results.get("growth"):
        report.plot(results, output / "results.png")
    return table


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        say("error: the benchmark must run as root (it deploys stacks, mounts for chroot, owns data as UID 4242)")
        return 2
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    error: str | None = None
    status = 0
    with contextlib.ExitStack() as cleanup:
        benchmark = Benchmark(args, cleanup)
        try:
            benchmark.bring_up()
            benchmark.measure()
        except BenchError as failure:
            error, status = str(failure), 1
        except KeyboardInterrupt:
            error, status = "interrupted", 130
        except Exception as failure:
            error, status = f"{type(failure).__name__}: {failure}\n{traceback.format_exc()}", 1
        # A second Ctrl-C (or a TERM) must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if error:
            say(f"\nbenchmark failed: {error}\ntearing down ...")
        else:
            say("measurements done; tearing down ...")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    table = write_outputs(benchmark.finish(error), args.output)
    say("\n" + table)
    say(f"results: {args.output / 'results.json'}, {args.output / 'results.txt'}, {args.output / 'results.png'}")
    return status
