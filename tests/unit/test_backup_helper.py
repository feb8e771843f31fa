"""The host's backup helper (auscat_backup.py) against the real restic, on a fake Orthanc data directory.

restic derives its key (scrypt, calibrated to about half a second) in every command, so the tests share
what they can: one repository made by init() and copied per test, and module fixtures holding backups
that the tests using them only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "orthanc_lifecycle" / "files"))

import auscat_backup
import auscat_scheduled_backup
import orthanc_availability
from auscat_backup import BackupError, Repository

STACK = "unit"
PASSWORD = "Repository-Password-Under-Test-0042"  # noqa: S105 - the password of throwaway test repositories
BACKUP_ID = "unit-20261201T020000Z"
ORTHANC_UID = 4242  # the image's user
# Orthanc's SQLite index numbers the levels from 1 (the PostgreSQL plugin from 0).
PATIENT, STUDY, SERIES, INSTANCE = 1, 2, 3, 4
DICOM = 1
SERIES_ATTACHMENT = 1025  # a user-defined attachment type, attached to the series
SCHEMA = """
CREATE TABLE Resources(internalId INTEGER PRIMARY KEY, resourceType INTEGER, publicId TEXT, parentId INTEGER);
CREATE TABLE AttachedFiles(id INTEGER, fileType INTEGER, uuid TEXT, compressedSize INTEGER,
                           uncompressedSize INTEGER, compressionType INTEGER, uncompressedMD5 TEXT,
                           compressedMD5 TEXT, PRIMARY KEY(id, fileType));
"""
PG_RESOURCE_COLUMNS = ["internalid", "resourcetype", "publicid", "parentid"]
PG_ATTACHMENT_COLUMNS = [
    "id",
    "filetype",
    "uuid",
    "compressedsize",
    "uncompressedsize",
    "compressiontype",
    "uncompressedhash",
    "compressedhash",
    "revision",
]


def public_id(seed: str) -> str:
    """An identifier shaped like Orthanc's: five groups of eight hex digits."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:40]
    return "-".join(digest[start : start + 8] for start in range(0, 40, 8))


def md5(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


@dataclass
class Resource:
    internal_id: int
    level: int
    public_id: str
    parent_id: int | None


@dataclass
class Attachment:
    resource: int
    file_type: int
    uuid: str
    size: int
    md5: str


@dataclass
class FakeOrthanc:
    """An Orthanc data directory: storage files at <uuid[0:2]>/<uuid[2:4]>/<uuid> and the SQLite index with
    the two tables the helper reads, in Orthanc's column names. One patient, study and series."""

    root: Path
    instances: int = 3
    size: int = 16384
    resources: list[Resource] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True)
        with self.database() as database:
            database.executescript(SCHEMA)
        patient = self.add_resource(PATIENT, None)
        study = self.add_resource(STUDY, patient)
        self.series = self.add_resource(SERIES, study)
        self.attach(self.series, SERIES_ATTACHMENT, os.urandom(512))
        for _ in range(self.instances):
            self.add_instance()

    @contextlib.contextmanager
    def database(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.root / "index")
        connection.execute("PRAGMA synchronous = OFF")  # a throwaway index needs no fsync per row
        try:
            yield connection
            connection.commit()
        finally:
            connection.close()

    def add_resource(self, level: int, parent: int | None) -> int:
        resource = Resource(len(self.resources) + 1, level, public_id(f"{self.root}/{len(self.resources)}"), parent)
        with self.database() as database:
            database.execute(
                "INSERT INTO Resources (internalId, resourceType, publicId, parentId) VALUES (?, ?, ?, ?)",
                (resource.internal_id, level, resource.public_id, parent),
            )
        self.resources.append(resource)
        return resource.internal_id

    def attach(
        self, resource: int, file_type: int, content: bytes, *, name: str | None = None, write: bool = True
    ) -> Attachment:
        """The file (unless write is false), then the index rows: Orthanc's order."""
        attachment = Attachment(resource, file_type, name or str(uuid.uuid4()), len(content), md5(content))
        if write:
            self.write(attachment.uuid, content)
        with self.database() as database:
            database.execute(
                "INSERT INTO AttachedFiles (id, fileType, uuid, compressedSize, uncompressedSize, compressionType,"
                " uncompressedMD5, compressedMD5) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    resource,
                    file_type,
                    attachment.uuid,
                    attachment.size,
                    attachment.size,
                    attachment.md5,
                    attachment.md5,
                ),
            )
        self.attachments.append(attachment)
        return attachment

    def add_instance(self, content: bytes | None = None, *, name: str | None = None, write: bool = True) -> Attachment:
        """A new instance of the series with its DICOM file."""
        content = os.urandom(self.size) if content is None else content
        return self.attach(self.add_resource(INSTANCE, self.series), DICOM, content, name=name, write=write)

    def stored_path(self, name: str) -> Path:
        return self.root / name[0:2] / name[2:4] / name

    def write(self, name: str, content: bytes) -> None:
        self.stored_path(name).parent.mkdir(parents=True, exist_ok=True)
        self.stored_path(name).write_bytes(content)

    def stored_names(self) -> set[str]:
        return {attachment.uuid for attachment in self.attachments if self.stored_path(attachment.uuid).is_file()}

    def written_an_hour_ago(self) -> None:
        """The stored files as an archive has them: written well before a backup begins."""
        an_hour_ago = time.time() - 3600
        for name in self.stored_names():
            os.utime(self.stored_path(name), (an_hour_ago, an_hour_ago))

    def digest(self) -> str:
        """sha256 over the sorted "publicId md5" lines of the instances, from what was written."""
        public = {resource.internal_id: resource.public_id for resource in self.resources if resource.level == INSTANCE}
        lines = sorted(f"{public[a.resource]} {a.md5}\n" for a in self.attachments if a.file_type == DICOM)
        return hashlib.sha256("".join(lines).encode()).hexdigest()

    def pg_dump(self, resource_columns: list[str], attachment_columns: list[str]) -> list[bytes]:
        """The same content as plain pg_dump prints the PostgreSQL plugin's index (levels from 0)."""
        resources = [
            {
                "internalid": str(r.internal_id),
                "resourcetype": str(r.level - 1),
                "publicid": r.public_id,
                "parentid": "\\N" if r.parent_id is None else str(r.parent_id),
            }
            for r in self.resources
        ]
        attachments = [
            {
                "id": str(a.resource),
                "filetype": str(a.file_type),
                "uuid": a.uuid,
                "compressedsize": str(a.size),
                "uncompressedsize": str(a.size),
                "compressiontype": "1",
                "uncompressedhash": a.md5,
                "compressedhash": a.md5,
                "revision": "0",
            }
            for a in self.attachments
        ]
        tag = {"id": "1", "taggroup": "16", "tagelement": "32", "value": "PATIENT-0042"}
        text = [
            "--",
            "-- PostgreSQL database dump",
            "--",
            "SET client_encoding = 'UTF8';",
            "CREATE TABLE public.resources (",
            "    internalid bigint NOT NULL,",
            "    resourcetype integer NOT NULL,",
            "    publicid character varying(64) NOT NULL,",
            "    parentid bigint",
            ");",
            *copy_block("attachedfiles", attachment_columns, attachments),
            *copy_block("maindicomtags", ["id", "taggroup", "tagelement", "value"], [tag]),  # to be passed over
            *copy_block("resources", resource_columns, resources),
            "SELECT pg_catalog.setval('public.resources_internalid_seq', 42, true);",
            "-- PostgreSQL database dump complete",
        ]
        return [f"{line}\n".encode() for line in text]


