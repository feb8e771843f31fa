"""Lifecycle benchmark: what backup, restore, inventory and upgrade cost as the archive grows.

    python -m tests.bench.lifecycle [--sizes 10000,30000,100000] [--backends sqlite postgresql]
                                    [--ct-gb 10] [--quick] [--output build/lifecycle-bench]

Each backend gets its own stack (tests/bench/inventory/lifecycle-<backend>, the role's defaults),
rolled out with playbooks/site.yml. The archive grows over REST to each size in turn (small CT
slices of a few kB; then, with --ct-gb, 0.5 MB CT slices on top). At each size, side by side:

    tar backup       the path replaced: Orthanc stopped while tar copies the data directory
    backup           playbooks/backup.yml into an empty restic repository (a first, full backup)
    incremental      playbooks/backup.yml again after 1 % more instances arrived
    inventory        the inventory the role takes: auscat_tool inventory (the index through
                     /tools/find) with SQLite, one query of the index with PostgreSQL; at the first
                     size the per-instance REST inventory it replaced and, with PostgreSQL, the
                     /tools/find one
    restore          playbooks/restore.yml of the latest backup
    upgrade          playbooks/upgrade.yml to a second layer version of the same Orthanc (backup,
                     gate, switch), and back at the next size

HTTP unavailability is measured from here by polling /system every 0.1 s (any answer counts as up).
Results: results.json, results.txt (table and slopes) and results.png under --output. The stacks,
their data and repositories are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

from tests.bench import clients, payload, stack
from tests.bench.servers import USERNAME, BenchError, Server, remove_tree, run, wait_healthy

sys.path.insert(0, str(stack.REPOSITORY / "library"))
import orthanc_availability

WORK_ROOT = Path("/var/lib/auscat-lcbench")
SIZES = (10_000, 30_000, 100_000)
QUICK_SIZES = (1_000, 3_000, 10_000)
THREADS = 4
PER_PATIENT = 100
CT_SLICE_BYTES = 512 * 512 * 2
POLL_SECONDS = 0.1
TOOL = "/usr/local/lib/auscat/auscat_tool.py"
# The role's backup helper, run from the checkout (the same file the role installs on the host, where
# the orthanc_service module lies beside it).
HELPER = stack.REPOSITORY / "roles" / "orthanc_lifecycle" / "files" / "auscat_backup.py"
SECOND_TAG_SUFFIX = "0"  # 1.12.7-6 -> 1.12.7-60: a second layer version of the same Orthanc


def say(message: str) -> None:
    print(message, flush=True)


def load_poller() -> ModuleType:
    """The poller orthanc_availability runs on the host, as a module: the same measurement as the playbooks'."""
    path = WORK_ROOT / "auscat-availability-poller.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    orthanc_availability.write_poller(path)
    spec = importlib.util.spec_from_file_location("auscat_availability_poller", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load the availability poller from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Availability:
    """Polls Orthanc's HTTP port in a thread while a step runs (the poller of orthanc_availability)."""

    poller: ModuleType | None = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if Availability.poller is None:
            Availability.poller = load_poller()
        poller = Availability.poller
        self.result = poller.measure(
            probe=lambda: poller.is_up(self.url),
            should_stop=self.stop.is_set,
            interval=POLL_SECONDS,
            max_seconds=7200,
        )

    def __enter__(self) -> Availability:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def down(self) -> float:
        return float(self.result.get("total_downtime_seconds", 0.0))


@contextlib.contextmanager
def timed(into: dict[str, Any], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - started, 2)


class Run:
    """One backend's stack, its growing archive and the measurements at each size."""

    def __init__(self, backend: str, vars_file: Path, password: str, logs: Path) -> None:
        self.backend = backend
        self.stack = stack.Stack.for_backend(f"lifecycle-{backend}")
        self.vars_file = vars_file
        self.logs = logs
        self.server = Server(
            name=self.stack.name,
            http_port=self.stack.http_port,
            dicom_port=self.stack.dicom_port,
            password=password,
            logs=lambda: stack.service_logs(self.stack.service),
        )
        self.small = payload.Growth(payload.small_template(), payload.new_token(), PER_PATIENT)
        self.ct: payload.Growth | None = None
        self.stored = 0
        self.ct_stored = 0
        self.tags: tuple[str, str] = ("", "")
        self.second_image = ""
        self.playbooks = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stack.http_port}/system"

    def playbook(self, playbook: str, extra: dict | None = None) -> str:
        self.playbooks += 1
        log = self.logs / f"{self.backend}-{self.playbooks:03d}-{playbook.removesuffix('.yml')}.log"
        stack.deploy(self.stack, self.vars_file, log, playbook, extra)
        return " ".join(log.read_text(encoding="utf-8").split())

    def deploy(self) -> None:
        say(f"{self.backend}: deploying {self.stack.name} with playbooks/site.yml ...")
        self.playbook("site.yml")
        wait_healthy(self.server)
        name, tag = stack.image_of(self.stack).rsplit(":", 1)
        # The upgrades alternate between this tag and a second layer version of the same Orthanc,
        # which playbooks/upgrade.yml builds like any target: a real stop-first switch each time.
        self.tags = (tag, tag + SECOND_TAG_SUFFIX)
        self.second_image = f"{name}:{self.tags[1]}"

    def grow(self, total: int) -> float:
        """Store small instances until the archive holds ``total`` of them; returns the seconds taken."""
        start, self.stored = self.stored, total
        shares = [self.small.share(start, total, index, THREADS) for index in range(THREADS)]
        return clients.rest_store(self.server, shares).seconds

    def grow_ct(self, gigabytes: float) -> float:
        if self.ct is None:
            self.ct = payload.Growth(payload.ct_templates(8)[0], payload.new_token(), PER_PATIENT)
        total = int(gigabytes * 1e9 / CT_SLICE_BYTES)
        start, self.ct_stored = self.ct_stored, total
        shares = [self.ct.share(start, total, index, THREADS) for index in range(THREADS)]
        return clients.rest_store(self.server, shares).seconds

    def instances(self) -> int:
        return int(self.server.client().get("/statistics").json()["CountInstances"])

    def container(self) -> str:
        return stack.running_container(self.stack)

    def inventory(self) -> dict[str, Any]:
        """The inventory the role takes: from the PostgreSQL index itself, or through Orthanc for SQLite."""
        if self.backend == "postgresql":
            command = [sys.executable, str(HELPER), "--repository", "-", "--password-file", "-", "--stack"]
            command += [self.stack.name, "inventory-postgresql", "--service", f"{self.stack.name}_postgresql"]
            # The helper finds the orthanc_service module beside it on the host, here in library/.
            env = {**os.environ, "PYTHONPATH": str(stack.REPOSITORY / "library")}
            return json.loads(run(command, "inventory", 3600, env=env))
        return self.find_inventory()

    def find_inventory(self) -> dict[str, Any]:
        """auscat_tool inventory: the index through Orthanc's /tools/find with the attachments."""
        return json.loads(run(["docker", "exec", self.container(), "python3", TOOL, "inventory"], "inventory", 3600))

    def rest_inventory(self) -> dict[str, Any]:
        """The inventory as it was taken before: one REST request per instance for its MD5."""
        client = self.server.client()
        ids: list[str] = []
        while page := client.get(f"/instances?since={len(ids)}&limit=1000").json():
            ids.extend(page)
        lines = sorted(f"{i} {client.get(f'/instances/{i}/attachments/dicom/md5').text.strip()}\n" for i in ids)
        return {"instances": len(ids), "digest": hashlib.sha256("".join(lines).encode()).hexdigest()}

    def tar_backup(self, into: dict[str, Any]) -> None:
        """The replaced path: scale to 0, tar the data directory, scale to 1, wait until healthy."""
        target = WORK_ROOT / "tar" / f"{self.backend}.tar"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Availability(self.url) as watch, timed(into, "tar_backup_s"):
            run(["docker", "service", "scale", "--detach", f"{self.stack.service}=0"], "stopping Orthanc")
            while run(
                ["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.stack.service}"],
                "waiting for Orthanc to stop",
            ).strip():
                time.sleep(0.2)
            run(["tar", "--create", "--file", str(target), "-C", str(self.stack.data_dir), "."], "tar", 7200)
            run(["docker", "service", "scale", "--detach", f"{self.stack.service}=1"], "starting Orthanc")
            wait_healthy(self.server)
        into["tar_backup_down_s"] = watch.down
        into["tar_bytes"] = target.stat().st_size
        target.unlink()

    def fresh_repository(self) -> None:
        """An empty repository, so that the next backup is a first, full one (the password file stays)."""
        remove_tree(WORK_ROOT / self.backend / "restic")

    def backup(self, into: dict[str, Any], key: str) -> None:
        with Availability(self.url) as watch, timed(into, f"{key}_s"):
            output = self.playbook("backup.yml")
        into[f"{key}_down_s"] = watch.down
        reported = re.search(r"storage pass (\d+) new files \((\d+) bytes added\) in ([0-9.]+) s", output)
        if reported:
            into[f"{key}_new_files"], into[f"{key}_bytes_added"] = int(reported[1]), int(reported[2])
            into[f"{key}_storage_pass_s"] = float(reported[3])  # restic's own time for the storage files

    def restore(self, into: dict[str, Any]) -> None:
        with Availability(self.url) as watch, timed(into, "restore_s"):
            output = self.playbook("restore.yml")
        into["restore_down_s"] = watch.down
        if "identical to the manifest of the backup" not in output:
            raise BenchError(f"restore on {self.stack.name} did not report an identical archive")
        for aside in self.stack.data_dir.parent.glob(f"{self.stack.data_dir.name}.before-restore-*"):
            remove_tree(aside)
        for aside in self.stack.data_dir.parent.glob("index.before-restore-*"):
            remove_tree(aside)

    def upgrade(self, into: dict[str, Any]) -> None:
        current = stack.image_of(self.stack).rsplit(":", 1)[1]
        target = self.tags[1] if current == self.tags[0] else self.tags[0]
        with Availability(self.url) as watch, timed(into, "upgrade_s"):
            output = self.playbook("upgrade.yml", {"orthanc_image_tag": target})
        into["upgrade_down_s"] = watch.down
        if "Upgraded " not in output:
            raise BenchError(f"upgrade of {self.stack.name} to {target} did not report success")

    def measure(self, label: str, first: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"backend": self.backend, "size": label, "instances": self.instances()}
        row["data_bytes"] = int(run(["du", "-sb", str(self.stack.data_dir)], "du").split()[0])
        say(f"{self.backend} {label}: {row['instances']} instances, {row['data_bytes'] / 1e9:.2f} GB")
        with timed(row, "inventory_s"):
            inventory = self.inventory()
        if inventory["instances"] != row["instances"]:
            raise BenchError(f"inventory lists {inventory['instances']} instances, /statistics {row['instances']}")
        if first:
            with timed(row, "rest_inventory_s"):
                old = self.rest_inventory()
            if old["digest"] != inventory["digest"]:
                raise BenchError("the per-instance REST inventory and the index inventory disagree")
            if self.backend == "postgresql":
                with timed(row, "find_inventory_s"):
                    found = self.find_inventory()
                if found["digest"] != inventory["digest"]:
                    raise BenchError("the PostgreSQL inventory and the /tools/find one disagree")
        self.tar_backup(row)
        self.fresh_repository()
        self.backup(row, "backup")
        grown = max(1, row["instances"] // 100)
        self.small_extra(grown)
        row["incremental_new_instances"] = grown
        self.backup(row, "incremental")
        self.restore(row)
        self.upgrade(row)
        say(
            f"  inventory {row['inventory_s']} s; tar {row['tar_backup_s']} s (down {row['tar_backup_down_s']} s); "
            f"backup {row['backup_s']} s (down {row['backup_down_s']} s); incremental {row['incremental_s']} s "
            f"(down {row['incremental_down_s']} s); restore {row['restore_s']} s; "
            f"upgrade {row['upgrade_s']} s (down {row['upgrade_down_s']} s)"
        )
        return row

    def small_extra(self, count: int) -> None:
        self.grow(self.stored + count)

    def remove(self) -> None:
        stack.remove(self.stack)
        remove_tree(WORK_ROOT / self.backend)
        if self.second_image:
            run(["docker", "image", "rm", "--force", self.second_image], f"removing {self.second_image}")


def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares seconds per 10,000 instances of ``key`` over the rows."""
    points = [(row["instances"], row[key]) for row in rows if key in row]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread * 10_000, 3) if spread else None


METRICS = (
    ("inventory_s", "inventory (s)"),
    ("rest_inventory_s", "per-instance REST inventory (s)"),
    ("find_inventory_s", "/tools/find inventory (s)"),
    ("tar_backup_s", "tar backup (s)"),
    ("tar_backup_down_s", "tar backup: HTTP down (s)"),
    ("backup_s", "restic backup, first (s)"),
    ("backup_down_s", "restic backup: HTTP down (s)"),
    ("incremental_s", "restic backup, +1 % (s)"),
    ("incremental_down_s", "incremental: HTTP down (s)"),
    ("restore_s", "restore (s)"),
    ("restore_down_s", "restore: HTTP down (s)"),
    ("upgrade_s", "upgrade playbook (s)"),
    ("upgrade_down_s", "upgrade: HTTP down (s)"),
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for backend in sorted({row["backend"] for row in rows}):
        chosen = [row for row in rows if row["backend"] == backend]
        header = ["metric", *[f"{r['instances']:,} ({r['data_bytes'] / 1e9:.1f} GB)" for r in chosen], "s per 10k"]
        lines.append(f"\n{backend}\n" + " | ".join(header))
        lines.append(" | ".join("---" for _ in header))
        for key, title in METRICS:
            if not any(key in row for row in chosen):
                continue
            values = [f"{row[key]:.2f}" if key in row else "" for row in chosen]
            lines.append(" | ".join([title, *values, str(slope(chosen, key))]))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(13, 5))
    for backend in sorted({row["backend"] for row in rows}):
        chosen = [row for row in rows if row["backend"] == backend]
        x = [row["instances"] for row in chosen]
        for key, title in (("tar_backup_down_s", "tar"), ("backup_down_s", "restic"), ("upgrade_down_s", "upgrade")):
            axes[0].plot(x, [row.get(key, 0) for row in chosen], marker="o", label=f"{backend}: {title}")
        for key, title in (
            ("backup_s", "backup"),
            ("incremental_s", "+1 %"),
            ("restore_s", "restore"),
            ("inventory_s", "inventory"),
            ("tar_backup_s", "tar"),
        ):
            axes[1].plot(x, [row.get(key, 0) for row in chosen], marker="o", label=f"{backend}: {title}")
    axes[0].set(title="HTTP unavailability", xlabel="instances", ylabel="seconds")
    axes[1].set(title="Duration", xlabel="instances", ylabel="seconds")
    for axis in axes:
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.lifecycle",
        description=__doc__.splitlines()[0],
        epilog="Run time on a 2-core host: about 40 minutes per backend with the defaults, 10 with --quick.",
    )
    parser.add_argument("--sizes", help=f"instances at each measurement (default {','.join(map(str, SIZES))})")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--ct-gb", type=float, default=10.0, help="GB of 0.5 MB CT slices added after the last size")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, no CT slices")
    parser.add_argument("--output", type=Path, default=stack.REPOSITORY / "build" / "lifecycle-bench")
    args = parser.parse_args(argv)
    args.sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    if args.quick:
        args.ct_gb = 0.0
    if sorted(args.sizes) != args.sizes:
        parser.error("--sizes must grow")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    logs = args.output / "logs"
    password = secrets.token_urlsafe(24)
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"sizes": args.sizes, "backends": args.backends, "ct_gb": args.ct_gb, "threads": THREADS},
        "rows": [],
        "growth": [],
        "complete": False,
    }
    started = time.monotonic()
    try:
        vars_file = stack.write_users_file(WORK_ROOT / "secrets", {USERNAME: password})
        for backend in args.backends:
            bench = Run(backend, vars_file, password, logs)
            try:
                bench.deploy()
                for index, size in enumerate(args.sizes):
                    seconds = bench.grow(size)
                    results["growth"].append({"backend": backend, "to": size, "seconds": round(seconds, 1)})
                    say(f"{backend}: grown to {size} instances in {seconds:.0f} s")
                    results["rows"].append(bench.measure(f"{size}", first=index == 0))
                    write(args.output, results)
                if args.ct_gb and backend == "sqlite":
                    seconds = bench.grow_ct(args.ct_gb)
                    results["growth"].append({"backend": backend, "ct_gb": args.ct_gb, "seconds": round(seconds, 1)})
                    say(f"{backend}: {args.ct_gb} GB of CT slices added in {seconds:.0f} s")
                    results["rows"].append(bench.measure(f"{args.sizes[-1]}+{args.ct_gb:g}GB", first=False))
                    write(args.output, results)
            finally:
                with contextlib.suppress(BenchError, OSError):
                    bench.remove()
        results["complete"] = True
    except (BenchError, OSError, requests.RequestException) as error:
        results["error"] = str(error)
        say(f"lifecycle benchmark failed: {error}")
    finally:
        results["seconds"] = round(time.monotonic() - started)
        write(args.output, results)
        shutil.rmtree(WORK_ROOT / "secrets", ignore_errors=True)

    return 0 if results["complete"] else 1


def write(output: Path, results: dict[str, Any]) -> None:
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output / "results.txt").write_text(table(results["rows"]), encoding="utf-8")
    if results["rows"]:
        plot(results["rows"], output / "results.png")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
