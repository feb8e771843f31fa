"""Fixtures shared by the probes: the target, a REST client, and a phantom study stored once per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.harness import stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, send_study, send_study_from_stack_network


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
def docker_client(target: Target) -> docker.DockerClient:
    need(target, "ORTHANC_STACK", target.stack)
    return docker.from_env()


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stack.prepare_probe_dir(tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="session")
def phantom_cleanup(orthanc: Orthanc) -> Iterator[list[str]]:
    """Collects the PatientIDs of phantoms sent in this run and deletes them at the end."""
    patient_ids: list[str] = []
    yield patient_ids
    for patient_id in patient_ids:
        orthanc.delete_patient(patient_id)


@pytest.fixture(scope="session")
def stored_study(
    target: Target, tmp_path_factory: pytest.TempPathFactory, phantom_cleanup: list[str], request: pytest.FixtureRequest
) -> StoredStudy:
    """A CT series of 20 slices and its RTSTRUCT, sent over the published DICOM port or, where
    4242 is not published, from the allow-listed sender's address on the stack network."""
    if target.dicom_port or not target.sender_ip:
        need(target, "ORTHANC_DICOM_PORT", target.dicom_port)
        stored = send_study(target, tmp_path_factory.mktemp("phantom"))
    else:
        client = request.getfixturevalue("docker_client")
        stored = send_study_from_stack_network(target, client, request.getfixturevalue("probe_dir"))
    phantom_cleanup.append(stored.study.patient_id)
    return stored
