"""Upgrade, automatic rollback, restic backups and restore of a deployed stack, in that order.

The tests share one stack and one stored study, so they run in file order: each
starts from where the previous one left the stack. Needs the probes' environment
plus AUSCAT_INVENTORY, AUSCAT_DATA_DIR, AUSCAT_UPGRADE_FROM and AUSCAT_UPGRADE_TO
(image tags), and Docker on this host.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from tests.harness import dicom, stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.playbook import run_playbook, unfolded_output
from tests.harness.study import StoredStudy, assert_study_intact, missing_or_changed, send_study

UNHEALTHY_TAG = "0.0.0-unhealthy"
INGEST_ROUNDS_MAX = 40
DRILL_PORT = 28142
# From the scheduled minute until the scheduled backup has finished.
SCHEDULED_BACKUP_SECONDS = 240
# Where the role installs the lifecycle helpers on the host.
HELPERS = "/usr/local/lib/auscat"


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


def release_of(image: str) -> str:
    """The release an image reference names: its tag without a build's date and serial."""
    return re.sub(r"\.[0-9]{8}(\.[0-9]+)?$", "", image.rsplit(":", 1)[1])


def orthanc_version(orthanc: Orthanc) -> str:
    return orthanc.get("/system").json()["Version"]


def output_of(result) -> str:
    return unfolded_output(result)


def take_backup() -> tuple[str, str]:
    """Run playbooks/backup.yml; returns the backup's ID and the playbook's output."""
    result = run_playbook("backup.yml")
    assert result.returncode == 0, output_of(result)
    return re.search(r"Backup (\S+) in", output_of(result)).group(1), output_of(result)


def restic(*args: str) -> subprocess.CompletedProcess:
    """restic against the scenario's repository, with the password the role keeps on the host."""
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": os.environ["AUSCAT_RESTIC_REPOSITORY"],
        "RESTIC_PASSWORD_FILE": os.environ["AUSCAT_RESTIC_PASSWORD_FILE"],
    }
    return subprocess.run(["restic", *args], env=env, capture_output=True, text=True, check=False)


def wipe(docker_client: docker.DockerClient, target: Target, data_dir: Path) -> None:
    stack.docker_cli("service", "scale", "--detach", f"{target.service}=0")
    stack.wait_until_stopped(docker_client, target.service)
    for entry in data_dir.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    stack.docker_cli("service", "scale", "--detach", f"{target.service}=1")
    stack.wait_until_healthy(docker_client, target.service)


