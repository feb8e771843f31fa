"""The PostgreSQL index backend: the index lives in the stack's database, the files on the volume,
the database is reachable only by Orthanc's role with its password, and Orthanc starts only once
the database accepts connections."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.harness import stack, storage
from tests.harness.orthanc import Orthanc, Target
from tests.harness.playbook import run_playbook, unfolded_output
from tests.harness.study import StoredStudy, assert_study_intact, missing_or_changed, send_study

POSTGRESQL_UID = "4243"
WAIT_MESSAGE = "waiting for the PostgreSQL index at postgresql:5432"
HELPER = "/usr/local/lib/auscat/auscat_backup.py"
TOOL = "/usr/local/lib/auscat/auscat_tool.py"


@pytest.fixture(scope="module")
def database_service(target: Target) -> str:
    return f"{target.stack}_postgresql"


@pytest.fixture(scope="module")
def database_password(target: Target) -> str:
    path = Path(os.environ.get("ORTHANC_STACK_FILE", "")).parent / f"{target.stack}-postgresql.password"
    return path.read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def stored(target: Target, orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredStudy]:
    study = send_study(target, tmp_path_factory.mktemp("study"), slices=12)
    assert set(study.statuses.values()) == {0}
    yield study
    orthanc.delete_patient(study.study.patient_id)


def psql(docker_client: docker.DockerClient, service: str, query: str, dsn: str = "host=/run/postgresql user=postgres"):
    """Run one query with psql inside the database's task; returns (exit code, output)."""
    container = stack.healthy_task_container(docker_client, service)
    assert container is not None, f"{service} has no healthy task"
    result = container.exec_run(["psql", f"{dsn} dbname=orthanc", "-tAc", query])
    return result.exit_code, result.output.decode(errors="replace").strip()


def test_orthanc_runs_on_the_postgresql_index_plugin(orthanc: Orthanc) -> None:
    system = orthanc.get("/system").json()
    assert "libOrthancPostgreSQLIndex.so" in (system.get("DatabaseBackendPlugin") or "")
    assert "postgresql-index" in orthanc.get("/plugins").json()


def test_index_rows_match_what_orthanc_reports(
    docker_client: docker.DockerClient, database_service: str, orthanc: Orthanc, stored: StoredStudy
) -> None:
    code, output = psql(docker_client, database_service, "SELECT count(*) FROM resources WHERE resourcetype = 3")
    assert code == 0, output
    assert int(output) == orthanc.get("/statistics").json()["CountInstances"] >= len(stored.md5_by_sop_uid)


def test_files_stay_on_the_volume_without_an_sqlite_index(stored: StoredStudy) -> None:
    data_dir = Path(os.environ["AUSCAT_DATA_DIR"])
    assert not (data_dir / "index").exists(), "an SQLite index was created beside the PostgreSQL one"
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert len(files) >= len(stored.md5_by_sop_uid)


def test_database_refuses_a_wrong_password_and_the_superuser_over_the_network(
    docker_client: docker.DockerClient, database_service: str
) -> None:
    code, output = psql(
        docker_client, database_service, "SELECT 1", "host=127.0.0.1 user=orthanc password=not-the-password"
    )
    assert code != 0
    assert "password authentication failed" in output
    code, output = psql(docker_client, database_service, "SELECT 1", "host=127.0.0.1 user=postgres")
    assert code != 0
    assert "no pg_hba.conf entry" in output


def test_database_accepts_orthancs_role_with_its_password(
    docker_client: docker.DockerClient, database_service: str, database_password: str
) -> None:
    code, output = psql(
        docker_client,
        database_service,
        "SELECT current_user",
        f"host=127.0.0.1 user=orthanc password={database_password}",
    )
    assert (code, output) == (0, "orthanc")


def test_database_password_is_kept_for_root_only_and_never_shown(
    docker_client: docker.DockerClient, target: Target, database_service: str, database_password: str
) -> None:
    path = Path(os.environ["ORTHANC_STACK_FILE"]).parent / f"{target.stack}-postgresql.password"
    assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (0, 0o600)
    assert len(database_password) >= 16
    for service in (database_service, target.service):
        assert database_password not in stack.docker_cli("service", "inspect", service).stdout
        assert database_password.encode() not in stack.task_logs(docker_client, service)
        container = stack.healthy_task_container(docker_client, service)
        assert database_password not in stack.docker_cli("inspect", container.id).stdout


def test_database_runs_unprivileged_on_a_read_only_root(
    docker_client: docker.DockerClient, database_service: str
) -> None:
    container = stack.healthy_task_container(docker_client, database_service)
    assert container.exec_run(["id", "-u"]).output.decode().strip() == POSTGRESQL_UID
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    assert "CapEff:\t0000000000000000" in status
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    data_dir = Path(os.environ["AUSCAT_POSTGRESQL_DATA_DIR"])
    assert (str(data_dir.stat().st_uid), data_dir.stat().st_mode & 0o777) == (POSTGRESQL_UID, 0o700)