def copy_block(table: str, columns: list[str], rows: list[dict[str, str]]) -> list[str]:
    return [
        f"COPY public.{table} ({', '.join(columns)}) FROM stdin;",
        *("\t".join(row[column] for column in columns) for row in rows),
        "\\.",
        "",
    ]


def files_under(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def owned_by_orthanc(root: Path) -> None:
    """The data directory as the image leaves it: Orthanc's user (when the tests can give it), not 0755."""
    root.chmod(0o750)
    if os.geteuid() == 0:
        for path in [root, *root.rglob("*")]:
            os.chown(path, ORTHANC_UID, ORTHANC_UID)


def metadata_under(root: Path) -> dict[str, tuple[int, int, int]]:
    """Mode, owner and group of the directory and of everything under it (the working files aside)."""
    return {
        path.relative_to(root).as_posix(): (path.stat().st_mode, path.stat().st_uid, path.stat().st_gid)
        for path in [root, *root.rglob("*")]
        if auscat_backup.STAGE_NAME not in path.parts and path.name != auscat_backup.MANIFEST_NAME
    }


def write_manifest(path: Path, data_dir: Path, storage: dict[str, Any], index: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "stack": STACK,
        "data_dir": str(data_dir),
        "index_backend": "sqlite",
        "snapshots": {"storage": storage["snapshot"], "index": index["snapshot"], "late": None},
    }
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def file_names(repo: Repository, snapshot: str) -> set[str]:
    """The name of every file in a snapshot, as `restic ls` shows them."""
    nodes = [json.loads(line) for line in repo.run(["ls", "--json", snapshot]).splitlines()]
    return {node["name"] for node in nodes if node.get("type") == "file"}


def parts(repo: Repository) -> set[tuple[str, str, str]]:
    """(backup, part, short id) of every snapshot of the stack."""
    return {
        (auscat_backup.tag_value(s, "backup"), auscat_backup.tag_value(s, "part"), s["short_id"])
        for s in repo.snapshots()
    }


def copy_repository(source: Repository, where: Path) -> Repository:
    """A copy of a local repository, with a cache of its own."""
    shutil.copytree(source.url, where / "repo")
    return Repository(str(where / "repo"), source.password_file, STACK, where / "cache")


@pytest.fixture(scope="session")
def restic() -> str:
    found = shutil.which("restic")
    if found is None:
        pytest.fail("restic is not installed on this machine: ./bootstrap.sh installs it (role orthanc_lifecycle)")
    return found


@dataclass
class Initialised:
    repo: Repository
    result: dict[str, Any]


@pytest.fixture(scope="session")
def initialised(restic: str, tmp_path_factory: pytest.TempPathFactory) -> Initialised:
    """A repository made by init(), and what init() returned. init takes seconds: the tests copy it."""
    root = tmp_path_factory.mktemp("initialised")
    password_file = root / "password"
    password_file.write_text(f"{PASSWORD}\n", encoding="utf-8")
    password_file.chmod(0o600)
    repo = Repository(str(root / "repo"), password_file, STACK, root / "cache")
    return Initialised(repo, auscat_backup.init(repo))


def offline(data_dir: Path, state: Path, calls: list[str] | None = None, target: bool = False) -> dict[str, Any]:
    """The offline step with the Swarm service played by CALLS: what it was asked to do, in order."""
    calls = [] if calls is None else calls
    return auscat_backup.offline_sqlite(
        data_dir,
        state,
        stop=lambda: calls.append("stop"),
        resume=lambda: calls.append("resume"),
        start=(lambda: calls.append("start target")) if target else None,
    )


@pytest.fixture
def repository(initialised: Initialised, tmp_path: Path) -> Repository:
    return copy_repository(initialised.repo, tmp_path)


@dataclass
class SqliteBackup:
    repo: Repository
    orthanc: FakeOrthanc
    state: Path
    stored_during_pass: set[str]
    late: Attachment
    storage: dict[str, Any]
    index: dict[str, Any]
    manifest: dict[str, Any]


@pytest.fixture(scope="module")
def sqlite_backup(initialised: Initialised, tmp_path_factory: pytest.TempPathFactory) -> SqliteBackup:
    """One complete backup of a SQLite stack, with an instance that arrived during the storage pass."""
    root = tmp_path_factory.mktemp("sqlite-backup")
    repo = copy_repository(initialised.repo, root)
    orthanc = FakeOrthanc(root / "data")
    orthanc.written_an_hour_ago()
    state = root / "state" / "backup.names"
    stored = orthanc.stored_names()
    storage = auscat_backup.storage_pass(repo, orthanc.root, BACKUP_ID, state)
    late = orthanc.add_instance()
    offline(orthanc.root, state)
    index = auscat_backup.index_sqlite(repo, orthanc.root, BACKUP_ID, state)
    manifest_file = write_manifest(root / "manifest.json", orthanc.root, storage, index)
    manifest = auscat_backup.store_manifest(repo, BACKUP_ID, manifest_file)
    return SqliteBackup(repo, orthanc, state, stored, late, storage, index, manifest)


@dataclass
class IrregularBackup:
    repo: Repository
    half_written: Attachment
    missing: Attachment
    index: dict[str, Any]


@pytest.fixture(scope="module")
def irregular_backup(initialised: Initialised, tmp_path_factory: pytest.TempPathFactory) -> IrregularBackup:
    """A SQLite backup whose storage pass found a file half written (Orthanc writes the file, then commits
    its index rows), and whose index has an entry with no file."""
    root = tmp_path_factory.mktemp("irregular-backup")
    repo = copy_repository(initialised.repo, root)
    orthanc = FakeOrthanc(root / "data", instances=1)
    orthanc.written_an_hour_ago()
    state = root / "state" / "backup.names"
    name, content = str(uuid.uuid4()), os.urandom(orthanc.size)
    orthanc.write(name, content[: len(content) // 2])
    auscat_backup.storage_pass(repo, orthanc.root, BACKUP_ID, state)
    half_written = orthanc.add_instance(content, name=name)  # the write completes, the index rows follow
    missing = orthanc.add_instance(write=False)
    offline(orthanc.root, state)
    index = auscat_backup.index_sqlite(repo, orthanc.root, BACKUP_ID, state)
    return IrregularBackup(repo, half_written, missing, index)


def test_init_creates_a_repository_once(initialised: Initialised) -> None:
    assert initialised.result == {"repository": initialised.repo.url, "created": True, "snapshots": []}
    assert (Path(initialised.repo.url) / "config").is_file()
    opened = auscat_backup.init(initialised.repo)
    assert opened == {"repository": initialised.repo.url, "created": False, "snapshots": []}


def test_init_with_a_wrong_password_names_the_password_file_not_the_password(
    repository: Repository, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("Not-The-Repository-Password-4711\n", encoding="utf-8")
    with pytest.raises(BackupError) as refused:
        auscat_backup.init(Repository(repository.url, wrong, STACK, tmp_path / "cache"))
    message = str(refused.value)
    assert "refused the password" in message
    assert str(wrong) in message
    assert "Not-The-Repository-Password-4711" not in message
    assert PASSWORD not in message


def test_check_of_a_missing_repository_names_the_repository(restic: str, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(f"{PASSWORD}\n", encoding="utf-8")
    absent = tmp_path / "absent"
    with pytest.raises(BackupError) as refused:
        auscat_backup.check(Repository(str(absent), password_file, STACK, tmp_path / "cache"))
    assert f"no repository at {absent}" in str(refused.value)


def test_storage_pass_records_the_names_it_copied_in_the_state_file(sqlite_backup: SqliteBackup) -> None:
    recorded = dict(line.split() for line in sqlite_backup.state.read_text(encoding="utf-8").splitlines())
    assert sorted(recorded) == sorted(sqlite_backup.stored_during_pass)
    assert set(recorded.values()) == {"new"}, "the first pass reads every file"


def test_storage_pass_leaves_the_index_to_the_index_step(sqlite_backup: SqliteBackup) -> None:
    names = file_names(sqlite_backup.repo, sqlite_backup.storage["snapshot"])
    assert "index" not in names
    assert names == sqlite_backup.stored_during_pass


def test_index_step_copies_the_files_that_arrived_during_the_storage_pass(sqlite_backup: SqliteBackup) -> None:
    assert sqlite_backup.late.uuid not in sqlite_backup.stored_during_pass
    assert sqlite_backup.index["late_files"] == 1
    assert sqlite_backup.index["index_entries_without_file"] == []


def test_index_step_reports_the_counts_and_the_digest_of_the_index(sqlite_backup: SqliteBackup) -> None:
    index = sqlite_backup.index
    instances = sqlite_backup.orthanc.instances + 1
    assert (index["patients"], index["studies"], index["series"], index["instances"]) == (1, 1, 1, instances)
    assert index["listed"] == instances
    assert index["digest"] == sqlite_backup.orthanc.digest()


def test_restore_gives_back_every_file_of_the_data_directory_byte_identical(
    sqlite_backup: SqliteBackup, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    restored = auscat_backup.restore(sqlite_backup.repo, "latest", target)
    data = target / str(sqlite_backup.orthanc.root).lstrip("/")
    assert restored["backup"] == BACKUP_ID
    assert restored["data_dir"] == str(data)
    original = files_under(sqlite_backup.orthanc.root)
    late = sqlite_backup.orthanc.stored_path(sqlite_backup.late.uuid).relative_to(sqlite_backup.orthanc.root)
    assert {"index", late.as_posix()} <= set(original)
    assert files_under(data) == original


def test_list_shows_the_complete_backup(sqlite_backup: SqliteBackup) -> None:
    found = auscat_backup.backups(sqlite_backup.repo)
    assert [backup["backup"] for backup in found] == [BACKUP_ID]
    assert found[0]["manifest"].startswith(sqlite_backup.manifest["snapshot"])


def test_restore_of_an_unknown_backup_names_it_and_the_latest_backups(
    sqlite_backup: SqliteBackup, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    with pytest.raises(BackupError) as refused:
        auscat_backup.restore(sqlite_backup.repo, "unit-19990101T000000Z", target)
    assert "no complete backup unit-19990101T000000Z" in str(refused.value)
    assert f"latest: {BACKUP_ID}" in str(refused.value)
    assert not target.exists()


def test_index_step_reports_an_index_entry_whose_file_is_missing(irregular_backup: IrregularBackup) -> None:
    assert irregular_backup.index["index_entries_without_file"] == [irregular_backup.missing.uuid]


def test_index_step_carries_a_file_the_storage_pass_found_half_written(irregular_backup: IrregularBackup) -> None:
    # Orthanc writes a storage file in place, then commits its index rows: a storage pass that reads the
    # file meanwhile copies half of it, and the index step must copy it again.
    assert irregular_backup.index["late_files"] == 1, (
        f"the index step did not copy {irregular_backup.half_written.uuid}: the backup keeps the half of it "
        "that the storage pass read"
    )


def archive_after_storage_pass(repository: Repository, tmp_path: Path, instances: int) -> tuple[FakeOrthanc, Path]:
    """An archive written an hour ago (its directories are new all the same) and the record of the storage
    pass of BACKUP_ID over it."""
    orthanc = FakeOrthanc(tmp_path / "data", instances=instances)
    orthanc.written_an_hour_ago()
    state = tmp_path / "state" / "backup.names"
    auscat_backup.storage_pass(repository, orthanc.root, BACKUP_ID, state)
    return orthanc, state


def test_a_late_file_deleted_once_orthanc_serves_again_is_still_in_the_backup(
    repository: Repository, tmp_path: Path
) -> None:
    orthanc, state = archive_after_storage_pass(repository, tmp_path, instances=2)
    late = orthanc.add_instance()
    owned_by_orthanc(orthanc.root)
    before = metadata_under(orthanc.root)
    content = orthanc.stored_path(late.uuid).read_bytes()
    staged = offline(orthanc.root, state)
    assert auscat_backup.read_sqlite(Path(staged["stage"])).inventory()["instances"] == 3
    orthanc.stored_path(late.uuid).unlink()  # Orthanc, started again, deletes the instance
    index = auscat_backup.index_sqlite(repository, orthanc.root, BACKUP_ID, state)
    assert (index["late_files"], index["index_entries_without_file"]) == (1, [])
    assert not (orthanc.root / auscat_backup.STAGE_NAME).exists(), "the stage was left in the data directory"
    manifest = write_manifest(tmp_path / "manifest.json", orthanc.root, {"snapshot": None}, index)
    auscat_backup.store_manifest(repository, BACKUP_ID, manifest)
    restored = auscat_backup.restore(repository, BACKUP_ID, tmp_path / "restore")
    assert orthanc.stored_path(late.uuid).relative_to(orthanc.root).as_posix() in files_under(
        Path(restored["data_dir"])
    )
    assert (Path(restored["data_dir"]) / late.uuid[0:2] / late.uuid[2:4] / late.uuid).read_bytes() == content
    # Owner and mode as Orthanc left them, from the stage as from the storage pass: Orthanc runs as its own user.
    after = metadata_under(Path(restored["data_dir"]))  # the index part only: this backup has no storage part
    assert {".", "index", orthanc.stored_path(late.uuid).relative_to(orthanc.root).as_posix()} <= set(after)
    assert after == {path: before[path] for path in after}


def test_offline_step_links_only_the_files_written_since_the_storage_pass_began(
    repository: Repository, tmp_path: Path
) -> None:
    orthanc, state = archive_after_storage_pass(repository, tmp_path, instances=2)
    late = orthanc.add_instance()
    staged = offline(orthanc.root, state)
    assert staged["linked_files"] == 1
    assert [path.name for path in auscat_backup.links_of(orthanc.root).iterdir()] == [late.uuid]
    assert staged["index_bytes"] == (orthanc.root / "index").stat().st_size
    assert (Path(staged["stage"]) / "index").read_bytes() == (orthanc.root / "index").read_bytes()


def test_offline_step_stops_stages_and_starts_the_target_when_given_one(tmp_path: Path) -> None:
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)
    state = tmp_path / "state" / "backup.names"
    state.parent.mkdir()
    auscat_backup.since_file(state).write_text(f"{time.time()}\n", encoding="utf-8")
    calls: list[str] = []
    staged = offline(orthanc.root, state, calls, target=True)
    assert calls == ["stop", "start target"]
    assert staged["linked_files"] == 2  # the instance's and the series' files, in directories new to the pass
    assert auscat_backup.read_sqlite(Path(staged["stage"])).inventory()["digest"] == orthanc.digest()


def test_offline_step_stages_the_index_as_orthanc_left_it_on_stopping(tmp_path: Path) -> None:
    # A running Orthanc has a write-ahead log beside its index; stopping, it folds the log in and removes it.
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)
    (orthanc.root / "index-wal").write_bytes(b"log of the running Orthanc")
    state = tmp_path / "state" / "backup.names"
    state.parent.mkdir()
    auscat_backup.since_file(state).write_text(f"{time.time()}\n", encoding="utf-8")
    staged = auscat_backup.offline_sqlite(
        orthanc.root, state, stop=(orthanc.root / "index-wal").unlink, resume=lambda: None
    )
    assert sorted(path.name for path in Path(staged["stage"]).iterdir() if path.is_file()) == ["index"]
    assert auscat_backup.read_sqlite(Path(staged["stage"])).inventory()["digest"] == orthanc.digest()


def test_offline_step_stages_the_committed_index_of_an_orthanc_frozen_mid_transaction(tmp_path: Path) -> None:
    # Frozen (docker pause), Orthanc leaves its index as a power cut would: transactions committed to the
    # write-ahead log but not yet folded into the index, and one under way. The stage holds exactly the
    # committed ones.
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)
    running = sqlite3.connect(orthanc.root / "index", isolation_level=None)
    assert running.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    running.execute("PRAGMA wal_autocheckpoint = 0")
    orthanc.database = lambda: contextlib.nullcontext(running)  # Orthanc's one connection: never closed
    orthanc.add_instance()  # committed to the log only, not folded into the index
    assert (orthanc.root / "index-wal").stat().st_size > 0
    running.execute("BEGIN IMMEDIATE")
    running.execute("DELETE FROM AttachedFiles")  # under way when the container froze
    state = tmp_path / "state" / "backup.names"
    state.parent.mkdir()
    auscat_backup.since_file(state).write_text(f"{time.time()}\n", encoding="utf-8")
    try:
        staged = offline(orthanc.root, state)
    finally:
        running.rollback()
        running.close()
    assert sorted(p.name for p in Path(staged["stage"]).iterdir() if p.is_file()) == ["index", "index-wal"]
    inventory = auscat_backup.read_sqlite(Path(staged["stage"])).inventory()
    assert (inventory["instances"], inventory["digest"]) == (2, orthanc.digest())


def test_offline_step_resumes_orthanc_when_the_backup_is_told_to_stop_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM raises SystemExit in the scheduled backup (cron, systemd or an operator stopping it).
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)

    def terminated(data_dir: Path, state: Path) -> dict[str, Any]:
        raise SystemExit(143)

    monkeypatch.setattr(auscat_backup, "stage_sqlite", terminated)
    calls: list[str] = []
    with pytest.raises(BackupError, match=r"stopped \(SystemExit 143\); Orthanc was started or thawed again"):
        offline(orthanc.root, tmp_path / "state" / "backup.names", calls)
    assert calls == ["stop", "resume"]


def test_offline_step_starts_orthanc_again_and_removes_the_stage_when_staging_fails(tmp_path: Path) -> None:
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)
    state = tmp_path / "state" / "backup.names"  # no storage pass recorded: the stage cannot be made
    calls: list[str] = []
    with pytest.raises(BackupError, match="no record of the storage pass"):
        offline(orthanc.root, state, calls, target=True)
    assert calls == ["stop", "resume"]
    assert not (orthanc.root / auscat_backup.STAGE_NAME).exists()


def test_offline_step_refuses_before_stopping_when_the_index_copy_would_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc = FakeOrthanc(tmp_path / "data", instances=1)
    monkeypatch.setattr(auscat_backup.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    calls: list[str] = []
    with pytest.raises(BackupError) as refused:
        offline(orthanc.root, tmp_path / "state" / "backup.names", calls)
    assert str(orthanc.root) in str(refused.value)
    assert "1 MiB free" in str(refused.value)
    assert "Orthanc was not stopped" in str(refused.value)
    assert calls == []


def test_second_storage_pass_of_an_unchanged_directory_adds_little(repository: Repository, tmp_path: Path) -> None:
    orthanc = FakeOrthanc(tmp_path / "data", instances=4, size=65536)
    first = auscat_backup.storage_pass(repository, orthanc.root, "unit-1", tmp_path / "state" / "1.names")
    second = auscat_backup.storage_pass(repository, orthanc.root, "unit-2", tmp_path / "state" / "2.names")
    assert first["bytes_added"] > 4 * 65536
    assert second["bytes_added"] < first["bytes_added"] / 20
    assert second["files_new"] == 0
    recorded = dict(line.split() for line in (tmp_path / "state" / "2.names").read_text(encoding="utf-8").splitlines())
    assert sorted(recorded) == sorted(orthanc.stored_names())
    assert set(recorded.values()) == {"unchanged"}


def test_index_step_copies_again_only_the_files_written_since_the_storage_pass_began(
    repository: Repository, tmp_path: Path
) -> None:
    # A first backup reads every file, long after most were written: those are not copied twice.
    orthanc, state = archive_after_storage_pass(repository, tmp_path, instances=3)
    rewritten = sorted(orthanc.stored_names())[0]  # read by the pass, then written again: perhaps read half written
    orthanc.stored_path(rewritten).write_bytes(orthanc.stored_path(rewritten).read_bytes())
    late = orthanc.add_instance()
    offline(orthanc.root, state)
    index = auscat_backup.index_sqlite(repository, orthanc.root, BACKUP_ID, state)
    assert index["late_files"] == 2
    names = file_names(repository, index["snapshot"])
    assert {rewritten, late.uuid} <= names
    assert not names & (set(orthanc.stored_names()) - {rewritten, late.uuid})


@pytest.mark.parametrize("listed_first", [False, True], ids=["listed-now", "listed-by-init-before-the-backup"])
def test_forget_keeps_every_part_of_the_newest_backup_and_a_backup_in_progress(
    sqlite_backup: SqliteBackup, tmp_path: Path, listed_first: bool
) -> None:
    repo = copy_repository(sqlite_backup.repo, tmp_path)  # holds the first complete backup
    data_dir = sqlite_backup.orthanc.root
    made: dict[str, set[tuple[str, str, str]]] = {}
    listed = None
    for backup_id in ("unit-2", "unit-3"):
        if listed_first:
            listed = auscat_backup.init(repo)["snapshots"]  # as a whole backup opens the repository
        # The parts as the steps tag them (Repository.backup), without the steps' extra restic calls.
        storage = repo.backup([str(data_dir)], backup_id, "storage")
        index = repo.backup([str(data_dir / "index")], backup_id, "index")
        manifest_file = write_manifest(tmp_path / backup_id / "manifest.json", data_dir, storage, index)
        manifest = auscat_backup.store_manifest(repo, backup_id, manifest_file)
        made[backup_id] = {
            (backup_id, part, summary["snapshot"])
            for part, summary in (("storage", storage), ("index", index), ("manifest", manifest))
        }
    in_progress = repo.backup([str(data_dir)], "unit-4", "storage")
    result = auscat_backup.forget(repo, daily=1, weekly=0, monthly=0, listed=listed)
    assert result == {"kept_backups": ["unit-3"], "removed_snapshots": 6, "pruned": True}
    assert parts(repo) == {*made["unit-3"], ("unit-4", "storage", in_progress["snapshot"])}


def test_latest_backup_is_the_newest_even_when_the_clock_went_back(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The end of daylight saving in Sydney: 02:40 at +11:00 comes before 02:20 at +10:00. restic records
    # each snapshot's time with the host's offset of the moment.
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}", encoding="utf-8")
    for backup_id, zone, wall_clock in (
        ("unit-before", "Etc/GMT-11", "2026-04-05 02:40:00"),
        ("unit-after", "Etc/GMT-10", "2026-04-05 02:20:00"),
    ):
        monkeypatch.setenv("TZ", zone)
        with manifest.open("rb") as stream:
            repository.backup(
                ["--time", wall_clock, "--stdin", "--stdin-filename", auscat_backup.MANIFEST_NAME],
                backup_id,
                "manifest",
                stdin=stream,
            )
    found = auscat_backup.backups(repository)
    assert {backup["time"][-6:] for backup in found} == {"+11:00", "+10:00"}, "restic ignored TZ"
    assert [backup["backup"] for backup in found] == ["unit-before", "unit-after"]


@pytest.mark.parametrize(
    ("resource_columns", "attachment_columns"),
    [
        (PG_RESOURCE_COLUMNS, PG_ATTACHMENT_COLUMNS),
        (PG_RESOURCE_COLUMNS[::-1], PG_ATTACHMENT_COLUMNS[::-1]),
    ],
    ids=["pg_dump-order", "other-order"],
)
def test_dump_reader_finds_the_inventory_of_the_sqlite_index_with_the_same_content(
    tmp_path: Path, resource_columns: list[str], attachment_columns: list[str]
) -> None:
    orthanc = FakeOrthanc(tmp_path / "data")
    reader = auscat_backup.DumpReader()
    for line in orthanc.pg_dump(resource_columns, attachment_columns):
        reader.feed(line)
    dumped = reader.result()
    inventory = dumped.inventory()
    assert (inventory["patients"], inventory["studies"], inventory["series"], inventory["instances"]) == (1, 1, 1, 3)
    assert set(dumped.uuids) == {attachment.uuid for attachment in orthanc.attachments}
    assert inventory["digest"] == orthanc.digest()
    assert inventory == auscat_backup.read_sqlite(orthanc.root).inventory()


def test_postgresql_inventory_rows_give_the_inventory_of_the_sqlite_index_with_the_same_content(tmp_path: Path) -> None:
    """The rows of PG_INVENTORY: every resource (levels from 0), the DICOM MD5 for instances, NULL above."""
    orthanc = FakeOrthanc(tmp_path / "data")
    dicom = {a.resource: a.md5 for a in orthanc.attachments if a.file_type == DICOM}
    rows = [f"{r.level - 1}\t{r.public_id}\t{dicom.get(r.internal_id, chr(92) + 'N')}" for r in orthanc.resources]
    inventory = auscat_backup.index_of_rows(rows).inventory()
    assert inventory["digest"] == orthanc.digest()
    assert inventory == auscat_backup.read_sqlite(orthanc.root).inventory()


def test_main_reports_a_missing_password_file_as_one_json_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-password"
    argv = ["--repository", str(tmp_path / "repo"), "--password-file", str(missing), "--stack", STACK, "init"]
    assert auscat_backup.main(argv) == 1
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1
    reply = json.loads(printed[0])
    assert list(reply) == ["error"]
    assert str(missing) in reply["error"]
    assert not (tmp_path / "repo").exists()


# The whole backup (auscat_scheduled_backup.py, run by backup.yml and the schedule): the same steps,
# with recorded stand-ins for the Swarm service and the availability watch (the Molecule lifecycle
# scenario runs it from the playbook and from cron against the real stack).


@dataclass
class RecordedService:
    """A Service stand-in: records each call and whether the stage was in the data directory then."""

    calls: list[tuple[str, str, bool]]
    orthanc: FakeOrthanc
    fail_on: str = ""

    def task(self, name: str) -> RecordedService:
        self.name = name
        return self

    def _record(self, call: str) -> None:
        self.calls.append((self.name, call, (self.orthanc.root / auscat_backup.STAGE_NAME).exists()))
        if call == self.fail_on:
            raise BackupError(f"{self.name}: {call} failed")

    def healthy(self) -> Any:
        self._record("healthy")
        return SimpleNamespace(container="c0ffee", image="auscat/orthanc:unit-1")

    def freeze(self) -> str:
        self._record("freeze")
        return "c0ffee"

    def thaw(self, frozen: str) -> None:
        assert frozen == "c0ffee", "thawed what was not frozen"
        self._record("thaw")


@dataclass
class RecordedWatch:
    calls: list[tuple[str, str, bool]]
    orthanc: FakeOrthanc | None = None
    downtime: float = 1.25

    def start(self) -> None:
        self.calls.append(("watch", "start", False))

    def serving(self) -> None:
        staged = self.orthanc is not None and (self.orthanc.root / auscat_backup.STAGE_NAME).exists()
        self.calls.append(("watch", "serving", staged))

    def stop(self) -> dict[str, Any]:
        self.calls.append(("watch", "stop", False))
        return {"total_downtime_seconds": self.downtime}


def backup_settings(repo: Repository, orthanc: FakeOrthanc, state_dir: Path) -> dict[str, Any]:
    return {
        "stack": STACK,
        "repository": repo.url,
        "password_file": str(repo.password_file),
        "state_dir": str(state_dir),
        "data_dir": str(orthanc.root),
        "index_backend": "sqlite",
        "service": f"{STACK}_orthanc",
        "postgresql_service": f"{STACK}_postgresql",
        "url": "http://127.0.0.1:1/system",
        "keep_daily": 7,
        "keep_weekly": 4,
        "keep_monthly": 6,
        "prune_days": 7,
        "check": True,
        "health_timeout": 60,
    }


ORTHANC_SERVICE = f"{STACK}_orthanc"


def test_whole_backup_freezes_orthanc_only_to_stage_the_index_and_backs_the_stage_up_once_thawed(
    repository: Repository, tmp_path: Path
) -> None:
    orthanc = FakeOrthanc(tmp_path / "data")
    calls: list[tuple[str, str, bool]] = []
    service = RecordedService(calls, orthanc)
    settings = backup_settings(repository, orthanc, tmp_path / "state")
    watch = RecordedWatch(calls, orthanc)
    manifest = auscat_scheduled_backup.take_backup(settings, service.task, watch, "playbook")
    assert calls == [
        (ORTHANC_SERVICE, "healthy", False),
        ("watch", "start", False),
        (ORTHANC_SERVICE, "freeze", False),
        (ORTHANC_SERVICE, "thaw", True),  # staged while frozen
        ("watch", "serving", False),  # the stage backed up and removed before Orthanc is awaited
        ("watch", "stop", False),
    ]
    assert manifest["downtime_seconds"] == 1.25
    assert manifest["by"] == "playbook"
    assert manifest["inventory"]["digest"] == orthanc.digest()
    assert manifest["index_entries_without_file"] == []
    assert [b["backup"] for b in auscat_backup.backups(repository)] == [manifest["backup"]]
    assert not list((tmp_path / "state").glob("*.names")), "the working files of the backup were left behind"


def test_whole_backup_thaws_orthanc_when_the_index_copy_fails(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc = FakeOrthanc(tmp_path / "data")
    calls: list[tuple[str, str, bool]] = []
    service = RecordedService(calls, orthanc)

    def full(source: Path, target: Path) -> None:
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(auscat_backup.shutil, "copy2", full)
    with pytest.raises(BackupError, match="No space left on device"):
        auscat_scheduled_backup.take_backup(
            backup_settings(repository, orthanc, tmp_path / "state"), service.task, RecordedWatch(calls)
        )
    assert [call[1] for call in calls[-4:]] == ["freeze", "thaw", "serving", "stop"]
    assert not (orthanc.root / auscat_backup.STAGE_NAME).exists()
    assert calls[-1][0] == "watch"
    assert auscat_backup.backups(repository) == []


def test_whole_backup_discards_a_stage_when_orthanc_was_thawed_before_the_copy_ended(
    repository: Repository, tmp_path: Path
) -> None:
    # The watchdog thawed Orthanc (frozen too long): the stage may hold an index copied while it wrote.
    orthanc = FakeOrthanc(tmp_path / "data")
    calls: list[tuple[str, str, bool]] = []
    service = RecordedService(calls, orthanc, fail_on="thaw")
    with pytest.raises(BackupError, match="thaw failed"):
        auscat_scheduled_backup.take_backup(
            backup_settings(repository, orthanc, tmp_path / "state"), service.task, RecordedWatch(calls, orthanc)
        )
    assert [call[1] for call in calls[-4:]] == ["freeze", "thaw", "serving", "stop"]
    assert not (orthanc.root / auscat_backup.STAGE_NAME).exists()
    assert auscat_backup.backups(repository) == []


def test_whole_backup_refuses_before_freezing_orthanc_without_an_index(repository: Repository, tmp_path: Path) -> None:
    orthanc = FakeOrthanc(tmp_path / "data")
    calls: list[tuple[str, str, bool]] = []
    service = RecordedService(calls, orthanc)
    (orthanc.root / "index").unlink()
    with pytest.raises(BackupError, match="no SQLite index"):
        auscat_scheduled_backup.take_backup(
            backup_settings(repository, orthanc, tmp_path / "state"), service.task, RecordedWatch(calls)
        )
    assert "freeze" not in [call[1] for call in calls if call[0] == ORTHANC_SERVICE]


def test_whole_backup_failing_restic_check_is_never_complete(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc = FakeOrthanc(tmp_path / "data")
    calls: list[tuple[str, str, bool]] = []

    def damaged(repo: Repository) -> dict[str, Any]:
        raise BackupError(f"restic check failed for {repo.url}: pack 0123 damaged")

    monkeypatch.setattr(auscat_backup, "check", damaged)
    with pytest.raises(BackupError, match="pack 0123 damaged"):
        auscat_scheduled_backup.take_backup(
            backup_settings(repository, orthanc, tmp_path / "state"),
            RecordedService(calls, orthanc).task,
            RecordedWatch(calls),
        )
    assert auscat_backup.backups(repository) == [], "a backup that failed restic check got its manifest"
    assert calls[-2:] == [("watch", "serving", False), ("watch", "stop", False)]


def test_upgrades_backup_is_recorded_by_the_helper_of_every_backup(repository: Repository, tmp_path: Path) -> None:
    # The upgrade ran the storage pass and the offline step (deploying its target) as separate commands.
    orthanc = FakeOrthanc(tmp_path / "data")
    orthanc.written_an_hour_ago()
    settings = backup_settings(repository, orthanc, tmp_path / "state")
    backup_id = f"{STACK}-20261201T040000Z"
    state = tmp_path / "state" / f"{backup_id}.names"
    storage = auscat_backup.storage_pass(repository, orthanc.root, backup_id, state)
    orthanc.add_instance()
    offline(orthanc.root, state, target=True)
    manifest = auscat_scheduled_backup.record_upgrade(
        settings, backup_id, storage, "auscat/orthanc:unit-1", auscat_scheduled_backup.version_of("Orthanc 1.12.7"), 2.5
    )
    assert manifest["by"] == "upgrade"
    assert (manifest["image"], manifest["orthanc_version"]) == ("auscat/orthanc:unit-1", "1.12.7")
    assert manifest["downtime_seconds"] == 2.5
    assert manifest["inventory"]["digest"] == orthanc.digest()
    assert (manifest["late_files"], manifest["index_entries_without_file"]) == (1, [])
    assert manifest["snapshots"]["storage"] == storage["snapshot"]
    assert [b["backup"] for b in auscat_backup.backups(repository)] == [backup_id]
    assert not list((tmp_path / "state").glob(f"{backup_id}.*")), "the upgrade's working files were left behind"
    assert not (orthanc.root / auscat_backup.STAGE_NAME).exists()


def test_recording_an_upgrades_backup_names_what_it_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        auscat_scheduled_backup.main(["--config", str(tmp_path / "backup.json"), "--record", "unit-1", "--image", "x"])
    assert "--record needs --storage, --orthanc-version, --downtime" in capsys.readouterr().err


def test_whole_backup_awaits_an_http_answer_of_orthanc_started_again(tmp_path: Path) -> None:
    watch = auscat_scheduled_backup.AvailabilityWatch(STACK, "http://127.0.0.1:1/system", timeout=0)
    watch.files = orthanc_availability.WatchFiles.of(tmp_path, "unit-backup")
    orthanc_availability.write_poller(watch.files.script)
    with pytest.raises(BackupError, match=re.escape("no HTTP answer at http://127.0.0.1:1/system within 0 s")):
        watch.serving()
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        watch.url = f"http://127.0.0.1:{server.server_address[1]}/system"
        watch.serving()  # a 501 is an answer, as for the poller
        server.shutdown()


def test_forget_prunes_only_once_every_prune_days(repository: Repository, tmp_path: Path) -> None:
    pruned = tmp_path / "pruned"
    assert auscat_backup.forget(repository, 7, 4, 6, 7, pruned)["pruned"], "no prune recorded: prune now"
    recorded = pruned.read_text()
    assert not auscat_backup.forget(repository, 7, 4, 6, 7, pruned)["pruned"]
    assert pruned.read_text() == recorded
    week_ago = time.time() - 7 * 86400 - 1
    pruned.write_text(f"{week_ago}\n")
    assert auscat_backup.forget(repository, 7, 4, 6, 7, pruned)["pruned"]
    assert auscat_backup.forget(repository, 7, 4, 6, 0, pruned)["pruned"], "prune_days 0: at every backup"


def test_whole_backup_does_nothing_while_another_backup_holds_the_lock(tmp_path: Path) -> None:
    with (
        auscat_backup.backup_lock(tmp_path, "held by the test"),
        pytest.raises(BackupError, match="another backup of stack unit"),
        auscat_scheduled_backup.exclusive(tmp_path, STACK),
    ):
        pytest.fail("the second backup ran")


def test_upgrades_storage_pass_refuses_to_start_during_a_whole_backup(initialised: Initialised, tmp_path: Path) -> None:
    state = tmp_path / "state" / "unit-20261201T030000Z.names"
    common = ["--repository", initialised.repo.url, "--password-file", str(initialised.repo.password_file)]
    args = [
        *common,
        "--stack",
        STACK,
        "storage",
        "--data-dir",
        str(tmp_path),
        "--backup-id",
        "x",
        "--state",
        str(state),
    ]
    with auscat_scheduled_backup.exclusive(state.parent, STACK), contextlib.redirect_stdout(io.StringIO()) as out:
        assert auscat_backup.main(args) == 1
    assert "another backup of stack unit is running" in json.loads(out.getvalue())["error"]


def test_whole_backup_waits_for_an_upgrades_backup_under_way_and_removes_a_stale_one(tmp_path: Path) -> None:
    working = tmp_path / "unit-20261201T010000Z.names"
    working.write_text("", encoding="utf-8")
    with (
        pytest.raises(auscat_scheduled_backup.ScheduleError, match="under way"),
        auscat_scheduled_backup.exclusive(tmp_path, STACK),
    ):
        pytest.fail("ran beside a backup under way")
    stale = time.time() - (auscat_scheduled_backup.STALE_MINUTES + 1) * 60
    os.utime(working, (stale, stale))
    with auscat_scheduled_backup.exclusive(tmp_path, STACK):
        pass
    assert not working.exists(), "the working file an interrupted backup left was kept"


def test_whole_backup_names_the_settings_file_and_what_it_lacks(tmp_path: Path) -> None:
    settings = tmp_path / "schedule.json"
    with pytest.raises(auscat_scheduled_backup.ScheduleError, match=f"{settings}: cannot read"):
        auscat_scheduled_backup.read_settings(settings)
    settings.write_text(json.dumps({"stack": STACK, "index_backend": "sqlite"}), encoding="utf-8")
    with pytest.raises(auscat_scheduled_backup.ScheduleError, match="settings lack repository, password_file"):
        auscat_scheduled_backup.read_settings(settings)
