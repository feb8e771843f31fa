#!/usr/bin/env python3
"""Backups of one AusCAT Orthanc stack in a restic repository, with bounded unavailability.

    auscat_backup.py COMMON init
    auscat_backup.py COMMON storage --data-dir DIR --backup-id ID --state FILE
    auscat_backup.py COMMON offline-sqlite --data-dir DIR --state FILE --service NAME [--deploy STACK_FILE]
    auscat_backup.py COMMON index-sqlite --data-dir DIR --backup-id ID --state FILE
    auscat_backup.py COMMON index-postgresql --container ID --data-dir DIR --backup-id ID --state FILE
    auscat_backup.py COMMON manifest --backup-id ID --manifest FILE
    auscat_backup.py COMMON forget --keep-daily N --keep-weekly N --keep-monthly N [--prune-days N --pruned FILE]
    auscat_backup.py COMMON check
    auscat_backup.py COMMON list
    auscat_backup.py COMMON restore --backup-id ID|latest --target DIR
    auscat_backup.py COMMON load-postgresql --container ID --dump FILE
    auscat_backup.py COMMON inventory-postgresql --service NAME

COMMON is --repository REPO --password-file FILE --stack NAME. The password travels to restic
in its file only, never on a command line or in the environment of a logged command.

One backup is several snapshots sharing the tag backup=<id>:
    part=storage   the storage files, copied while Orthanc runs (they are written once, never changed);
    part=index     SQLite: the index and the files that arrived after the storage pass, as they were
                   while Orthanc was stopped or frozen (a whole backup freezes its container, an upgrade's
                   offline-sqlite stops it; either way the index is copied beside the data and the newest
                   files hard-linked there before Orthanc goes on; index-sqlite then backs that stage up
                   while Orthanc serves); PostgreSQL: a pg_dump of the index while Orthanc runs, and the
                   files it refers to that the storage pass had not seen;
    part=manifest  counts, digest, image, Orthanc version and the snapshots above.
Every index entry of a backup has its file in the backup: the index part is taken last and carries
whatever the storage part lacks. Each command prints one JSON object; errors name the problem.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

INDEX_FILES = ("index", "index-wal")
MANIFEST_NAME = "auscat-manifest.json"
# Held by a whole backup (auscat_scheduled_backup.py) for its whole run, in the stack's state directory.
LOCK_NAME = "backup.lock"
DUMP_NAME = "postgresql.sql"
# Inside the data directory (on its filesystem, so that files can be hard-linked), root's only: what
# the offline step of a SQLite backup keeps for the index step, laid out under the data directory's
# absolute path so that restic, run from here, stores the same paths as a copy of the data directory.
STAGE_NAME = ".auscat-stage"
# A file written since the storage pass began, less this margin, may be one the pass did not copy (or
# copied half written: a file's time is that of its last write): the offline step hard-links each into
# the stage. File times come from the same clock as the pass's start, a few milliseconds coarser.
STAGE_MARGIN_SECONDS = 10
# Room left on the data directory's filesystem beyond the copy of the index.
STAGE_SPARE_BYTES = 64 * 2**20
# restic: 3 means "snapshot created, some source files could not be read" (deleted meanwhile).
RESTIC_INCOMPLETE = 3
DUMP_ATTEMPTS = 5
# Orthanc's resource levels: its own SQLite index numbers them from 1, the PostgreSQL plugin (the
# plugin SDK's enumeration) from 0. The DICOM attachment type is 1 in both.
LEVELS = {1: "patients", 2: "studies", 3: "series", 4: "instances"}
INSTANCE_LEVEL = 4
PG_LEVELS = {0: "patients", 1: "studies", 2: "series", 3: "instances"}
PG_INSTANCE_LEVEL = 3
DICOM_ATTACHMENT = 1
PG_DSN = "host=/run/postgresql user=postgres dbname=orthanc"
# Every resource's level and ID, with its DICOM attachment's MD5 (none above the instances), in one
# statement: one snapshot of the index.
PG_INVENTORY = (
    "COPY (SELECT r.resourcetype, r.publicid, a.uncompressedhash FROM resources r"
    " LEFT JOIN attachedfiles a ON a.id = r.internalid AND a.filetype = 1) TO STDOUT"  # 1: DICOM_ATTACHMENT
)
# Seconds the PostgreSQL inventory waits for a healthy task of the index's service.
INVENTORY_WAIT_SECONDS = 30
# A frozen Orthanc is thawed by a watchdog process after this many seconds if the backup that froze it
# has not thawed it by then (killed meanwhile, say): Swarm never replaces a paused container. A stage
# that took longer is discarded (the watchdog thawed Orthanc during the copy).
FREEZE_LIMIT_SECONDS = 120
# The dump carries no owners: what it creates must belong to the role Orthanc connects as.
LOAD_AS_ORTHANC = ["-c", "SET ROLE orthanc", "-f", "-"]


class BackupError(Exception):
    """A problem that stops the operation, described for the operator."""


class ServingAsBefore(BackupError):
    """The offline step failed with Orthanc serving as before it: never stopped, or started or thawed again."""


@dataclass
class Repository:
    url: str
    password_file: Path
    stack: str
    cache_dir: Path | None = None

    @property
    def host(self) -> str:
        return f"auscat-{self.stack}"

    def env(self) -> dict[str, str]:
        # Only this repository's settings: a RESTIC_PASSWORD in root's environment must not override the file.
        env = {key: value for key, value in os.environ.items() if not key.startswith("RESTIC_")}
        env["RESTIC_REPOSITORY"] = self.url
        env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        if self.cache_dir:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        return env

    def run(
        self, args: list[str], stdin: IO[bytes] | None = None, ok: Iterable[int] = (0,), cwd: Path | None = None
    ) -> str:
        result = subprocess.run(
            ["restic", *args],
            env=self.env(),
            stdin=stdin,
            capture_output=True,
            check=False,
            cwd=cwd,
        )
        if result.returncode not in ok:
            raise BackupError(self.explain(args[0], result.stderr.decode(errors="replace")))
        return result.stdout.decode()

    def explain(self, command: str, stderr: str) -> str:
        """restic's error, with the cause an operator acts on named first."""
        detail = " ".join(stderr.split())[-600:]
        if "wrong password" in stderr:
            return (
                f"restic {command}: the repository {self.url} refused the password in {self.password_file} "
                "(wrong password: give the repository's own password, orthanc_lifecycle_repository_password)"
            )
        if "no space left on device" in stderr:
            return f"restic {command}: the backup target of {self.url} is full: {detail}"
        if "Is there a repository at the following location?" in stderr or "unable to open config file" in stderr:
            return f"restic {command}: no repository at {self.url} (or it cannot be reached): {detail}"
        return f"restic {command} failed for {self.url}: {detail}"

    def tags(self, backup_id: str, part: str) -> list[str]:
        return ["--tag", f"auscat,stack={self.stack},backup={backup_id},part={part}"]

    def backup_args(self, backup_id: str, part: str) -> list[str]:
        """restic's arguments for one part of a backup, before what it backs up."""
        return ["backup", "--json", "--host", self.host, *self.tags(backup_id, part)]

    def backup(
        self, args: list[str], backup_id: str, part: str, stdin: IO[bytes] | None = None, cwd: Path | None = None
    ) -> dict[str, Any]:
        output = self.run(
            [*self.backup_args(backup_id, part), *args],
            stdin=stdin,
            ok=(0, RESTIC_INCOMPLETE),
            cwd=cwd,
        )
        return summary_of(output)

    def listing_args(self, part: str | None = None) -> list[str]:
        """restic's arguments listing the stack's snapshots (of one PART of its backups)."""
        tags = f"stack={self.stack}" + (f",part={part}" if part else "")
        return ["snapshots", "--json", "--host", self.host, "--tag", tags]

    def snapshots(self, part: str | None = None) -> list[dict[str, Any]]:
        return json.loads(self.run(self.listing_args(part)) or "[]")


