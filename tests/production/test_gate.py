"""The anonymisation gate: an identifiable instance is refused on C-STORE, REST and STOW, and nothing is stored."""

from __future__ import annotations

import copy
import time
import uuid
from pathlib import Path

import docker
import pytest
from pydicom.dataset import Dataset

from tests.harness import phantoms, stack
from tests.harness.audit import audit_file, instance_lines
from tests.harness.orthanc import TIMEOUT_SECONDS, Orthanc, Target

STOW_BOUNDARY = "auscat-gate-probe"
LOG_WAIT_SECONDS = 10


def identifiable(kind: str) -> Dataset:
    """A CT slice of a fresh phantom that still identifies its patient in the way ``kind`` says."""
    dataset = copy.deepcopy(phantoms.make_study(slices=1).ct[0])
    if kind == "unmarked":
        del dataset.PatientIdentityRemoved
    else:
        dataset.PatientAddress = "12 Example Street, Sydney"
    return dataset


def assert_not_stored(orthanc: Orthanc, dataset: Dataset) -> None:
    assert orthanc.lookup(str(dataset.SOPInstanceUID), "Instance") is None
    assert orthanc.patient_id_of(str(dataset.PatientID)) is None


@pytest.mark.parametrize("kind", ["unmarked", "address"])
def test_identifiable_instance_is_refused_over_c_store(
    target: Target, orthanc: Orthanc, docker_client: docker.DockerClient, probe_dir: Path, kind: str
) -> None:
    dataset = identifiable(kind)
    name = f"gate-{uuid.uuid4().hex[:8]}.dcm"
    (probe_dir / name).write_bytes(phantoms.part10(dataset))
    args = ["store", "orthanc", "4242", "--aet", target.aet, "--calling-aet", target.sender_aet, f"/probe/{name}"]
    code, output = stack.run_on_stack_network(
        docker_client, target.service, target.network, probe_dir, args, ip=target.sender_ip
    )
    assert code == 1, output  # the association was accepted and the store failed
    assert f"a700 {dataset.SOPInstanceUID}" in output, output
    assert_not_stored(orthanc, dataset)
    refused = instance_lines(str(dataset.SOPInstanceUID))
    assert [(line["origin"], line["decision"]) for line in refused] == [("C-STORE", "refused")], refused
    assert refused[0]["why"].startswith("identifying attribute") or "PatientIdentityRemoved" in refused[0]["why"]


@pytest.mark.parametrize("kind", ["unmarked", "address"])
def test_identifiable_instance_is_refused_over_rest(target: Target, orthanc: Orthanc, kind: str) -> None:
    dataset = identifiable(kind)
    reply = orthanc.session.post(target.url + "/instances", data=phantoms.part10(dataset), timeout=TIMEOUT_SECONDS)
    assert reply.status_code == 400, reply.text
    assert_not_stored(orthanc, dataset)


@pytest.mark.parametrize("kind", ["unmarked", "address"])
def test_identifiable_instance_is_refused_over_stow(target: Target, orthanc: Orthanc, kind: str) -> None:
    dataset = identifiable(kind)
    body = (
        f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + phantoms.part10(dataset)
        + f"\r\n--{STOW_BOUNDARY}--\r\n".encode()
    )
    reply = orthanc.session.post(
        target.url + "/dicom-web/studies",
        data=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'},
        timeout=TIMEOUT_SECONDS,
    )
    assert reply.status_code != 200 or "00081199" not in reply.json(), reply.text
    assert_not_stored(orthanc, dataset)


def test_refusal_is_logged_with_uid_and_rule_never_the_value(
    target: Target, orthanc: Orthanc, docker_client: docker.DockerClient
) -> None:
    dataset = identifiable("address")
    reply = orthanc.session.post(target.url + "/instances", data=phantoms.part10(dataset), timeout=TIMEOUT_SECONDS)
    assert reply.status_code == 400
    container = stack.healthy_task_container(docker_client, target.service)
    expected = f"auscat: refused REST instance {dataset.SOPInstanceUID}: identifying attribute PatientAddress"
    deadline = time.monotonic() + LOG_WAIT_SECONDS  # the log reader passes lines on in batches, 20 ms apart
    while expected not in (logs := container.logs().decode(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected in logs
    assert "Example Street" not in logs
    refused = instance_lines(str(dataset.SOPInstanceUID))
    assert [(line["origin"], line.get("user")) for line in refused] == [("REST", target.username)], refused
    assert refused[0]["why"].startswith("identifying attribute PatientAddress"), refused
    assert refused[0]["client"]
    assert "Example Street" not in audit_file().read_text()


def test_de_identified_instance_is_stored_over_rest(target: Target, orthanc: Orthanc, phantom_cleanup: list) -> None:
    dataset = phantoms.make_study(slices=1).ct[0]
    phantom_cleanup.append(str(dataset.PatientID))
    reply = orthanc.session.post(target.url + "/instances", data=phantoms.part10(dataset), timeout=TIMEOUT_SECONDS)
    assert reply.status_code == 200, reply.text
    assert orthanc.lookup(str(dataset.SOPInstanceUID), "Instance") is not None