def test_orthanc_waits_for_its_index_and_keeps_the_data(
    docker_client: docker.DockerClient, target: Target, database_service: str, orthanc: Orthanc, stored: StoredStudy
) -> None:
    stack.docker_cli("service", "scale", "--detach", f"{target.service}=0", f"{database_service}=0")
    stack.wait_until_stopped(docker_client, target.service)
    stack.wait_until_stopped(docker_client, database_service)
    try:
        stack.docker_cli("service", "scale", "--detach", f"{target.service}=1")
        deadline = time.monotonic() + 60
        logs = ""
        while WAIT_MESSAGE not in logs and time.monotonic() < deadline:
            time.sleep(2)
            logs = "".join(
                container.logs().decode(errors="replace")
                for container in docker_client.containers.list(
                    filters={"label": f"com.docker.swarm.service.name={target.service}"}
                )
            )
        assert WAIT_MESSAGE in logs, "Orthanc did not wait for its index"
        assert stack.healthy_task_container(docker_client, target.service) is None, (
            "Orthanc became healthy without its index"
        )
    finally:
        stack.docker_cli("service", "scale", "--detach", f"{target.service}=1", f"{database_service}=1")
    stack.wait_until_healthy(docker_client, database_service)
    stack.wait_until_healthy(docker_client, target.service)
    assert_study_intact(orthanc, stored)


def test_inventory_and_orphans_read_the_postgresql_index_itself(
    docker_client: docker.DockerClient, target: Target, database_service: str, stored: StoredStudy
) -> None:
    """The role's inventory (one query of the database) equals Orthanc's own view through /tools/find, and the
    orphan report finds a file no index entry refers to."""
    helper = [sys.executable, HELPER, "--repository", "-", "--password-file", "-", "--stack", target.stack]
    from_database = subprocess.run(
        [*helper, "inventory-postgresql", "--service", database_service], capture_output=True, text=True, check=False
    )
    assert from_database.returncode == 0, from_database.stdout + from_database.stderr
    orthanc_task = stack.healthy_task_container(docker_client, target.service)
    through_orthanc = orthanc_task.exec_run(["python3", TOOL, "inventory"])
    assert through_orthanc.exit_code == 0, through_orthanc.output
    assert json.loads(from_database.stdout) == json.loads(through_orthanc.output)
    assert json.loads(from_database.stdout)["listed"] >= len(stored.md5_by_sop_uid)

    data_dir = Path(os.environ["AUSCAT_DATA_DIR"])
    with storage.planted_orphan(data_dir, str(uuid.uuid4()), b"written, never indexed"):
        result = run_playbook("orphans.yml", {"orthanc_lifecycle_orphans_min_age_minutes": 0})
    output = unfolded_output(result)
    assert result.returncode == 0, output
    assert "1 orphan files (22 bytes) left in place; 0 index entries without a file" in output, output


def test_backup_then_wipe_then_restore_brings_back_index_and_files(
    docker_client: docker.DockerClient, target: Target, database_service: str, orthanc: Orthanc, stored: StoredStudy
) -> None:
    before = orthanc.get("/statistics").json()["CountInstances"]
    result = run_playbook("backup.yml")
    output = unfolded_output(result)
    assert result.returncode == 0, output
    # The index is dumped while Orthanc runs: nothing stops, HTTP never goes away.
    assert re.search(rf"{before} instances; storage pass .* HTTP unavailable for 0(\.0)? s", output), output
    backup = re.search(r"Backup (\S+) in", output).group(1)

    stack.docker_cli("service", "scale", "--detach", f"{target.service}=0", f"{database_service}=0")
    stack.wait_until_stopped(docker_client, target.service)
    stack.wait_until_stopped(docker_client, database_service)
    for directory in (os.environ["AUSCAT_DATA_DIR"], os.environ["AUSCAT_POSTGRESQL_DATA_DIR"]):
        for entry in Path(directory).iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    stack.docker_cli("service", "scale", "--detach", f"{database_service}=1", f"{target.service}=1")
    stack.wait_until_healthy(docker_client, database_service)
    stack.wait_until_healthy(docker_client, target.service)
    assert len(missing_or_changed(orthanc, stored)) == len(stored.md5_by_sop_uid)  # the wipe took everything

    result = run_playbook("restore.yml", {"orthanc_lifecycle_restore_backup": backup})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical to the manifest of the backup" in unfolded_output(result), unfolded_output(result)
    assert_study_intact(orthanc, stored)

    drill = run_playbook(
        "restore.yml", {"orthanc_lifecycle_restore_drill": True, "orthanc_lifecycle_drill_http_port": 27142}
    )
    assert drill.returncode == 0, unfolded_output(drill)
    assert "Restore drill passed" in unfolded_output(drill), unfolded_output(drill)
    assert_study_intact(orthanc, stored)
