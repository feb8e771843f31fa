#!/usr/bin/env python3
"""One whole backup of an AusCAT Orthanc stack: run by playbooks/backup.yml, by the schedule's
systemd timer and by its cron entry.

    auscat_scheduled_backup.py --config /var/lib/auscat/lifecycle/<stack>/backup.json [--by playbook]
    auscat_scheduled_backup.py --config ... --by upgrade --record ID --storage JSON --image IMAGE
                               --orthanc-version LINE --downtime SECONDS

The second form ends the backup an upgrade with a SQLite index takes around its image switch (the
storage pass and the offline step ran as auscat_backup.py commands): the stage, restic check, the
manifest and the retention policy, as every backup ends.

With the settings the role wrote (backup.json, root only; it names the password file, never the
password), in one process: the storage files copied while Orthanc runs; with SQLite, Orthanc's
container frozen (docker pause) only while the index is copied beside the data and the files that
arrived meanwhile are hard-linked there, then thawed whatever happened (a watchdog thaws it if this
process dies meanwhile), and that stage backed up while it serves; with PostgreSQL, the index dumped
while Orthanc runs. restic check runs meanwhile, before the manifest
that makes the backup complete. HTTP availability is watched over that final step (the
orthanc_availability module's poller), so the manifest records the measured unavailability. Then the
retention policy (restic forget; prune once every prune_days). The helpers beside
this file do the work (auscat_backup.py for restic, orthanc_service.py for the Swarm service,
orthanc_availability.py for the watch), so every backup is the same backup.

Only one backup of a stack runs at a time: a run finding another one in progress (its lock held, or
an upgrade's working file younger than STALE_MINUTES) stops without touching anything. Progress goes
to stderr, the result (the manifest, or the error) to stdout as one JSON object and to last.json in
the stack's state directory, for the operator and for monitoring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import auscat_backup as backup

LAST_NAME = "last.json"
PRUNED_NAME = "pruned"
# An upgrade's backup keeps its working file from the end of its storage pass until it is recorded,
# minutes after; one older than this was left by an interrupted backup.
STALE_MINUTES = 60
SETTINGS = (
    "stack",
    "repository",
    "password_file",
    "state_dir",
    "data_dir",
    "index_backend",
    "service",
    "postgresql_service",
    "url",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "prune_days",
    "check",
    "health_timeout",
)


class Service(Protocol):
    """A Swarm service as the backup drives it (auscat_backup.StackService)."""

    def healthy(self) -> Any: ...

    def freeze(self) -> Any: ...

    def thaw(self, frozen: Any) -> None: ...


class Watch(Protocol):
    """HTTP availability watched over the final step (AvailabilityWatch)."""

    def start(self) -> None: ...

    def serving(self) -> None: ...

    def stop(self) -> dict[str, Any]: ...


class AvailabilityWatch:
    """The orthanc_availability module's poller (installed beside this file), started and stopped here."""

    def __init__(self, stack: str, url: str, timeout: int) -> None:
        import orthanc_availability

        self.module = orthanc_availability
        self.files = orthanc_availability.WatchFiles.of(Path("/run"), f"{stack}-backup")
        self.url = url
        self.timeout = timeout

    def start(self) -> None:
        try:
            self.module.start_watch(self.files, self.url, max_seconds=self.timeout * 3)
        except self.module.WatchError as error:
            raise backup.BackupError(str(error)) from error

    def serving(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Returns once Orthanc answers HTTP again, probed as the poller probes it (any answer counts), every
        0.1 s for at most the health timeout. Swarm's health check, every few seconds, follows on its own."""
        spec = importlib.util.spec_from_file_location("orthanc_availability_poller", self.files.script)
        if spec is None or spec.loader is None:
            raise backup.BackupError(f"{self.files.script}: cannot load the availability poller")
        poller = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(poller)
        deadline = time.monotonic() + self.timeout
        while not poller.is_up(self.url):
            if time.monotonic() > deadline:
                raise backup.BackupError(
                    f"Orthanc gave no HTTP answer at {self.url} within {self.timeout} s of running again"
                )
            sleep(0.1)

    def stop(self) -> dict[str, Any]:
        try:
            return self.module.stop_watch(self.files)
        except self.module.WatchError as error:
            raise backup.BackupError(str(error)) from error


class ScheduleError(Exception):
    """A reason the backup did not run, or stopped."""


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
    """Hold the stack's backup lock; refuse when an upgrade's backup of the stack is under way. Working
    files an interrupted backup left are removed."""
    with backup.backup_lock(state_dir, f"another backup of stack {stack} is running; this run did nothing"):
        cutoff = time.time() - STALE_MINUTES * 60
        for working in state_dir.glob("*.names"):
            if working.stat().st_mtime > cutoff:
                raise ScheduleError(
                    f"an upgrade's backup of stack {stack} is under way ({working} is its working file, "
                    f"ignored once {STALE_MINUTES} min old); this run did nothing"
                )
            for path in (working, working.with_suffix(".files"), backup.since_file(working)):
                path.unlink(missing_ok=True)
        yield


def say(message: str) -> None:
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ} {message}", file=sys.stderr, flush=True)


