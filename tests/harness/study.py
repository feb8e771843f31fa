"""A phantom study sent to Orthanc, and the check that Orthanc still holds it unchanged."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.harness import dicom, phantoms, stack
from tests.harness.orthanc import Orthanc, Target

# A line of the sender's output: "<status hex> <SOPInstanceUID>".
SENDER_STATUS = re.compile(r"^([0-9a-f]{4}) ([0-9.]+)$", re.MULTILINE)


@dataclass
class StoredStudy:
    """A phantom study sent to Orthanc, with the MD5 of every dataset as sent."""

    study: phantoms.Study
    md5_by_sop_uid: dict[str, str]
    statuses: dict[str, int]


def dataset_md5(part10: bytes) -> str:
    return hashlib.md5(dicom.dataset_bytes(part10)).hexdigest()  # noqa: S324


def send_study(target: Target, directory: Path, slices: int = 20) -> StoredStudy:
    """Generate a phantom study and C-STORE it over the published DICOM port."""
    study = phantoms.make_study(slices=slices)
    paths = phantoms.write_study(study, directory)
    statuses = dicom.store(paths, target.dicom_host, target.dicom_port, target.aet)
    md5 = {
        str(ds.SOPInstanceUID): dataset_md5(path.read_bytes()) for ds, path in zip(study.datasets, paths, strict=True)
    }
    return StoredStudy(study, md5, statuses)


def send_study_from_stack_network(
    target: Target, client: docker.DockerClient, probe_dir: Path, slices: int = 20
) -> StoredStudy:
    """Generate a phantom study and C-STORE it from a container on the stack network, as the
    allow-listed sender (ORTHANC_SENDER_IP, ORTHANC_SENDER_AET) would."""
    study = phantoms.make_study(slices=slices)
    directory = probe_dir / f"study-{study.patient_id}"
    paths = phantoms.write_study(study, directory)
    files = [f"/probe/{directory.name}/{path.name}" for path in paths]
    code, output = stack.run_on_stack_network(
        client,
        target.service,
        target.network,
        probe_dir,
        ["store", "orthanc", "4242", "--aet", target.aet, "--calling-aet", target.sender_aet, *files],
        ip=target.sender_ip,
    )
    statuses = {match[2]: int(match[1], 16) for match in SENDER_STATUS.finditer(output)}
    if code not in (0, 1):
        raise AssertionError(f"the sender on the stack network failed ({code}): {output}")
    md5 = {
        str(ds.SOPInstanceUID): dataset_md5(path.read_bytes()) for ds, path in zip(study.datasets, paths, strict=True)
    }
    return StoredStudy(study, md5, statuses)


def missing_or_changed(orthanc: Orthanc, stored: StoredStudy) -> list[str]:
    """SOPInstanceUIDs of the study that Orthanc lacks or holds with a different dataset."""
    problems = []
    for sop_uid, expected in stored.md5_by_sop_uid.items():
        instance = orthanc.lookup(sop_uid, "Instance")
        if instance is None or dataset_md5(orthanc.get(f"/instances/{instance}/file").content) != expected:
            problems.append(sop_uid)
    return problems


def assert_study_intact(orthanc: Orthanc, stored: StoredStudy) -> None:
    """Every instance of the study is in Orthanc, its dataset byte for byte as it was sent."""
    problems = missing_or_changed(orthanc, stored)
    assert not problems, f"{len(problems)} of {len(stored.md5_by_sop_uid)} instances missing or changed: {problems[:3]}"
