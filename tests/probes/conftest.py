"""Fixtures shared by the probes: the target, a REST client, and a phantom study stored once per run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.harness import dicom, phantoms, stack
from tests.harness.orthanc import Orthanc, Target


@dataclass
class StoredStudy:
    """A phantom study sent to Orthanc, with the MD5 of every dataset as sent."""

    study: phantoms.Study
    md5_by_sop_uid: dict[str, str]
    statuses: dict[str, int]


@pytest.fixture(scope="session")
def target() -> Target:
    return Target.from_environment()


def need(target: Target, setting: str, value: object) -> None:
    """Skip a probe whose setting is missing, or fail when every probe is required to run."""
    if value:
        return
    message = f"{setting} is not set"
    if target.require_all:
        pytest.fail(f"{message}, but AUSCAT_PROBES_REQUIRE_ALL=1 requires this probe")
    pytest.skip(message)


@pytest.fixture(scope="session")
def orthanc(target: Target) -> Orthanc:
    return Orthanc(target.url, target.username, target.password)


@pytest.fixture(scope="session")
def docker_client(target: Target) -> docker.DockerClient:
    need(target, "ORTHANC_STACK", target.stack)
    return docker.from_env()


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stack.prepare_probe_dir(tmp_path_factory.mktemp("probe"))


def dataset_md5(part10: bytes) -> str:
    return hashlib.md5(dicom.dataset_bytes(part10)).hexdigest()  # noqa: S324


@pytest.fixture(scope="session")
def phantom_cleanup(orthanc: Orthanc) -> Iterator[list[str]]:
    """Collects the PatientIDs of phantoms sent in this run and deletes them at the end."""
    patient_ids: list[str] = []
    yield patient_ids
    for patient_id in patient_ids:
        resource = orthanc.patient_id_of(patient_id)
        if resource:
            orthanc.delete(f"/patients/{resource}")


@pytest.fixture(scope="session")
def stored_study(target: Target, tmp_path_factory: pytest.TempPathFactory, phantom_cleanup: list[str]) -> StoredStudy:
    """A CT series of 20 slices and its RTSTRUCT, sent over the published DICOM port."""
    need(target, "ORTHANC_DICOM_PORT", target.dicom_port)
    study = phantoms.make_study(slices=20)
    paths = phantoms.write_study(study, tmp_path_factory.mktemp("phantom"))
    phantom_cleanup.append(study.patient_id)
    statuses = dicom.store(paths, target.dicom_host, target.dicom_port, target.aet)
    md5 = {path.name.split("-", 1)[1].removesuffix(".dcm"): dataset_md5(path.read_bytes()) for path in paths}
    return StoredStudy(study, md5, statuses)


def assert_study_intact(orthanc: Orthanc, stored: StoredStudy) -> None:
    """Every instance of the study is in Orthanc, its dataset byte for byte as it was sent."""
    for sop_uid, expected in stored.md5_by_sop_uid.items():
        instance = orthanc.lookup(sop_uid, "Instance")
        assert instance is not None, f"instance {sop_uid} is missing"
        stored_file = orthanc.get(f"/instances/{instance}/file").content
        assert dataset_md5(stored_file) == expected, f"instance {sop_uid} differs from the dataset sent"