def copy(
    repo: backup.Repository,
    settings: dict[str, Any],
    backup_id: str,
    state: Path,
    service: Callable[[str], Service],
    watch: Watch,
    then: Callable[[], object],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The storage pass while Orthanc runs, then the index, then THEN (with SQLite while Orthanc starts
    again): (storage result, index result, availability watched over the final step)."""
    data_dir = Path(settings["data_dir"])
    say(f"copying the storage files while Orthanc runs (backup {backup_id})")
    storage = backup.storage_pass(repo, data_dir, backup_id, state)
    say(f"{storage['files_new']} new storage files copied in {storage['seconds']} s")
    watch.start()
    try:
        if settings["index_backend"] == "postgresql":
            say("dumping the PostgreSQL index while Orthanc runs")
            postgresql = service(settings["postgresql_service"]).healthy()
            index = backup.index_postgresql(repo, postgresql.container, data_dir, backup_id, state)
            then()
        else:
            orthanc = service(settings["service"])
            frozen: list[Any] = []
            say("freezing Orthanc to stage the index")
            try:
                # Thawed whether or not the stage could be made; the stage is backed up while Orthanc serves.
                try:
                    staged = backup.offline_sqlite(
                        data_dir,
                        state,
                        stop=lambda: frozen.append(orthanc.freeze()),
                        resume=lambda: frozen and orthanc.thaw(frozen[0]),
                    )
                except backup.BackupError:
                    backup.remove_stage(data_dir)  # a stage copied while Orthanc ran again is no stage
                    raise
                say(f"Orthanc thawed {staged['stopped_seconds']} s after it was frozen")
                index = backup.index_sqlite(repo, data_dir, backup_id, state)
                then()
            finally:
                watch.serving()
    finally:
        availability = watch.stop()
    say(f"Orthanc serving; HTTP was unavailable for {availability['total_downtime_seconds']} s")
    return storage, index, availability


def manifest_of(
    settings: dict[str, Any],
    backup_id: str,
    image: str,
    version: str,
    copied: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    by: str,
) -> dict[str, Any]:
    storage, index, availability = copied
    return {
        "backup": backup_id,
        "stack": settings["stack"],
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "image": image,
        "orthanc_version": version,
        "index_backend": settings["index_backend"],
        "data_dir": settings["data_dir"],
        "downtime_seconds": availability["total_downtime_seconds"],
        "inventory": {key: index[key] for key in ("patients", "studies", "series", "instances", "listed", "digest")},
        "late_files": index["late_files"],
        "index_entries_without_file": index["index_entries_without_file"],
        "snapshots": {"storage": storage["snapshot"], "index": index["snapshot"], "late": index.get("late_snapshot")},
        "storage_pass": {key: storage[key] for key in ("files_new", "files_unmodified", "bytes_added", "seconds")},
        "by": by,
    }


def version_of(line: str) -> str:
    """The version in the first line `Orthanc --version` prints ("Orthanc 1.12.7")."""
    return line.removeprefix("Orthanc").strip()


def orthanc_version(container: str) -> str:
    result = subprocess.run(["docker", "exec", container, "Orthanc", "--version"], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    return version_of(lines[0]) if result.returncode == 0 and lines else ""


def repository_of(settings: dict[str, Any]) -> backup.Repository:
    cache = Path(settings["state_dir"]) / "cache"
    repo = backup.Repository(settings["repository"], Path(settings["password_file"]), settings["stack"], cache)
    if not repo.password_file.is_file():
        raise ScheduleError(f"{repo.password_file}: the repository password file does not exist")
    return repo


def check(repo: backup.Repository, settings: dict[str, Any]) -> None:
    # Before the manifest, which makes the backup complete: a backup failing check is never restored.
    if settings["check"]:
        say("restic check")
        backup.check(repo)


def complete(
    repo: backup.Repository,
    settings: dict[str, Any],
    manifest: dict[str, Any],
    listed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """MANIFEST stored with the snapshots (the backup is complete from here on), then the retention policy
    over LISTED (the snapshots before this backup) or the snapshots now; returns the manifest."""
    state_dir = Path(settings["state_dir"])
    backup_id = manifest["backup"]
    written = state_dir / "manifest.json"
    written.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    backup.store_manifest(repo, backup_id, written)
    kept = backup.forget(
        repo,
        settings["keep_daily"],
        settings["keep_weekly"],
        settings["keep_monthly"],
        int(settings["prune_days"]),
        state_dir / PRUNED_NAME,
        listed,
    )
    instances = manifest["inventory"]["instances"]
    pruned = "; repository pruned" if kept["pruned"] else ""
    say(
        f"backup {backup_id} done: {instances} instances, {len(kept['kept_backups'])} backups kept, "
        f"{kept['removed_snapshots']} snapshots forgotten{pruned}"
    )
    return manifest


@contextlib.contextmanager
def working_files(state: Path) -> Iterator[Path]:
    """The working files of one backup (STATE and its siblings), removed once it ends, whatever happened."""
    try:
        yield state
    finally:
        for path in (state, state.with_suffix(".files"), backup.since_file(state)):
            path.unlink(missing_ok=True)


def take_backup(
    settings: dict[str, Any], service: Callable[[str], Service], watch: Watch, by: str = "schedule"
) -> dict[str, Any]:
    """One backup; returns its manifest."""
    repo = repository_of(settings)
    opened = backup.init(repo)
    if opened["created"]:
        say(f"created the repository {repo.url}")
    orthanc = service(settings["service"]).healthy()
    version = orthanc_version(orthanc.container)
    backup_id = f"{settings['stack']}-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}"
    with working_files(Path(settings["state_dir"]) / f"{backup_id}.names") as state:
        copied = copy(repo, settings, backup_id, state, service, watch, lambda: check(repo, settings))
        manifest = manifest_of(settings, backup_id, orthanc.image, version, copied, by)
        return complete(repo, settings, manifest, opened["snapshots"])


def record_upgrade(
    settings: dict[str, Any], backup_id: str, storage: dict[str, Any], image: str, version: str, downtime: float
) -> dict[str, Any]:
    """The end of the backup an upgrade takes with a SQLite index (its storage pass and offline step ran as
    `auscat_backup.py storage` and `offline-sqlite`, the switch within the stop): the stage backed up once
    the target serves, then restic check, the manifest and the retention policy, as in every backup."""
    repo = repository_of(settings)
    with working_files(Path(settings["state_dir"]) / f"{backup_id}.names") as state:
        say(f"backing up the index staged by the upgrade (backup {backup_id})")
        index = backup.index_sqlite(repo, Path(settings["data_dir"]), backup_id, state)
        check(repo, settings)
        copied = (storage, index, {"total_downtime_seconds": downtime})
        return complete(repo, settings, manifest_of(settings, backup_id, image, version, copied, "upgrade"))


def main(argv: list[str]) -> int:
    options = argparse.ArgumentParser(prog="auscat-scheduled-backup", description=__doc__.splitlines()[0])
    options.add_argument("--config", type=Path, required=True, help="the backup's settings (backup.json)")
    options.add_argument(
        "--by", choices=("schedule", "playbook", "upgrade"), default="schedule", help="what runs the backup"
    )
    upgrade = options.add_argument_group("the end of an upgrade's backup (SQLite), once the target serves")
    upgrade.add_argument("--record", metavar="BACKUP_ID", help="the backup whose stage is backed up and recorded")
    upgrade.add_argument("--storage", type=json.loads, help="what `auscat_backup.py storage` printed (JSON)")
    upgrade.add_argument("--image", help="the image that served when the backup began")
    upgrade.add_argument("--orthanc-version", help="the first line `Orthanc --version` printed in it")
    upgrade.add_argument("--downtime", type=float, help="seconds of HTTP unavailability over the offline step")
    args = options.parse_args(argv)
    if args.record:
        missing = [name for name in ("storage", "image", "orthanc_version", "downtime") if getattr(args, name) is None]
        if missing:
            options.error(f"--record needs {', '.join('--' + name.replace('_', '-') for name in missing)}")
    os.umask(0o077)
    # Stopped (by cron, systemd or an operator), the backup unwinds as on an error: Orthanc thawed or
    # started again, its working files removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = datetime.datetime.now(datetime.UTC).isoformat()
    last: Path | None = None
    try:
        settings = read_settings(args.config)
        last = Path(settings["state_dir"]) / LAST_NAME

        timeout = int(settings["health_timeout"])

        def service(name: str) -> Service:
            return backup.StackService(name, timeout)

        watch = AvailabilityWatch(settings["stack"], settings["url"], timeout)
        if args.record:
            # The upgrade's own working file is under way: the lock only.
            busy = f"another backup of stack {settings['stack']} is running"
            with backup.backup_lock(Path(settings["state_dir"]), busy):
                manifest = record_upgrade(
                    settings, args.record, args.storage, args.image, version_of(args.orthanc_version), args.downtime
                )
        else:
            with exclusive(Path(settings["state_dir"]), settings["stack"]):
                manifest = take_backup(settings, service, watch, args.by)
        result = {"started": started, "ok": True, "manifest": manifest}
    except (ScheduleError, backup.BackupError, OSError) as error:
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