def summary_of(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("message_type") == "summary":
                return {
                    "snapshot": message["snapshot_id"],
                    "files_new": message.get("files_new", 0),
                    "files_changed": message.get("files_changed", 0),
                    "files_unmodified": message.get("files_unmodified", 0),
                    "bytes_added": message.get("data_added", 0),
                    "seconds": round(message.get("total_duration", 0.0), 2),
                }
    raise BackupError(f"restic backup printed no summary: {output[-300:]}")


def moment(restic_time: str) -> datetime.datetime:
    """A snapshot's time as a point in time: restic writes the host's UTC offset of the moment (it changes
    with daylight saving) and nanoseconds, so its text does not sort."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", restic_time).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text)


def tag_value(snapshot: dict[str, Any], key: str) -> str:
    for tag in snapshot.get("tags") or []:
        if tag.startswith(f"{key}="):
            return tag.split("=", 1)[1]
    return ""


def init(repo: Repository) -> dict[str, Any]:
    """The repository opened, created when there is none at its URL, with the stack's snapshots listed in
    the same restic call (each call derives the key from the password: most of a second)."""
    result = subprocess.run(["restic", *repo.listing_args()], env=repo.env(), capture_output=True, check=False)
    if result.returncode == 0:
        return {"repository": repo.url, "created": False, "snapshots": json.loads(result.stdout or "[]")}
    stderr = result.stderr.decode(errors="replace")
    if "wrong password" in stderr or "no space left" in stderr:
        raise BackupError(repo.explain("snapshots", stderr))
    if "Is there a repository" not in stderr and "unable to open config file" not in stderr:
        raise BackupError(repo.explain("snapshots", stderr))
    repo.run(["init"])
    return {"repository": repo.url, "created": True, "snapshots": []}


@contextlib.contextmanager
def backup_lock(state_dir: Path, busy: str) -> Iterator[None]:
    """The stack's backup lock, held while the block runs; BackupError(busy) when another process holds it."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (state_dir / LOCK_NAME).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise BackupError(busy) from error
        yield


def storage_pass(repo: Repository, data_dir: Path, backup_id: str, state: Path) -> dict[str, Any]:
    """Copy the storage files while Orthanc runs. STATE (one per backup) records, from restic's own account
    of the pass, every file the snapshot holds and what restic did with it: "unchanged" ones are the
    previous snapshot's, unread; "new" and "modified" ones were read now, perhaps while Orthanc wrote them.
    A file restic could not read is not recorded (restic exits 3), so the index step copies it."""
    state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    since_file(state).write_text(f"{time.time()}\n", encoding="utf-8")
    excluded = (*INDEX_FILES, "index-shm", STAGE_NAME)
    excludes = [arg for name in excluded for arg in ("--exclude", str(data_dir / name))]
    args = [*repo.backup_args(backup_id, "storage"), "--verbose=2", *excludes, str(data_dir)]
    files = 0
    with tempfile.TemporaryFile() as errors, state.open("w", encoding="utf-8") as record:
        # Streamed: one line per file, millions of them at the scale sites plan for.
        restic = subprocess.Popen(["restic", *args], env=repo.env(), stdout=subprocess.PIPE, stderr=errors)
        if restic.stdout is None:
            raise BackupError("restic must print into a pipe")
        summary: dict[str, Any] = {}
        for line in restic.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                message = json.loads(line)
                if message.get("message_type") == "verbose_status" and not message["item"].endswith("/"):
                    record.write(f"{Path(message['item']).name} {message['action']}\n")
                    files += 1
                elif message.get("message_type") == "summary":
                    summary = summary_of(line.decode())
        if restic.wait() not in (0, RESTIC_INCOMPLETE) or not summary:
            errors.seek(0)
            raise BackupError(repo.explain("backup", errors.read().decode(errors="replace")))
    return {**summary, "files_in_snapshot": files}


@dataclass
class Index:
    """What an index refers to: counts per level, the digest over every instance's MD5, and the size of
    every attachment's stored file by UUID."""

    counts: dict[str, int] = field(default_factory=dict)
    instance_md5: dict[str, str] = field(default_factory=dict)
    uuids: dict[str, int] = field(default_factory=dict)

    def inventory(self) -> dict[str, Any]:
        lines = "".join(f"{instance} {self.instance_md5[instance]}\n" for instance in sorted(self.instance_md5))
        return {
            **{name: self.counts.get(name, 0) for name in LEVELS.values()},
            "listed": len(self.instance_md5),
            "digest": hashlib.sha256(lines.encode()).hexdigest(),
        }


def read_sqlite(data_dir: Path) -> Index:
    """Orthanc's SQLite index in DATA_DIR, read while Orthanc is stopped (it holds the file exclusively while
    it runs), or its copy staged by the offline step (with the write-ahead log beside it when Orthanc was
    frozen, not stopped: SQLite reads the log's committed transactions, as after a power cut)."""
    path = data_dir / "index"
    if not path.is_file():
        raise BackupError(f"{path}: no SQLite index (is Orthanc's data directory {data_dir}?)")
    try:
        connection = sqlite3.connect(path, timeout=5)
        try:
            connection.execute("PRAGMA query_only = 1")
            index = Index()
            counts = connection.execute("SELECT resourceType, COUNT(*) FROM Resources GROUP BY resourceType")
            for level, count in counts:
                index.counts[LEVELS[level]] = count
            index.instance_md5 = dict(
                connection.execute(
                    "SELECT r.publicId, a.uncompressedMD5 FROM Resources r JOIN AttachedFiles a ON a.id = r.internalId"
                    " WHERE r.resourceType = ? AND a.fileType = ?",
                    (INSTANCE_LEVEL, DICOM_ATTACHMENT),
                )
            )
            index.uuids = dict(connection.execute("SELECT uuid, compressedSize FROM AttachedFiles"))
            return index
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise BackupError(f"{path}: cannot read the SQLite index ({error}); is Orthanc stopped?") from error


def stored_path(data_dir: Path, uuid: str) -> Path:
    return data_dir / uuid[0:2] / uuid[2:4] / uuid


def since_file(state: Path) -> Path:
    """When the storage pass recorded in STATE began (seconds since the epoch)."""
    return state.with_suffix(".since")


def pass_began(state: Path) -> float:
    """When the storage pass recorded in STATE began, less STAGE_MARGIN_SECONDS (seconds since the epoch)."""
    try:
        return float(since_file(state).read_text(encoding="utf-8")) - STAGE_MARGIN_SECONDS
    except (OSError, ValueError) as error:
        raise BackupError(f"{since_file(state)}: no record of the storage pass; run the storage step first") from error


def late_uuids(index: Index, state: Path, written_since: Callable[[str], bool]) -> list[str]:
    """The UUIDs of the files the index refers to that the storage pass may not hold as they are: not in its
    snapshot, or read by it and WRITTEN_SINCE it began (perhaps half written then). A file the pass left
    unchanged is the previous snapshot's, and unchanged since."""
    try:
        lines = state.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BackupError(f"{state}: no record of the storage pass; run the storage step first") from error
    # Name -> whether the pass kept it unchanged: one bool per file, millions of them at a large site.
    kept = {name: action == "unchanged" for name, _, action in (line.partition(" ") for line in lines) if name}
    return [uuid for uuid in sorted(index.uuids) if uuid not in kept or (not kept[uuid] and written_since(uuid))]


def late_files(data_dir: Path, index: Index, state: Path) -> tuple[list[Path], list[str]]:
    """While Orthanc runs (PostgreSQL): (files the index refers to that the storage pass may not hold as
    they are, UUIDs whose file is gone)."""
    since = pass_began(state)

    def written_since(uuid: str) -> bool:
        try:
            return stored_path(data_dir, uuid).stat().st_mtime >= since
        except FileNotFoundError:
            return True

    late = [(uuid, stored_path(data_dir, uuid)) for uuid in late_uuids(index, state, written_since)]
    return [path for _, path in late if path.is_file()], [uuid for uuid, path in late if not path.is_file()]


def files_from(paths: Iterable[Path], state: Path) -> Path:
    listing = state.with_suffix(".files")
    listing.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
    return listing


def stage_of(data_dir: Path) -> tuple[Path, Path]:
    """(the stage, the data directory's place in it)."""
    stage = data_dir / STAGE_NAME
    return stage, stage / str(data_dir.absolute()).lstrip("/")


def links_of(data_dir: Path) -> Path:
    """The stage's flat directory of hard links made while Orthanc is stopped (one directory: one mkdir)."""
    return data_dir / STAGE_NAME / "linked"


def mirror(source: Path, target: Path) -> None:
    """TARGET gets SOURCE's owner, mode and times: a restore gives back what the snapshot recorded, and
    Orthanc (not root) must find its data directory, its directories and its index as it left them."""
    status = source.stat()
    os.chown(target, status.st_uid, status.st_gid)
    os.chmod(target, status.st_mode & 0o7777)
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))


