"""DICOM on the stack network: only the allow-listed sender, from its address, calling Orthanc's AE title."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import docker

from tests.harness import phantoms, stack
from tests.harness.orthanc import Orthanc, Target

REJECTED = 2  # the sender's exit status when Orthanc refuses the association


def other_address(target: Target) -> str:
    return str(ipaddress.ip_address(target.sender_ip) + 1)


def send(target: Target, client: docker.DockerClient, probe_dir: Path, args: list[str], ip: str) -> tuple[int, str]:
    return stack.run_on_stack_network(client, target.service, target.network, probe_dir, args, ip=ip)


def echo_args(called: str, calling: str) -> list[str]:
    return ["echo", "orthanc", "4242", "--aet", called, "--calling-aet", calling]


def test_allow_listed_sender_may_echo(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    code, output = send(target, docker_client, probe_dir, echo_args(target.aet, target.sender_aet), target.sender_ip)
    assert code == 0, output


def test_unknown_ae_title_is_rejected(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    code, output = send(target, docker_client, probe_dir, echo_args(target.aet, "INTRUDER"), target.sender_ip)
    assert code == REJECTED, output


def test_known_ae_title_from_another_address_is_rejected(
    target: Target, docker_client: docker.DockerClient, probe_dir: Path
) -> None:
    args = echo_args(target.aet, target.sender_aet)
    code, output = send(target, docker_client, probe_dir, args, other_address(target))
    assert code == REJECTED, output


def test_wrong_called_ae_title_is_rejected(target: Target, docker_client: docker.DockerClient, probe_dir: Path) -> None:
    code, output = send(target, docker_client, probe_dir, echo_args("NOT-ORTHANC", target.sender_aet), target.sender_ip)
    assert code == REJECTED, output


def test_c_store_from_an_unknown_ae_title_stores_nothing(
    target: Target, orthanc: Orthanc, docker_client: docker.DockerClient, probe_dir: Path
) -> None:
    study = phantoms.make_study(slices=2)
    phantoms.write_study(study, probe_dir / "intruder")
    files = [f"/probe/intruder/{path.name}" for path in study.paths]
    args = ["store", "orthanc", "4242", "--aet", target.aet, "--calling-aet", "INTRUDER", *files]
    code, output = send(target, docker_client, probe_dir, args, target.sender_ip)
    assert code == REJECTED, output
    assert orthanc.patient_id_of(study.patient_id) is None


def test_dicom_port_is_not_published(docker_client: docker.DockerClient, target: Target) -> None:
    service = docker_client.services.get(target.service)
    published = [port["TargetPort"] for port in service.attrs["Endpoint"].get("Ports", [])]
    published += [port["TargetPort"] for port in service.attrs["Spec"].get("EndpointSpec", {}).get("Ports", [])]
    assert 4242 not in published
    assert 8042 in published
