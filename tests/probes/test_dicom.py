"""DICOM reaches Orthanc both ways CTP might send it: on the stack network and on the published port."""

from __future__ import annotations

from pathlib import Path

import docker

from tests.harness import dicom, stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, send_study_from_stack_network
from tests.probes.conftest import need


def test_c_echo_on_published_port_succeeds(target: Target) -> None:
    need(target, "ORTHANC_DICOM_PORT", target.dicom_port)
    assert dicom.echo(target.dicom_host, target.dicom_port, target.aet) == dicom.SUCCESS


def test_c_store_on_published_port_accepts_every_instance(stored_study: StoredStudy) -> None:
    assert len(stored_study.statuses) == 21
    assert set(stored_study.statuses.values()) == {dicom.SUCCESS}


def test_c_echo_from_stack_network_reaches_orthanc_by_name(
    target: Target, docker_client: docker.DockerClient, probe_dir: Path
) -> None:
    code, output = stack.run_on_stack_network(
        docker_client,
        target.service,
        target.network,
        probe_dir,
        ["echo", "orthanc", "4242", "--aet", target.aet, "--calling-aet", target.sender_aet],
        ip=target.sender_ip,
    )
    assert code == 0, output
    assert "0000 C-ECHO" in output


def test_c_store_from_stack_network_stores_the_study(
    target: Target,
    orthanc: Orthanc,
    docker_client: docker.DockerClient,
    probe_dir: Path,
    phantom_cleanup: list[str],
) -> None:
    stored = send_study_from_stack_network(target, docker_client, probe_dir)
    study = stored.study
    phantom_cleanup.append(study.patient_id)
    assert len(stored.statuses) == 21, stored.statuses
    assert set(stored.statuses.values()) == {dicom.SUCCESS}, stored.statuses
    patient = orthanc.patient_id_of(study.patient_id)
    assert patient is not None, f"PatientID {study.patient_id} was not stored"
    assert len(orthanc.get(f"/patients/{patient}/instances").json()) == 21