def recent_directories(data_dir: Path, since: float) -> Iterator[Path]:
    """The storage directories (<dir>/xx/yy) changed since SINCE: every file created later is in one."""
    for first in os.scandir(data_dir):
        if len(first.name) != 2 or not first.is_dir(follow_symlinks=False):
            continue
        for second in os.scandir(first.path):
            if len(second.name) == 2 and second.is_dir(follow_symlinks=False) and second.stat().st_mtime >= since:
                yield Path(second.path)


def stage_sqlite(data_dir: Path, state: Path) -> dict[str, Any]:
    """With Orthanc stopped or frozen: copy the index into the stage and hard-link there every storage file
    written since the storage pass began, so that the index step can back them up as they are now while
    Orthanc runs (and deletes) again. Costs a copy of the index, a look at each storage directory and one at
    each file of the directories changed since (a new file changes its directory), and a link per file
    written."""
    since = pass_began(state)
    stage, staged = stage_of(data_dir)
    # Listed now: Orthanc, stopped, has folded its write-ahead log into the index and removed it; frozen,
    # it left both as a power cut would, which SQLite recovers from (the log's committed transactions).
    index_files = [data_dir / name for name in INDEX_FILES if (data_dir / name).is_file()]
    staged.mkdir(mode=0o700, parents=True)
    stage.chmod(0o700)
    for path in index_files:
        shutil.copy2(path, staged / path.name)
        mirror(path, staged / path.name)
    links = links_of(data_dir)
    links.mkdir(mode=0o700)
    linked = 0
    for directory in recent_directories(data_dir, since):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime >= since:
                os.link(entry.path, links / entry.name)
                linked += 1
    return {"index_bytes": sum(path.stat().st_size for path in index_files), "linked_files": linked}


