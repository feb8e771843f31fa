"""Crash during ingest: Orthanc is killed (SIGKILL) while 8 associations are sending, trial after trial.

After each restart every instance whose C-STORE got a success status is present and
byte-identical, and no index entry points at a missing file. Files written but never
indexed (orphans) are counted; playbooks/orphans.yml then moves them out of the way.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import dicom, phantoms, stack, storage
from tests.harness.orthanc import Orthanc, Target
from tests.harness.playbook import run_playbook
from tests.harness.study import StoredStudy, dataset_md5, missing_or_changed
from tests.reliability.conftest import int_setting

TRIALS = int_setting("AUSCAT_CRASH_TRIALS", 10)
SENDERS = 8
FILES_PER_SENDER = 60
KILL_AFTER_SECONDS = (0.5, 2.5)
PAGE = 1000
LEVELS = ("patients", "studies", "series", "instances")


def scan(orthanc: Orthanc, data_dir: Path) -> dict:
    """Index entries without a file, and files without an index entry (orphans), seen through REST.

    An independent reading of the index (one request per resource), to check playbooks/orphans.yml's.
    Attachments live at every level (the DICOMweb plugin caches series metadata as one).
    """
    indexed = set()
    for level in LEVELS:
        resources: list[str] = []
        while page := orthanc.get(f"/{level}?since={len(resources)}&limit={PAGE}").json():
            resources.extend(page)
        for resource in resources:
            for name in orthanc.get(f"/{level}/{resource}/attachments").json():
                indexed.add(orthanc.get(f"/{level}/{resource}/attachments/{name}/info").json()["Uuid"])
    on_disk = {path.name for path in data_dir.glob("??/??/*-*-*-*-*") if path.is_file()}
    return {"missing_files": sorted(indexed - on_disk), "orphans": len(on_disk - indexed)}


def delete_patients(orthanc: Orthanc, studies: list[phantoms.Study]) -> None:
    for study in studies:
        orthanc.delete_patient(study.patient_id)


def trial(number: int, target: Target, orthanc: Orthanc, docker_client, data_dir: Path, directory: Path, rng) -> dict:
    studies = [phantoms.make_study(slices=FILES_PER_SENDER - 1) for _ in range(SENDERS)]
    paths = [phantoms.write_study(study, directory / f"sender-{index}") for index, study in enumerate(studies)]
    md5 = {
        str(ds.SOPInstanceUID): dataset_md5(path.read_bytes())
        for study, files in zip(studies, paths, strict=True)
        for ds, path in zip(study.datasets, files, strict=True)
    }
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None, f"trial {number}: no healthy Orthanc before the kill"
    delay = rng.uniform(*KILL_AFTER_SECONDS)
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        futures = [
            pool.submit(dicom.store_until_failure, files, target.dicom_host, target.dicom_port, target.aet)
            for files in paths
        ]
        time.sleep(delay)
        container.kill(signal="SIGKILL")
        statuses = {uid: status for future in futures for uid, status in future.result().items()}
    started = time.monotonic()
    stack.wait_until_healthy(docker_client, target.service, not_container=container.id)
    recovery = time.monotonic() - started

    acknowledged = {uid: md5[uid] for uid, status in statuses.items() if status == dicom.SUCCESS}
    lost = missing_or_changed(orthanc, StoredStudy(studies[0], acknowledged, statuses))
    stored = sum(
        len(orthanc.get(f"/patients/{patient}/instances").json())
        for patient in (orthanc.patient_id_of(study.patient_id) for study in studies)
        if patient
    )
    report = scan(orthanc, data_dir)
    delete_patients(orthanc, studies)
    return {
        "trial": number,
        "kill_after_s": round(delay, 2),
        "sent": len(md5),
        "acknowledged": len(acknowledged),
        "stored": stored,
        "lost_acknowledged": len(lost),
        "index_entries_without_file": len(report["missing_files"]),
        "orphans_total": report["orphans"],
        "recovery_s": round(recovery, 1),
    }


def test_kill_during_ingest_loses_no_acknowledged_instance(
    target: Target, orthanc: Orthanc, docker_client, data_dir: Path, tmp_path: Path, record
) -> None:
    rng = random.Random(TRIALS)  # noqa: S311 - kill times, not cryptography
    trials = []
    try:
        for number in range(1, TRIALS + 1):
            trials.append(trial(number, target, orthanc, docker_client, data_dir, tmp_path / f"trial-{number}", rng))
    finally:
        record("crash", {"trials": trials, "senders": SENDERS, "files_per_sender": FILES_PER_SENDER})
    assert len(trials) == TRIALS
    assert all(t["acknowledged"] > 0 for t in trials), "a trial was killed before any success: it proves nothing"
    assert all(t["acknowledged"] < t["sent"] for t in trials), "a trial finished before the kill: it proves nothing"
    assert [t["lost_acknowledged"] for t in trials] == [0] * TRIALS
    assert [t["index_entries_without_file"] for t in trials] == [0] * TRIALS


def test_orphans_playbook_moves_orphans_out_and_keeps_the_data(
    target: Target, orthanc: Orthanc, data_dir: Path, tmp_path: Path, record
) -> None:
    study = phantoms.make_study(slices=4)
    files = phantoms.write_study(study, tmp_path)
    assert set(dicom.store(files, target.dicom_host, target.dicom_port, target.aet).values()) == {dicom.SUCCESS}
    # An orphan as a crash leaves it: a stored file that no index entry refers to.
    quarantine = tmp_path / "quarantine"
    try:
        with storage.planted_orphan(
            data_dir, "ffee0000-0000-4000-8000-000000000001", b"written, never indexed"
        ) as planted:
            before = scan(orthanc, data_dir)
            result = run_playbook(
                "orphans.yml",
                {
                    "orthanc_lifecycle_orphans_quarantine": True,
                    "orthanc_lifecycle_orphans_quarantine_dir": str(quarantine),
                    # The planted file is seconds old; the playbook leaves younger files alone by default.
                    "orthanc_lifecycle_orphans_min_age_minutes": 0,
                },
            )
            assert result.returncode == 0, result.stdout[-3000:]
            after = scan(orthanc, data_dir)
            record("orphans", {"before": before["orphans"], "after": after["orphans"]})
            assert before["orphans"] >= 1
            assert after == {"missing_files": [], "orphans": 0}
            assert not planted.exists()
            assert [path.read_bytes() for path in quarantine.glob(f"*/ff/ee/{planted.name}")] == [
                b"written, never indexed"
            ]
            stored = StoredStudy(
                study,
                {
                    str(ds.SOPInstanceUID): dataset_md5(p.read_bytes())
                    for ds, p in zip(study.datasets, files, strict=True)
                },
                {},
            )
            assert not missing_or_changed(orthanc, stored)
    finally:
        delete_patients(orthanc, [study])
