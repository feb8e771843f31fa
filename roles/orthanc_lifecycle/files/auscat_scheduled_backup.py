#!/usr/bin/env python3
"""The scheduled backup of one AusCAT Orthanc stack, run by its systemd timer or cron entry.

    auscat_scheduled_backup.py --config /var/lib/auscat/lifecycle/<stack>/schedule.json

The steps of playbooks/backup.yml, with the settings the role wrote at rollout (schedule.json, root
only; it names the password file, never the password): the storage files copied while Orthanc runs;
with SQLite, Orthanc stopped only while the index is copied beside the data and the files that
arrived meanwhile are hard-linked there, then started again whatever happened, and that stage backed
up while it serves; with PostgreSQL, the index dumped while Orthanc runs. Then the
manifest, restic check and the retention policy. The helpers beside this file do the work
(auscat_backup.py for restic, orthanc_service.py for the Swarm service), so a scheduled backup and
one taken by the playbook are the same backup.

Only one backup of a stack runs at a time: a run finding another one in progress (its lock held, or
a playbook's working file younger than STALE_HOURS) stops without touching anything. Progress goes
to stderr, the result (the manifest, or the error) to stdout as one JSON object and to last.json in
the stack's state directory, for the operator and for monitoring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import auscat_backup as backup
from orthanc_service import ServiceError, ServiceTask, Swarm

LAST_NAME = "last.json"
STALE_HOURS = 12
SETTINGS = (
    "stack",
    "repository",
    "password_file",
    "state_dir",
    "data_dir",
    "index_backend",
    "service",
    "postgresql_service",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "check",
    "health_timeout",
)


class ScheduleError(Exception):
    """A reason the scheduled backup did not run, or stopped."""


def read_settings(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScheduleError(
            f"{path}: cannot read the schedule's settings ({error}); roll out playbooks/site.yml"
        ) from error
    missing = [key for key in SETTINGS if key not in settings]
    if missing:
        raise ScheduleError(f"{path}: settings lack {', '.join(missing)}; roll out playbooks/site.yml again")
    if settings["index_backend"] not in ("sqlite", "postgresql"):
        raise ScheduleError(f"{path}: index_backend is {settings['index_backend']!r}, neither sqlite nor postgresql")
    return settings


@contextlib.contextmanager
def exclusive(state_dir: Path, stack: str) -> Iterator[None]:
    """Hold the stack's backup lock; refuse when another backup of the stack is under way."""
    with backup.backup_lock(state_dir, f"another scheduled backup of stack {stack} is running; this run did nothing"):
        cutoff = time.time() - STALE_HOURS * 3600
        busy = [path for path in state_dir.glob("*.names") if path.stat().st_mtime > cutoff]
        if busy:
            raise ScheduleError(
                f"a backup of stack {stack} is under way ({busy[0]} is its working file); this run did nothing"
            )
        yield


def say(message: str) -> None:
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ} {message}", file=sys.stderr, flush=True)


