"""Upgrade, automatic rollback, backup and restore of a deployed stack, in that order.

The tests share one stack and one stored study, so they run in file order: each
starts from where the previous one left the stack. Needs the probes' environment
plus AUSCAT_INVENTORY, AUSCAT_DATA_DIR, AUSCAT_UPGRADE_FROM and AUSCAT_UPGRADE_TO
(image tags), and Docker on this host.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import docker
import pytest

from tests.harness import stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.playbook import run_playbook
from tests.harness.study import StoredStudy, assert_study_intact, missing_or_changed, send_study

UNHEALTHY_TAG = "0.0.0-unhealthy"


@pytest.fixture(scope="module")
def tags() -> tuple[str, str]:
    return os.environ["AUSCAT_UPGRADE_FROM"], os.environ["AUSCAT_UPGRADE_TO"]


@pytest.fixture(scope="module")
def stored(target: Target, tmp_path_factory: pytest.TempPathFactory) -> StoredStudy:
    stored = send_study(target, tmp_path_factory.mktemp("lifecycle"))
    assert set(stored.statuses.values()) == {0}
    return stored


def image_of(docker_client: docker.DockerClient, target: Target) -> str:
    return stack.service_image(docker_client, target.service)


def orthanc_version(orthanc: Orthanc) -> str:
    return orthanc.get("/system").json()["Version"]


def output_of(result) -> str:
    return result.stdout + result.stderr


def take_backup() -> tuple[Path, str]:
    """Run playbooks/backup.yml; returns the backup directory and the playbook's output."""
    result = run_playbook("backup.yml")
    assert result.returncode == 0, output_of(result)
    return Path(re.search(r"Backup (\S+):", output_of(result)).group(1)), output_of(result)


def test_stack_starts_on_the_old_tag(
    docker_client, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    old, _ = tags
    assert image_of(docker_client, target).endswith(f":{old}")
    assert orthanc_version(orthanc) == old.split("-")[0]
    assert_study_intact(orthanc, stored)


def test_upgrade_changes_the_version_and_keeps_every_instance(
    docker_client, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    _, new = tags
    result = run_playbook("upgrade.yml", {"orthanc_image_tag": new})
    assert result.returncode == 0, output_of(result)
    downtime = re.search(r"HTTP unavailable for ([0-9.]+) s", output_of(result))
    assert downtime, output_of(result)
    print(f"good upgrade: HTTP unavailable for {downtime.group(1)} s")
    assert image_of(docker_client, target).endswith(f":{new}")
    assert orthanc_version(orthanc) == new.split("-")[0]
    assert_study_intact(orthanc, stored)


def test_upgrade_to_an_unhealthy_image_rolls_back(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, tags, stored: StoredStudy, tmp_path: Path
) -> None:
    _, current = tags
    name = image_of(docker_client, target).rsplit(":", 1)[0]
    dockerfile = f'FROM {name}:{current}\nHEALTHCHECK --interval=5s --start-period=5s --retries=2 CMD ["false"]\n'
    (tmp_path / "Dockerfile").write_text(dockerfile)
    docker_client.images.build(
        path=str(tmp_path), tag=f"{name}:{UNHEALTHY_TAG}", labels={"org.auscat.test": "unhealthy"}
    )

    result = run_playbook("upgrade.yml", {"orthanc_image_tag": UNHEALTHY_TAG})
    assert result.returncode != 0, output_of(result)
    assert f"Rolled back to {name}:{current}" in output_of(result), output_of(result)
    print(re.search(r"HTTP unavailable for .* during the rollback", output_of(result), re.DOTALL).group(0))
    assert image_of(docker_client, target) == f"{name}:{current}"
    stack.wait_until_healthy(docker_client, target.service)
    assert orthanc_version(orthanc) == current.split("-")[0]
    assert_study_intact(orthanc, stored)


def test_restore_refuses_a_corrupted_backup(docker_client, target: Target, tmp_path: Path) -> None:
    backup, _ = take_backup()
    corrupted = tmp_path / "corrupted"
    shutil.copytree(backup, corrupted)
    with (corrupted / "data.tar").open("r+b") as archive:
        archive.seek(2048)
        byte = archive.read(1)
        archive.seek(2048)
        archive.write(bytes([byte[0] ^ 0xFF]))
    before = docker_client.services.get(target.service).attrs["Version"]["Index"]
    result = run_playbook("restore.yml", {"orthanc_restore_from": str(corrupted)})
    assert result.returncode != 0
    assert "Verify the archives' checksums" in output_of(result), output_of(result)
    assert "data.tar: FAILED" in output_of(result), output_of(result)
    assert docker_client.services.get(target.service).attrs["Version"]["Index"] == before


def test_backup_then_wipe_then_restore_gives_identical_data(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    backup, output = take_backup()
    print(re.search(r"HTTP unavailable for [0-9.]+ s \(copy [^)]*\)", output).group(0))

    data_dir = Path(os.environ["AUSCAT_DATA_DIR"])
    stack.docker_cli("service", "scale", "--detach", f"{target.service}=0")
    stack.wait_until_stopped(docker_client, target.service)
    for entry in data_dir.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    stack.docker_cli("service", "scale", "--detach", f"{target.service}=1")
    stack.wait_until_healthy(docker_client, target.service)
    assert len(missing_or_changed(orthanc, stored)) == len(stored.md5_by_sop_uid)  # the wipe took everything

    result = run_playbook("restore.yml", {"orthanc_restore_from": str(backup)})
    assert result.returncode == 0, output_of(result)
    assert_study_intact(orthanc, stored)
    assert orthanc.get("/statistics").json()["CountInstances"] == len(stored.md5_by_sop_uid)


def test_restore_onto_a_host_without_the_stack_rolls_out_and_restores(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    backup, _ = take_backup()

    stack.docker_cli("stack", "rm", target.stack)
    stack.wait_until_gone(docker_client, target.service, target.network)
    shutil.rmtree(os.environ["AUSCAT_DATA_DIR"])

    result = run_playbook("restore.yml", {"orthanc_restore_from": str(backup)})
    assert result.returncode == 0, output_of(result)
    assert "Restored " in output_of(result), output_of(result)
    stack.wait_until_healthy(docker_client, target.service)
    assert_study_intact(orthanc, stored)