def place_late_files(data_dir: Path, staged: Path, uuids: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Each of these storage files into the stage's copy of the data directory, where the index has it: its
    hard link from the offline step or, failing that, a new one to the file still in the data directory
    (storage files are never rewritten). The directories get the owner, mode and times of the originals.
    Returns (the files placed, the UUIDs whose file is gone)."""
    links = links_of(data_dir)
    made: set[Path] = set()
    placed, gone = [], []
    for uuid in uuids:
        directory = Path(uuid[0:2]) / uuid[2:4]
        if directory not in made:
            (staged / directory).mkdir(parents=True, exist_ok=True)
            made.update((directory, directory.parent))
        try:
            if (links / uuid).is_file():
                os.rename(links / uuid, staged / directory / uuid)
            else:
                os.link(data_dir / directory / uuid, staged / directory / uuid)
            placed.append(staged / directory / uuid)
        except FileNotFoundError:  # never linked, and deleted since
            gone.append(uuid)
    for directory in sorted(made, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):  # a storage directory Orthanc removed meanwhile
            mirror(data_dir / directory, staged / directory)
    mirror(data_dir, staged)
    return placed, gone


def remove_stage(data_dir: Path) -> None:
    stage, _ = stage_of(data_dir)
    if stage.exists():
        shutil.rmtree(stage)


def offline_sqlite(
    data_dir: Path,
    state: Path,
    stop: Callable[[], object],
    resume: Callable[[], object],
    start: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The only step of a SQLite backup with Orthanc not running: STOP it (stop or freeze), stage the index
    (stage_sqlite), then START it (the target image of an upgrade; by default RESUME, the same service or
    container again). RESUME also runs when the stage cannot be made. Returns the stage."""
    running_files = [data_dir / name for name in INDEX_FILES if (data_dir / name).is_file()]
    if data_dir / "index" not in running_files:
        raise ServingAsBefore(f"{data_dir / 'index'}: no SQLite index (is Orthanc's data directory {data_dir}?)")
    needed = sum(path.stat().st_size for path in running_files)  # the log too: at most what the copy takes
    free = shutil.disk_usage(data_dir).free
    if free < needed + STAGE_SPARE_BYTES:
        raise ServingAsBefore(
            f"{data_dir}: {free // 2**20} MiB free on its filesystem; the backup's offline step copies the index "
            f"({needed // 2**20} MiB) there and needs {(needed + STAGE_SPARE_BYTES) // 2**20} MiB: free some space. "
            "Orthanc was not stopped"
        )
    try:
        remove_stage(data_dir)  # left by an interrupted backup
    except OSError as error:
        raise ServingAsBefore(f"cannot remove what an interrupted backup left in the stage ({error})") from error
    stopped_at = clock()
    try:
        stop()
        staged = stage_sqlite(data_dir, state)
    except BaseException as error:  # a SIGTERM's SystemExit too: Orthanc never stays stopped or frozen
        remove_stage(data_dir)
        resume()
        reason = error if isinstance(error, Exception) else f"stopped ({type(error).__name__} {error})"
        raise ServingAsBefore(f"{reason}; Orthanc was started or thawed again") from error
    (start or resume)()
    stopped = clock() - stopped_at
    _, staged_dir = stage_of(data_dir)
    return {**staged, "stage": str(staged_dir), "stopped_seconds": round(stopped, 2)}


def index_sqlite(repo: Repository, data_dir: Path, backup_id: str, state: Path) -> dict[str, Any]:
    """The index part, while Orthanc runs: the index staged by offline_sqlite and the files it refers to that
    the storage pass lacks, from their hard links in the stage. The stage is removed once backed up."""
    stage, staged = stage_of(data_dir)
    index = read_sqlite(staged)
    # Linked while Orthanc was stopped: exactly the files written since the pass began.
    linked = links_of(data_dir)
    late = late_uuids(index, state, lambda uuid: (linked / uuid).is_file())
    present, gone = place_late_files(data_dir, staged, late)
    paths = [staged / name for name in INDEX_FILES if (staged / name).exists()] + present
    listing = files_from((path.relative_to(stage) for path in paths), state)
    summary = repo.backup(["--files-from-verbatim", str(listing)], backup_id, "index", cwd=stage)
    remove_stage(data_dir)
    return {**summary, "late_files": len(present), "index_entries_without_file": gone, **index.inventory()}


class DumpReader:
    """Reads a plain pg_dump stream line by line, keeping the rows of resources and attachedfiles."""

    def __init__(self) -> None:
        self.index = Index()
        self.table: str | None = None
        self.columns: list[str] = []
        self.resources: dict[int, tuple[int, str]] = {}
        self.dicom_md5: dict[int, str] = {}

    def feed(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        if self.table is None:
            if text.startswith("COPY public.") and text.endswith("FROM stdin;"):
                name = text.split()[1].split(".", 1)[1]
                if name in ("resources", "attachedfiles"):
                    self.table = name
                    self.columns = [c.strip() for c in text[text.index("(") + 1 : text.index(")")].split(",")]
            return
        if text == "\\.":
            self.table = None
            return
        row = dict(zip(self.columns, text.split("\t"), strict=False))
        if self.table == "resources":
            level = int(row["resourcetype"])
            self.resources[int(row["internalid"])] = (level, row["publicid"])
            name = PG_LEVELS[level]
            self.index.counts[name] = self.index.counts.get(name, 0) + 1
        else:
            self.index.uuids[row["uuid"]] = int(row["compressedsize"])
            if int(row["filetype"]) == DICOM_ATTACHMENT:
                self.dicom_md5[int(row["id"])] = row["uncompressedhash"]

    def result(self) -> Index:
        for internal, md5 in self.dicom_md5.items():
            level, public = self.resources.get(internal, (None, ""))
            if level == PG_INSTANCE_LEVEL:
                self.index.instance_md5[public] = md5
        return self.index


def dump_postgresql(repo: Repository, container: str, backup_id: str) -> tuple[dict[str, Any], Index]:
    """pg_dump of the index into the repository, read on the way for what it refers to."""
    dump = subprocess.Popen(
        ["docker", "exec", container, "pg_dump", "--format=plain", "--no-owner", "--no-privileges", "-d", PG_DSN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    restic_out, restic_err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - freed on exit
    restic = subprocess.Popen(
        ["restic", *repo.backup_args(backup_id, "index"), "--stdin", "--stdin-filename", DUMP_NAME],
        env=repo.env(),
        stdin=subprocess.PIPE,
        # Files, not pipes: restic reports progress while it reads, and nobody reads a pipe meanwhile.
        stdout=restic_out,
        stderr=restic_err,
    )
    reader = DumpReader()
    if dump.stdout is None or restic.stdin is None:
        raise BackupError("pg_dump and restic must be connected by pipes")
    for line in dump.stdout:
        reader.feed(line)
        restic.stdin.write(line)
    restic.stdin.close()
    restic.wait()
    restic_out.seek(0)
    restic_err.seek(0)
    output, restic_error = restic_out.read(), restic_err.read()
    dump_error = dump.stderr.read().decode(errors="replace") if dump.stderr else ""
    if dump.wait() != 0:
        raise BackupError(f"pg_dump in {container} failed: {' '.join(dump_error.split())[-400:]}")
    if restic.returncode != 0:
        raise BackupError(repo.explain("backup", restic_error.decode(errors="replace")))
    return summary_of(output.decode()), reader.result()


def index_postgresql(repo: Repository, container: str, data_dir: Path, backup_id: str, state: Path) -> dict[str, Any]:
    """The index while Orthanc runs: a dump, then the files it refers to that the storage pass lacks.

    A file the dump refers to can be deleted before it is copied (its instance was deleted after the
    dump): the dump is then taken again, and it no longer refers to that file."""
    for attempt in range(1, DUMP_ATTEMPTS + 1):
        summary, index = dump_postgresql(repo, container, backup_id)
        present, gone = late_files(data_dir, index, state)
        late = {"snapshot": None}
        if present:
            late = repo.backup(["--files-from-verbatim", str(files_from(present, state))], backup_id, "late")
        if not gone:
            return {
                **summary,
                "late_snapshot": late["snapshot"],
                "late_files": len(present),
                "dump_attempts": attempt,
                "index_entries_without_file": [],
                **index.inventory(),
            }
        repo.run(["forget", summary["snapshot"], *([late["snapshot"]] if late["snapshot"] else [])])
    raise BackupError(
        f"the index kept referring to files that disappeared before they were copied ({len(gone)} after "
        f"{DUMP_ATTEMPTS} dumps, e.g. {gone[0]}): deletions are running faster than the backup; try again later"
    )


def store_manifest(repo: Repository, backup_id: str, manifest: Path) -> dict[str, Any]:
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BackupError(f"{manifest}: cannot read the manifest ({error})") from error
    with manifest.open("rb") as stream:
        summary = repo.backup(["--stdin", "--stdin-filename", MANIFEST_NAME], backup_id, "manifest", stdin=stream)
    return {**summary, "manifest": content}


def backups(repo: Repository) -> list[dict[str, Any]]:
    """Complete backups (those with a manifest), oldest first."""
    found = []
    for snapshot in repo.snapshots("manifest"):
        found.append({"backup": tag_value(snapshot, "backup"), "time": snapshot["time"], "manifest": snapshot["id"]})
    return sorted(found, key=lambda item: moment(item["time"]))


def forget(
    repo: Repository,
    daily: int,
    weekly: int,
    monthly: int,
    prune_days: int = 0,
    pruned: Path | None = None,
    listed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Keep the manifests restic's policy keeps, and every part of those backups; forget the rest, among
    LISTED (the stack's snapshots init() listed before this backup made its own, which are kept) or, by
    default, the stack's snapshots now. The space of forgotten snapshots is reclaimed (restic prune, whose
    cost grows with the repository) when the last prune recorded in PRUNED is PRUNE_DAYS old or more, or
    none is recorded."""
    policy = ["--keep-daily", str(daily), "--keep-weekly", str(weekly), "--keep-monthly", str(monthly)]
    groups = json.loads(
        repo.run(
            [
                "forget",
                "--json",
                "--dry-run",
                "--host",
                repo.host,
                "--tag",
                f"stack={repo.stack},part=manifest",
                "--group-by",
                "host",
                *policy,
            ]
        )
        or "[]"
    )
    manifests = [s for group in groups for s in group.get("keep") or []]
    kept = {tag_value(s, "backup") for s in manifests}
    snapshots = repo.snapshots() if listed is None else listed
    newest_kept = max((moment(s["time"]) for s in manifests), default=None)
    # A manifest is the last part of its backup written. Parts of a backup still being made are newer than
    # every kept manifest: leave them.
    removed = [
        s["id"]
        for s in snapshots
        if tag_value(s, "backup") not in kept and newest_kept is not None and moment(s["time"]) < newest_kept
    ]
    if removed:
        repo.run(["forget", *removed])
    prune = prune_due(pruned, prune_days)
    if prune:
        repo.run(["prune", "--max-unused", "10%"])
        if pruned is not None:
            pruned.write_text(f"{time.time()}\n", encoding="utf-8")
    return {"kept_backups": sorted(kept), "removed_snapshots": len(removed), "pruned": prune}


def prune_due(pruned: Path | None, prune_days: int) -> bool:
    """Whether the last prune, recorded in PRUNED (seconds since the epoch), is PRUNE_DAYS old or more."""
    if pruned is None or prune_days <= 0:
        return True
    try:
        last = float(pruned.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return time.time() - last >= prune_days * 86400


def check(repo: Repository) -> dict[str, Any]:
    repo.run(["check"])
    return {"check": "ok"}


def restore(repo: Repository, backup_id: str, target: Path) -> dict[str, Any]:
    """Every part of one backup under TARGET (absolute paths kept), verified; the manifest beside them."""
    complete = backups(repo)
    if not complete:
        raise BackupError(f"the repository {repo.url} holds no complete backup of stack {repo.stack}")
    chosen = complete[-1] if backup_id == "latest" else next((b for b in complete if b["backup"] == backup_id), None)
    if chosen is None:
        names = ", ".join(b["backup"] for b in complete[-5:])
        raise BackupError(f"no complete backup {backup_id} of stack {repo.stack} in {repo.url} (latest: {names})")
    manifest = json.loads(repo.run(["dump", chosen["manifest"], f"/{MANIFEST_NAME}"]))
    target.mkdir(mode=0o700, parents=True, exist_ok=False)
    parts = [p for p in (manifest["snapshots"].get(k) for k in ("storage", "index", "late")) if p]
    for snapshot in parts:
        if manifest["index_backend"] == "postgresql" and snapshot == manifest["snapshots"]["index"]:
            with (target / DUMP_NAME).open("wb") as out:
                result = subprocess.run(
                    ["restic", "dump", snapshot, f"/{DUMP_NAME}"], env=repo.env(), stdout=out, stderr=subprocess.PIPE
                )
            if result.returncode != 0:
                raise BackupError(repo.explain("dump", result.stderr.decode(errors="replace")))
            continue
        repo.run(["restore", snapshot, "--target", str(target), "--verify"])
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    data = target / str(manifest["data_dir"]).lstrip("/")
    return {
        "backup": chosen["backup"],
        "data_dir": str(data),
        "dump": str(target / DUMP_NAME) if manifest["index_backend"] == "postgresql" else "",
        "manifest": manifest,
    }


def load_postgresql(container: str, dump: Path) -> dict[str, Any]:
    """Load a dump into the stack's new, empty index database, as the role Orthanc connects as."""
    with dump.open("rb") as stream:
        result = subprocess.run(
            ["docker", "exec", "-i", container, "psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", PG_DSN, *LOAD_AS_ORTHANC],
            stdin=stream,
            capture_output=True,
            check=False,
        )
    if result.returncode != 0:
        detail = " ".join(result.stderr.decode(errors="replace").split())[-600:]
        raise BackupError(f"loading {dump} into the PostgreSQL index in {container} failed: {detail}")
    return {"loaded": str(dump)}


def index_of_rows(rows: Iterable[str]) -> Index:
    """The Index of PG_INVENTORY's rows (level, public ID, DICOM MD5 or \\N)."""
    index = Index()
    for row in rows:
        level, public, md5 = row.split("\t")
        name = PG_LEVELS[int(level)]
        index.counts[name] = index.counts.get(name, 0) + 1
        if int(level) == PG_INSTANCE_LEVEL and md5 != "\\N":
            index.instance_md5[public] = md5
    return index


def query_postgresql(service: str, copy: str) -> list[str]:
    """The rows a COPY ... TO STDOUT prints in the PostgreSQL index of a Swarm service, while Orthanc runs."""
    container = StackService(service, INVENTORY_WAIT_SECONDS).healthy().container
    result = subprocess.run(
        ["docker", "exec", container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", PG_DSN, "-c", copy],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        detail = " ".join(result.stderr.decode(errors="replace").split())[-600:]
        raise BackupError(f"reading the PostgreSQL index in {service} failed: {detail}")
    return result.stdout.decode().splitlines()


def inventory_postgresql(service: str) -> dict[str, Any]:
    """The inventory read from the PostgreSQL index itself: one query, where Orthanc's /tools/find with
    the attachments takes minutes at 100,000 instances on the PostgreSQL plugin."""
    return index_of_rows(query_postgresql(service, PG_INVENTORY)).inventory()


class StackService:
    """A Swarm service of the stack, driven by the orthanc_service module's code (installed beside this file)."""

    def __init__(self, name: str, timeout: int) -> None:
        from orthanc_service import Swarm

        self.name = name
        self.timeout = timeout
        self.swarm = Swarm("docker", docker)

    def _task(self, state: str, poll_seconds: float = 1.0) -> Any:
        from orthanc_service import ServiceError, ServiceTask

        try:
            return ServiceTask(self.swarm, self.name, self.timeout, poll_seconds=poll_seconds).run(state)
        except ServiceError as error:
            raise BackupError(str(error)) from error

    def healthy(self) -> Any:
        """The service's one healthy task (container, image), once Swarm has one."""
        return self._task("healthy")

    def stop(self) -> None:
        """Scaled to no task, returning as soon as its container is gone (polled every 0.1 s)."""
        self._task("stopped", poll_seconds=0.1)

    def start(self) -> None:
        """Scaled to one task again, not awaited: healthy() waits."""
        from orthanc_service import ServiceError

        try:
            self.swarm.scale(self.name, 1)
        except ServiceError as error:
            raise BackupError(str(error)) from error

    def freeze(self) -> Frozen:
        """The service's healthy task frozen where it stands (docker pause: the cgroup freezer stops every
        process of the container between two system calls; connections wait, none is refused), with a
        watchdog that thaws it after FREEZE_LIMIT_SECONDS."""
        container = self.healthy().container
        rc, out, err = docker(["docker", "pause", container])
        if rc != 0:
            raise BackupError(
                f"docker pause of {self.name}'s container {container[:12]} failed: {(err or out).strip()}"
            )
        try:
            watchdog = subprocess.Popen(
                ["sh", "-c", 'sleep "$1"; exec docker unpause "$2"', "watchdog", str(FREEZE_LIMIT_SECONDS), container],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # outlives this process if it is killed
            )
        except OSError:
            docker(["docker", "unpause", container])  # never frozen without a watchdog
            raise
        return Frozen(container, watchdog)

    def thaw(self, frozen: Frozen) -> None:
        """The container frozen by freeze() running again; BackupError when it was no longer frozen (the
        watchdog thawed it, so whatever was copied meanwhile was copied while Orthanc ran)."""
        rc, out, err = docker(["docker", "unpause", frozen.container])
        frozen.watchdog.kill()
        frozen.watchdog.wait()
        if rc != 0:
            raise BackupError(
                f"docker unpause of {self.name}'s container {frozen.container[:12]} failed ({(err or out).strip()}): "
                f"it was frozen for more than {FREEZE_LIMIT_SECONDS} s and thawed by the watchdog, or is gone"
            )


@dataclass
class Frozen:
    """A container StackService.freeze() froze, and the watchdog that would thaw it."""

    container: str
    watchdog: subprocess.Popen[bytes]


def docker(argv: list[str]) -> tuple[int, str, str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout, result.stderr


def deploy(stack: str, stack_file: Path) -> None:
    rc, out, err = docker(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(stack_file), stack])
    if rc != 0:
        raise BackupError(f"docker stack deploy -c {stack_file} {stack} failed: {(err or out).strip()}")


def offline_sqlite_service(
    data_dir: Path, state: Path, service: str, stack: str, stack_file: Path | None, timeout: int
) -> dict[str, Any]:
    """offline_sqlite on the Swarm service: stopped, then scaled to 1 again or, with STACK_FILE, the stack
    deployed from it."""
    orthanc = StackService(service, timeout)
    staged = offline_sqlite(
        data_dir,
        state,
        stop=orthanc.stop,
        resume=orthanc.start,
        start=(lambda: deploy(stack, stack_file)) if stack_file else None,
    )
    # The upgrade's inventory before the switch, read from the stage while the target starts.
    return {**staged, **read_sqlite(Path(staged["stage"])).inventory()}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="auscat-backup", description=__doc__.splitlines()[0])
    main.add_argument("--repository", required=True)
    main.add_argument("--password-file", type=Path, required=True)
    main.add_argument("--stack", required=True)
    main.add_argument("--cache-dir", type=Path)
    sub = main.add_subparsers(dest="command", required=True)
    sub.add_parser("init")
    for name in ("storage", "index-sqlite", "index-postgresql"):
        step = sub.add_parser(name)
        step.add_argument("--data-dir", type=Path, required=True)
        step.add_argument("--backup-id", required=True)
        step.add_argument("--state", type=Path, required=True)
        if name == "index-postgresql":
            step.add_argument("--container", required=True)
    offline = sub.add_parser("offline-sqlite")
    offline.add_argument("--data-dir", type=Path, required=True)
    offline.add_argument("--state", type=Path, required=True)
    offline.add_argument("--service", required=True, help="the Orthanc service, stopped and started again")
    offline.add_argument("--deploy", type=Path, help="a stack file deployed instead of starting the service again")
    offline.add_argument("--timeout", type=int, default=180, help="seconds for the service to stop")
    manifest = sub.add_parser("manifest")
    manifest.add_argument("--backup-id", required=True)
    manifest.add_argument("--manifest", type=Path, required=True)
    policy = sub.add_parser("forget")
    for keep in ("daily", "weekly", "monthly"):
        policy.add_argument(f"--keep-{keep}", type=int, required=True)
    policy.add_argument("--prune-days", type=int, default=0, help="prune when the last prune is this old (0: always)")
    policy.add_argument("--pruned", type=Path, help="where the time of the last prune is recorded")
    sub.add_parser("check")
    sub.add_parser("list")
    restored = sub.add_parser("restore")
    restored.add_argument("--backup-id", required=True)
    restored.add_argument("--target", type=Path, required=True)
    load = sub.add_parser("load-postgresql")
    load.add_argument("--container", required=True)
    load.add_argument("--dump", type=Path, required=True)
    inventory = sub.add_parser("inventory-postgresql")
    inventory.add_argument("--service", required=True)
    return main


def run(args: argparse.Namespace) -> dict[str, Any]:
    # The commands that do not open the repository.
    if args.command == "load-postgresql":
        return load_postgresql(args.container, args.dump)
    if args.command == "inventory-postgresql":
        return inventory_postgresql(args.service)
    if args.command == "offline-sqlite":
        return offline_sqlite_service(args.data_dir, args.state, args.service, args.stack, args.deploy, args.timeout)
    if not args.password_file.is_file():
        raise BackupError(f"{args.password_file}: the repository password file does not exist")
    repo = Repository(args.repository, args.password_file, args.stack, args.cache_dir)
    if args.command == "init":
        return {key: value for key, value in init(repo).items() if key != "snapshots"}
    if args.command == "storage":
        with backup_lock(args.state.parent, f"another backup of stack {args.stack} is running; try again later"):
            return storage_pass(repo, args.data_dir, args.backup_id, args.state)
    if args.command == "index-sqlite":
        return index_sqlite(repo, args.data_dir, args.backup_id, args.state)
    if args.command == "index-postgresql":
        return index_postgresql(repo, args.container, args.data_dir, args.backup_id, args.state)
    if args.command == "manifest":
        return store_manifest(repo, args.backup_id, args.manifest)
    if args.command == "forget":
        return forget(repo, args.keep_daily, args.keep_weekly, args.keep_monthly, args.prune_days, args.pruned)
    if args.command == "check":
        return check(repo)
    if args.command == "list":
        return {"backups": backups(repo)}
    return restore(repo, args.backup_id, args.target)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        result = run(args)
    except (BackupError, OSError) as error:
        # serving_as_before: Orthanc was not left stopped or switched (offline-sqlite), nothing to roll back.
        failed = {"error": f"{args.command}: {error}"}
        print(json.dumps({**failed, "serving_as_before": True} if isinstance(error, ServingAsBefore) else failed))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
