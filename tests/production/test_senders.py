"""DICOM on the stack network: only the allow-listed sender, from its address, calling Orthanc's AE title; each
association's decision in the audit trail."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import docker

from tests.harness import phantoms, stack
from tests.harness.audit import association_lines, now
from tests.harness.orthanc import Orthanc, Target

REJECTED = 2  # the sender's exit status when Orthanc refuses the association


def other_address(target: Target) -> str:
    return str(ipaddress.ip_address(target.sender_ip) + 1)


def send(target: Target, client: docker.DockerClient, probe_dir: Path, args: list[str], ip: str) -> tuple[int, str]:
    return stack.run_on_stack_network(client, target.service, target.network, probe_dir, args, ip=ip)


def echo_args(called: str, calling: str) -> list[str]:
    return ["echo", "orthanc", "4242", "--aet", called, "--calling-aet", calling]


def audited(calling_aet: str, client: str, since: str) -> dict:
    """The one association line of this attempt."""
    lines = association_lines(calling_aet, client, since)
    assert len(lines) == 1, f"association lines of {calling_aet} on {client} since {since}: {lines}"
    return lines[0]


def test_allow_listed_sender_may_echo(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    since = now()
    code, output = send(target, docker_client, probe_dir, echo_args(target.aet, target.sender_aet), target.sender_ip)
    assert code == 0, output
    assert audited(target.sender_aet, target.sender_ip, since)["decision"] == "accepted"


def test_unknown_ae_title_is_rejected(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    since = now()
    code, output = send(target, docker_client, probe_dir, echo_args(target.aet, "INTRUDER"), target.sender_ip)
    assert code == REJECTED, output
    line = audited("INTRUDER", target.sender_ip, since)
    assert line["decision"] == "refused"
    assert "DicomModalities" in line["why"]


def test_known_ae_title_from_another_address_is_rejected(
    target: Target, docker_client: docker.DockerClient, probe_dir: Path
) -> None:
    since = now()
    args = echo_args(target.aet, target.sender_aet)
    code, output = send(target, docker_client, probe_dir, args, other_address(target))
    assert code == REJECTED, output
    line = audited(target.sender_aet, other_address(target), since)
    assert line["decision"] == "refused"
    assert "DicomCheckModalityHost" in line["why"]


def test_wrong_called_ae_title_is_rejected(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    since = now()
    code, output = send(target, docker_client, probe_dir, echo_args("NOT-ORTHANC", target.sender_aet), target.sender_ip)
    assert code == REJECTED, output
    line = audited(target.sender_aet, target.sender_ip, since)
    assert (line["decision"], line["called_aet"]) == ("refused", "NOT-ORTHANC")


def test_c_store_from_an_unknown_ae_title_stores_nothing(
    target: Target, orthanc: Orthanc, docker_client: docker.DockerClient, probe_dir: Path
) -> None:
    study = phantoms.make_study(slices=2)
    phantoms.write_study(study, probe_dir / "intruder")
    files = [f"/probe/intruder/{path.name}" for path in study.paths]
    args = ["store", "orthanc", "4242", "--aet", target.aet, "--calling-aet", "INTRUDER", *files]
    since = now()
    code, output = send(target, docker_client, probe_dir, args, target.sender_ip)
    assert code == REJECTED, output
    assert orthanc.patient_id_of(study.patient_id) is None
    assert audited("INTRUDER", target.sender_ip, since)["decision"] == "refused"


def test_the_container_log_keeps_the_dicom_details_out(target: Target, docker_client: docker.DockerClient) -> None:
    """Orthanc runs with --verbose-dicom for the association lines; its INFO lines stay out of the container log."""
    logs = stack.task_logs(docker_client, target.service)
    assert b'"kind":"association"' in logs
    assert b"Association Received from AET" not in logs
    assert b"(dicom)" not in logs


def test_dicom_port_is_not_published(docker_client: docker.DockerClient, target: Target) -> None:
    service = docker_client.services.get(target.service)
    published = [port["TargetPort"] for port in service.attrs["Endpoint"].get("Ports", [])]
    published += [port["TargetPort"] for port in service.attrs["Spec"].get("EndpointSpec", {}).get("Ports", [])]
    assert 4242 not in published
    assert 8042 in published