def docker(argv: list[str]) -> tuple[int, str, str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout, result.stderr


def copy(
    repo: backup.Repository,
    settings: dict[str, Any],
    backup_id: str,
    state: Path,
    service_task: Callable[[str], ServiceTask],
    clock: Callable[[], float],
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The storage pass while Orthanc runs, then the index: (storage result, index result, seconds stopped)."""
    data_dir = Path(settings["data_dir"])
    say(f"backup {backup_id}: copying the storage files while Orthanc runs")
    storage = backup.storage_pass(repo, data_dir, backup_id, state)
    if settings["index_backend"] == "postgresql":
        say(f"backup {backup_id}: {storage['files_new']} new files; dumping the PostgreSQL index")
        postgresql = service_task(settings["postgresql_service"]).run("healthy")
        return storage, backup.index_postgresql(repo, postgresql.container, data_dir, backup_id, state), 0.0
    say(f"backup {backup_id}: {storage['files_new']} new files; stopping Orthanc to stage the index")
    stopped_at = clock()
    # Started again (and awaited healthy) whether or not the stage could be made.
    backup.offline_sqlite(
        data_dir,
        state,
        stop=lambda: service_task(settings["service"]).run("stopped"),
        resume=lambda: service_task(settings["service"]).run("started"),
    )
    downtime = clock() - stopped_at
    say(f"backup {backup_id}: Orthanc healthy again after {downtime:.1f} s; copying the staged index")
    return storage, backup.index_sqlite(repo, data_dir, backup_id, state), downtime


def manifest_of(
    settings: dict[str, Any],
    backup_id: str,
    orthanc: Any,
    version: str,
    copied: tuple[dict[str, Any], dict[str, Any], float],
) -> dict[str, Any]:
    """The manifest playbooks/backup.yml writes (backup_record.yml), marked as scheduled."""
    storage, index, downtime = copied
    return {
        "backup": backup_id,
        "stack": settings["stack"],
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "image": orthanc.image,
        "orthanc_version": version,
        "index_backend": settings["index_backend"],
        "data_dir": settings["data_dir"],
        "downtime_seconds": round(downtime, 2),
        "inventory": {key: index[key] for key in ("patients", "studies", "series", "instances", "listed", "digest")},
        "late_files": index["late_files"],
        "index_entries_without_file": index["index_entries_without_file"],
        "snapshots": {"storage": storage["snapshot"], "index": index["snapshot"], "late": index.get("late_snapshot")},
        "storage_pass": {key: storage[key] for key in ("files_new", "files_unmodified", "bytes_added", "seconds")},
        "scheduled": True,
    }


def orthanc_version(container: str) -> str:
    result = subprocess.run(["docker", "exec", container, "Orthanc", "--version"], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    return lines[0].removeprefix("Orthanc").strip() if result.returncode == 0 and lines else ""


def scheduled_backup(
    settings: dict[str, Any],
    service_task: Callable[[str], ServiceTask],
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """One backup as playbooks/backup.yml takes it; returns its manifest."""
    state_dir = Path(settings["state_dir"])
    repo = backup.Repository(
        settings["repository"], Path(settings["password_file"]), settings["stack"], state_dir / "cache"
    )
    if not repo.password_file.is_file():
        raise ScheduleError(f"{repo.password_file}: the repository password file does not exist")
    backup.init(repo)
    orthanc = service_task(settings["service"]).run("healthy")
    version = orthanc_version(orthanc.container)
    backup_id = f"{settings['stack']}-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}"
    state = state_dir / f"{backup_id}.names"
    try:
        copied = copy(repo, settings, backup_id, state, service_task, clock)
        manifest = manifest_of(settings, backup_id, orthanc, version, copied)
        written = state_dir / "manifest.json"
        written.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        backup.store_manifest(repo, backup_id, written)
    finally:
        for path in (state, state.with_suffix(".files"), backup.since_file(state)):
            path.unlink(missing_ok=True)
    if settings["check"]:
        say(f"backup {backup_id}: restic check")
        backup.check(repo)
    kept = backup.forget(repo, settings["keep_daily"], settings["keep_weekly"], settings["keep_monthly"])
    instances = manifest["inventory"]["instances"]
    say(f"backup {backup_id}: done, {instances} instances, {len(kept['kept_backups'])} backups kept")
    return manifest


def main(argv: list[str]) -> int:
    options = argparse.ArgumentParser(prog="auscat-scheduled-backup", description=__doc__.splitlines()[0])
    options.add_argument("--config", type=Path, required=True, help="the schedule's settings (schedule.json)")
    args = options.parse_args(argv)
    os.umask(0o077)
    started = datetime.datetime.now(datetime.UTC).isoformat()
    last: Path | None = None
    try:
        settings = read_settings(args.config)
        last = Path(settings["state_dir"]) / LAST_NAME

        def service_task(name: str) -> ServiceTask:
            return ServiceTask(Swarm("docker", docker), name, int(settings["health_timeout"]))

        with exclusive(Path(settings["state_dir"]), settings["stack"]):
            result = {"started": started, "ok": True, "manifest": scheduled_backup(settings, service_task)}
    except (ScheduleError, backup.BackupError, ServiceError, OSError) as error:
        result = {"started": started, "ok": False, "error": str(error)}
        say(f"backup failed: {error}")
    result["finished"] = datetime.datetime.now(datetime.UTC).isoformat()
    print(json.dumps(result), flush=True)
    if last is not None:
        with contextlib.suppress(OSError):
            last.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
