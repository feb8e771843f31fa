"""A full disk: senders are told, nothing acknowledged is lost, and Orthanc recovers by itself.

The data directory must be a filesystem of its own (the reliability scenario mounts one).
A filler file leaves a few megabytes; phantoms are sent over C-STORE and REST until
Orthanc refuses them; the filler is removed and the same Orthanc process accepts again.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import dicom, phantoms, stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, assert_study_intact, dataset_md5, missing_or_changed, send_study

LEFT_FREE_BYTES = 24 * 1024 * 1024
SLICES = 120  # about 60 MB: more than is left
FILLER = "auscat-disk-filler"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer (Orthanc's user) can still use."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(data_dir: Path, leave: int) -> Path:
    filler = data_dir / FILLER
    size = free_bytes(data_dir) - leave
    subprocess.run(["fallocate", "--length", str(size), str(filler)], check=True, timeout=120)
    return filler


def rest_upload(orthanc: Orthanc, dataset) -> int:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return orthanc.session.post(orthanc.url + "/instances", data=buffer.getvalue(), timeout=60).status_code


@pytest.fixture
def own_filesystem(data_dir: Path) -> Path:
    if not os.path.ismount(data_dir):
        pytest.fail(f"{data_dir} is not a filesystem of its own: filling it would fill the host's disk")
    return data_dir


def test_full_disk_refuses_loses_nothing_and_recovers_without_restart(
    target: Target, orthanc: Orthanc, docker_client, own_filesystem: Path, tmp_path: Path, record
) -> None:
    before = send_study(target, tmp_path / "before", slices=5)
    assert set(before.statuses.values()) == {dicom.SUCCESS}
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    filler = fill(own_filesystem, LEFT_FREE_BYTES)
    studies = [before.study]
    try:
        study = phantoms.make_study(slices=SLICES - 1)
        studies.append(study)
        paths = phantoms.write_study(study, tmp_path / "flood")
        statuses = dicom.store_until_failure(paths, target.dicom_host, target.dicom_port, target.aet)
        acknowledged = {
            str(ds.SOPInstanceUID): dataset_md5(path.read_bytes())
            for ds, path in zip(study.datasets, paths, strict=True)
            if statuses.get(str(ds.SOPInstanceUID)) == dicom.SUCCESS
        }
        refused_c_store = sorted({f"0x{status:04X}" for status in statuses.values() if status != dicom.SUCCESS})
        rest_study = phantoms.make_study(slices=9)
        studies.append(rest_study)
        rest_statuses = [rest_upload(orthanc, dataset) for dataset in rest_study.datasets]
        free_when_full = free_bytes(own_filesystem)
        during = stack.healthy_task_container(docker_client, target.service)
        lost = missing_or_changed(orthanc, StoredStudy(study, acknowledged, statuses))
    finally:
        filler.unlink()
    after_study = send_study(target, tmp_path / "after", slices=5)
    studies.append(after_study.study)
    after = stack.healthy_task_container(docker_client, target.service)
    record(
        "disk_full",
        {"c_store_sent": len(paths), "c_store_answered": len(statuses), "c_store_acknowledged": len(acknowledged),
         "c_store_failure_statuses": refused_c_store, "rest_statuses": sorted(set(rest_statuses)),
         "free_bytes_when_full": free_when_full, "lost_acknowledged": len(lost),
         "same_container": after is not None and after.id == container.id,
         "after_freeing": sorted({f"0x{s:04X}" for s in after_study.statuses.values()})},
    )  # fmt: skip
    try:
        assert acknowledged, "nothing was stored before the disk filled: the filler left too little"
        assert refused_c_store, "every C-STORE succeeded: the disk never filled"
        assert all(status >= 400 for status in rest_statuses), f"REST uploads on a full disk answered {rest_statuses}"
        assert not lost, f"acknowledged instances lost: {lost[:3]}"
        assert during is not None, "Orthanc was not healthy while the disk was full"
        assert during.id == container.id, "Orthanc restarted while the disk was full"
        assert set(after_study.statuses.values()) == {dicom.SUCCESS}, (
            "Orthanc did not accept again once space was freed"
        )
        assert after is not None
        assert after.id == container.id, "Orthanc needed a restart to accept again"
        assert_study_intact(orthanc, before)
        assert_study_intact(orthanc, after_study)
    finally:
        for each in studies:
            orthanc.delete_patient(each.patient_id)