def test_stack_starts_on_the_old_tag(
    docker_client, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    old, _ = tags
    assert release_of(image_of(docker_client, target)) == old
    assert orthanc_version(orthanc) == old.split("-")[0]
    assert_study_intact(orthanc, stored)


def test_upgrade_changes_the_version_and_keeps_every_instance(
    docker_client, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    old, new = tags
    result = run_playbook("upgrade.yml", {"orthanc_image_tag": new})
    assert result.returncode == 0, output_of(result)
    downtime = re.search(r"HTTP unavailable for ([0-9.]+) s", output_of(result))
    assert downtime, output_of(result)
    print(f"good upgrade: HTTP unavailable for {downtime.group(1)} s")
    assert release_of(image_of(docker_client, target)) == new
    assert orthanc_version(orthanc) == new.split("-")[0]
    assert_study_intact(orthanc, stored)
    # The backup taken with the switch is complete, recorded as every backup is.
    backup_id = re.search(r"Backup (\S+) in", output_of(result)).group(1)
    manifest = json.loads(
        restic("dump", "--tag", f"backup={backup_id},part=manifest", "latest", "/auscat-manifest.json").stdout
    )
    assert (manifest["by"], manifest["index_entries_without_file"]) == ("upgrade", []), manifest
    assert release_of(manifest["image"]) == old, manifest
    assert manifest["inventory"]["instances"] == len(orthanc.get("/instances").json())
    assert parts_of(backup_id) == {"storage", "index", "manifest"}


def test_upgrade_to_an_unhealthy_image_rolls_back(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, tags, stored: StoredStudy, tmp_path: Path
) -> None:
    _, current = tags
    serving = image_of(docker_client, target)
    name = serving.rsplit(":", 1)[0]
    dockerfile = f'FROM {name}:{current}\nHEALTHCHECK --interval=5s --start-period=5s --retries=2 CMD ["false"]\n'
    (tmp_path / "Dockerfile").write_text(dockerfile)
    docker_client.images.build(
        path=str(tmp_path), tag=f"{name}:{UNHEALTHY_TAG}", labels={"org.auscat.test": "unhealthy"}
    )

    result = run_playbook("upgrade.yml", {"orthanc_image_tag": UNHEALTHY_TAG})
    assert result.returncode != 0, output_of(result)
    assert f"Rolled back to {serving}" in output_of(result), output_of(result)
    print(re.search(r"HTTP unavailable for .* during the rollback", output_of(result), re.DOTALL).group(0))
    assert image_of(docker_client, target) == serving
    stack.wait_until_healthy(docker_client, target.service)
    assert orthanc_version(orthanc) == current.split("-")[0]
    assert_study_intact(orthanc, stored)


def labels_of(docker_client: docker.DockerClient, image: str) -> dict[str, str]:
    return docker_client.images.get(image).attrs["Config"]["Labels"] or {}


def test_refresh_without_new_updates_keeps_the_running_build(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    serving = image_of(docker_client, target)
    result = run_playbook("refresh.yml", {"orthanc_image_tag": release_of(serving)})
    assert result.returncode == 0, output_of(result)
    assert f"{serving} already has every package update of its archives" in output_of(result), output_of(result)
    assert image_of(docker_client, target) == serving
    assert_study_intact(orthanc, stored)


def test_refresh_with_an_unreachable_security_archive_fails_naming_it_and_changes_nothing(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    serving = image_of(docker_client, target)
    # Nothing listens on port 9 of the build container's own loopback.
    archive = "http://127.0.0.1:9/debian-security"
    result = run_playbook(
        "refresh.yml",
        {"orthanc_image_tag": release_of(serving), "orthanc_image_debian_security_mirror": archive},
    )
    assert result.returncode != 0, output_of(result)
    assert f"The Debian archive {archive}" in output_of(result), output_of(result)
    assert "nothing running was changed" in output_of(result), output_of(result)
    assert image_of(docker_client, target) == serving
    assert_study_intact(orthanc, stored)


def test_refresh_rolls_a_new_build_of_the_same_release_through_the_gate(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    _, current = tags
    previous = image_of(docker_client, target)
    result = run_playbook("refresh.yml", {"orthanc_image_tag": current, "orthanc_image_refresh_force": True})
    assert result.returncode == 0, output_of(result)
    refreshed = image_of(docker_client, target)
    assert refreshed != previous, output_of(result)
    assert release_of(refreshed) == current
    assert f"Upgraded {target.service} from {previous} to {refreshed}" in output_of(result), output_of(result)
    print(re.search(r"HTTP unavailable for [0-9.]+ s", output_of(result)).group(0), "rolling", refreshed)
    assert orthanc_version(orthanc) == current.split("-")[0]
    assert_study_intact(orthanc, stored)
    # The build records its exact package list, in a file and as a label with its digest.
    listing = docker_client.containers.run(
        refreshed, entrypoint=["cat", "/usr/share/auscat/packages.txt"], remove=True, network_mode="none"
    )
    labels = labels_of(docker_client, refreshed)
    assert labels["org.auscat.packages.sha256"] == hashlib.sha256(listing).hexdigest()
    assert labels["org.auscat.release"] == current
    assert any(line.startswith(b"orthanc ") for line in listing.splitlines())


def test_rollback_to_the_previous_build_by_its_tag(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, tags, stored: StoredStudy
) -> None:
    _, current = tags
    builds = sorted(
        (image for image in docker_client.images.list(name=image_of(docker_client, target).rsplit(":", 1)[0])
         if labels_of(docker_client, image.id).get("org.auscat.release") == current),
        key=lambda image: labels_of(docker_client, image.id)["org.auscat.built"],
    )  # fmt: skip
    assert len(builds) >= 2, builds
    previous = next(tag for tag in builds[-2].tags if release_of(tag) == current and tag.rsplit(":", 1)[1] != current)
    result = run_playbook("upgrade.yml", {"orthanc_image_tag": previous.rsplit(":", 1)[1]})
    assert result.returncode == 0, output_of(result)
    assert image_of(docker_client, target) == previous
    assert_study_intact(orthanc, stored)
    # A rollout of the release keeps the build the stack runs, and warns when it is older than allowed.
    result = run_playbook("site.yml", {"orthanc_image_tag": current, "orthanc_image_max_age_days": 0})
    assert result.returncode == 0, output_of(result)
    assert image_of(docker_client, target) == previous
    assert re.search(
        rf"WARNING: {re.escape(previous)} was built [0-9.]+ days ago .* more than orthanc_image_max_age_days \(0\)",
        output_of(result),
    ), output_of(result)


def test_backup_while_ingesting_and_deleting_restores_with_every_file(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, tmp_path: Path
) -> None:
    """Senders store and a researcher deletes while the backup runs: the restored index has a file for
    every entry (the offline step carries the files that arrived during the online pass)."""
    doomed = send_study(target, tmp_path / "doomed", slices=10)
    stop = threading.Event()
    sent: list[StoredStudy] = []
    refused: list[str] = []

    def ingest() -> None:
        # As CTP does: a study Orthanc cannot take while the backup stops it is sent again later.
        round_ = 0
        while not stop.is_set() and round_ < INGEST_ROUNDS_MAX:
            round_ += 1
            try:
                sent.append(send_study(target, tmp_path / f"during-{round_}", slices=5))
            except dicom.AssociationError as error:
                refused.append(str(error))
                time.sleep(0.2)

    sender = threading.Thread(target=ingest)
    sender.start()
    try:
        time.sleep(1)
        orthanc.delete(f"/patients/{orthanc.patient_id_of(doomed.study.patient_id)}")
        backup, output = take_backup()
    finally:
        stop.set()
        sender.join(timeout=120)
    unavailable = re.search(r"HTTP unavailable for [0-9.]+ s", output).group(0)
    print(unavailable, f"while {len(sent)} studies arrived and {len(refused)} sends were refused")
    assert sent, "no study arrived during the backup"

    data_dir = Path(os.environ["AUSCAT_DATA_DIR"])
    wipe(docker_client, target, data_dir)
    result = run_playbook("restore.yml", {"orthanc_lifecycle_restore_backup": backup})
    assert result.returncode == 0, output_of(result)
    orphans = run_playbook("orphans.yml", {"orthanc_lifecycle_orphans_min_age_minutes": 0})
    assert orphans.returncode == 0, output_of(orphans)
    assert "0 index entries without a file" in output_of(orphans), output_of(orphans)
    for attachment_uuid in attachments(orthanc):
        assert (data_dir / attachment_uuid[0:2] / attachment_uuid[2:4] / attachment_uuid).is_file(), attachment_uuid


def test_orthanc_frozen_by_a_backup_that_died_is_thawed_by_its_watchdog(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc
) -> None:
    """A backup killed while Orthanc is frozen runs no handler; Swarm never replaces a paused container. The
    watchdog the freeze started thaws it (here after 3 s instead of FREEZE_LIMIT_SECONDS)."""
    freeze = (
        "import sys; sys.path.insert(0, sys.argv[1]); import auscat_backup as b; b.FREEZE_LIMIT_SECONDS = 3; "
        "print(b.StackService(sys.argv[2], 60).freeze().container)"
    )
    frozen = subprocess.run(
        ["python3", "-c", freeze, HELPERS, target.service], capture_output=True, text=True, check=False
    )
    assert frozen.returncode == 0, frozen.stderr
    container = docker_client.containers.get(frozen.stdout.strip())
    assert container.attrs["State"]["Paused"], "the freeze did not pause Orthanc's container"
    deadline = time.monotonic() + 30
    while container.attrs["State"]["Paused"] and time.monotonic() < deadline:
        time.sleep(0.5)
        container.reload()
    assert not container.attrs["State"]["Paused"], "the watchdog did not thaw the container"
    assert container.status == "running", "Orthanc's container did not survive the freeze"
    assert orthanc.get("/system").json()["Version"]
    assert stack.service_image(docker_client, target.service)  # the same service, still deployed


def test_second_backup_of_an_unchanged_archive_adds_almost_nothing() -> None:
    _, first = take_backup()
    _, second = take_backup()
    added = int(re.search(r"\(([0-9]+) bytes added\)", second).group(1))
    stored = int(re.search(r"\(([0-9]+) bytes added\)", first).group(1))
    print(f"incremental backup added {added} bytes (the one before it {stored})")
    assert re.search(r"storage pass 0 new files", second), second
    assert added < 1_000_000, second


def scheduled_minute() -> datetime.datetime:
    """The next minute cron can still be given in time: cron fires at the start of each minute."""
    now = datetime.datetime.now()
    return (now + datetime.timedelta(minutes=1 if now.second < 40 else 2)).replace(second=0, microsecond=0)


def parts_of(backup_id: str) -> set[str]:
    """The parts (storage, index, late, manifest) of one backup's snapshots in the repository."""
    listed = restic("snapshots", "--json", "--tag", f"backup={backup_id}")
    assert listed.returncode == 0, listed.stderr
    return {
        tag.split("=", 1)[1] for snap in json.loads(listed.stdout) for tag in snap["tags"] if tag.startswith("part=")
    }


def test_scheduled_backup_runs_from_cron_like_the_playbook_one(orthanc: Orthanc) -> None:
    state = Path(os.environ["AUSCAT_LIFECYCLE_STATE"])
    cron_file = Path("/etc/cron.d") / f"auscat-backup-{os.environ['ORTHANC_STACK']}"
    playbook_manifest = json.loads(
        restic(
            "dump", "--tag", f"stack={os.environ['ORTHANC_STACK']},part=manifest", "latest", "/auscat-manifest.json"
        ).stdout
    )
    at = scheduled_minute()
    (state / "last.json").unlink(missing_ok=True)
    try:
        scheduled = run_playbook("schedule.yml", {"orthanc_lifecycle_backup_schedule": f"{at:%H:%M}"})
        assert scheduled.returncode == 0, output_of(scheduled)
        assert f"{at.minute} {at.hour} * * * root" in cron_file.read_text(), cron_file.read_text()
        deadline = at.timestamp() + SCHEDULED_BACKUP_SECONDS
        while not (state / "last.json").is_file() and time.time() < deadline:
            time.sleep(2)
        assert (state / "last.json").is_file(), f"cron did not run the backup scheduled at {at:%H:%M}"
        last = json.loads((state / "last.json").read_text())
        assert last["ok"], last
        manifest = last["manifest"]
        print(f"scheduled backup {manifest['backup']}: HTTP unavailable for {manifest['downtime_seconds']} s")
        assert datetime.datetime.fromisoformat(last["started"]).timestamp() >= at.timestamp() - 1, last
        assert manifest["by"] == "schedule", manifest
        assert set(manifest) == set(playbook_manifest), (manifest, playbook_manifest)
        assert manifest["index_entries_without_file"] == []
        assert manifest["inventory"]["instances"] == len(orthanc.get("/instances").json())
        assert parts_of(manifest["backup"]) == {"storage", "index", "manifest"}
        assert (
            Path(os.environ["AUSCAT_RESTIC_PASSWORD_FILE"]).read_text().strip()
            not in Path(f"/var/log/auscat/backup-{os.environ['ORTHANC_STACK']}.log").read_text()
        )
    finally:
        removed = run_playbook("schedule.yml", {"orthanc_lifecycle_backup_schedule": ""})
    assert removed.returncode == 0, output_of(removed)
    assert not cron_file.exists()


def test_schedule_refuses_a_malformed_time_and_names_the_variable() -> None:
    result = run_playbook("schedule.yml", {"orthanc_lifecycle_backup_schedule": "2:30am"})
    assert result.returncode != 0
    assert "orthanc_lifecycle_backup_schedule is '2:30am'" in output_of(result), output_of(result)


def test_backup_refuses_a_wrong_repository_password(docker_client, target: Target, tmp_path: Path) -> None:
    before = docker_client.services.get(target.service).attrs["Version"]["Index"]
    secret = tmp_path / "wrong.json"
    secret.write_text(json.dumps({"orthanc_lifecycle_repository_password": "not-the-repository-password"}))
    secret.chmod(0o600)
    password_file = Path(os.environ["AUSCAT_RESTIC_PASSWORD_FILE"])
    kept = password_file.read_text()
    try:
        result = run_playbook("backup.yml", vars_file=secret)
    finally:
        password_file.write_text(kept)
    assert result.returncode != 0
    assert "refused the password" in output_of(result), output_of(result)
    assert "not-the-repository-password" not in output_of(result)
    assert docker_client.services.get(target.service).attrs["Version"]["Index"] == before
    stack.wait_until_healthy(docker_client, target.service)


def test_restore_refuses_a_damaged_repository_and_leaves_the_stack_serving(
    docker_client, target: Target, orthanc: Orthanc, stored: StoredStudy, tmp_path: Path
) -> None:
    backup, _ = take_backup()
    repository = Path(os.environ["AUSCAT_RESTIC_REPOSITORY"])
    packs = sorted((repository / "data").glob("*/*"), key=lambda path: path.stat().st_size)
    saved = tmp_path / "pack"
    shutil.copy2(packs[-1], saved)
    try:
        with packs[-1].open("r+b") as pack:
            pack.seek(64)
            byte = pack.read(1)
            pack.seek(64)
            pack.write(bytes([byte[0] ^ 0xFF]))
        before = docker_client.services.get(target.service).attrs["Version"]["Index"]
        result = run_playbook("restore.yml", {"orthanc_lifecycle_restore_backup": backup})
        assert result.returncode != 0
        assert "could not be restored" in output_of(result), output_of(result)
        assert docker_client.services.get(target.service).attrs["Version"]["Index"] == before
        assert_study_intact(orthanc, stored)
    finally:
        packs[-1].chmod(0o600)
        shutil.copy2(saved, packs[-1])
    assert restic("check").returncode == 0


def test_restore_drill_proves_the_backup_in_a_scratch_stack_and_leaves_the_live_one(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    take_backup()
    before = docker_client.services.get(target.service).attrs["Version"]["Index"]
    result = run_playbook(
        "restore.yml", {"orthanc_lifecycle_restore_drill": True, "orthanc_lifecycle_drill_http_port": DRILL_PORT}
    )
    assert result.returncode == 0, output_of(result)
    assert "Restore drill passed" in output_of(result), output_of(result)
    assert docker_client.services.get(target.service).attrs["Version"]["Index"] == before
    assert not docker_client.services.list(filters={"name": f"{target.stack}-drill_"})
    assert_study_intact(orthanc, stored)


def test_backup_then_wipe_then_restore_gives_identical_data(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    backup, output = take_backup()
    print(re.search(r"HTTP unavailable for [0-9.]+ s", output).group(0))
    data_dir = Path(os.environ["AUSCAT_DATA_DIR"])
    count = orthanc.get("/statistics").json()["CountInstances"]
    wipe(docker_client, target, data_dir)
    assert len(missing_or_changed(orthanc, stored)) == len(stored.md5_by_sop_uid)  # the wipe took everything

    result = run_playbook("restore.yml", {"orthanc_lifecycle_restore_backup": backup})
    assert result.returncode == 0, output_of(result)
    assert_study_intact(orthanc, stored)
    assert orthanc.get("/statistics").json()["CountInstances"] == count
    assert list(data_dir.parent.glob(f"{data_dir.name}.before-restore-*")), "the wiped directory was kept aside"


def test_restore_onto_a_host_without_the_stack_rolls_out_and_restores(
    docker_client: docker.DockerClient, target: Target, orthanc: Orthanc, stored: StoredStudy
) -> None:
    take_backup()

    stack.docker_cli("stack", "rm", target.stack)
    stack.wait_until_gone(docker_client, target.service, target.network)
    shutil.rmtree(os.environ["AUSCAT_DATA_DIR"])

    result = run_playbook("restore.yml")
    assert result.returncode == 0, output_of(result)
    assert "Restored " in output_of(result), output_of(result)
    stack.wait_until_healthy(docker_client, target.service)
    assert_study_intact(orthanc, stored)


def attachments(orthanc: Orthanc) -> list[str]:
    """Every attachment the index names, at every level, through REST."""
    found = []
    for level in ("Patient", "Study", "Series", "Instance"):
        since = 0
        while page := orthanc.post(
            "/tools/find",
            json={"Level": level, "Query": {}, "ResponseContent": ["Attachments"], "Since": since, "Limit": 1000},
        ).json():
            found += [item["Uuid"] for resource in page for item in resource.get("Attachments", [])]
            since += len(page)
    return found
