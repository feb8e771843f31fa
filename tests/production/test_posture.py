"""The container Orthanc runs in: not root, no capabilities, no new privileges, read-only root filesystem."""

from __future__ import annotations

import docker
import pytest

from tests.harness import stack
from tests.harness.orthanc import Target

ORTHANC_UID = "4242"


@pytest.fixture(scope="module")
def container(docker_client: docker.DockerClient, target: Target):
    found = stack.healthy_task_container(docker_client, target.service)
    assert found is not None, f"no healthy task of {target.service}"
    return found


def orthanc_status(container) -> dict[str, str]:
    """/proc/<pid>/status of the Orthanc process (PID 1 after the entrypoint's exec)."""
    result = container.exec_run(["cat", "/proc/1/status"])
    assert result.exit_code == 0, result.output
    lines = result.output.decode().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_orthanc_is_pid_1_and_not_root(container) -> None:
    status = orthanc_status(container)
    assert status["Name"] == "Orthanc"
    assert status["Uid"].split() == [ORTHANC_UID] * 4
    assert status["Gid"].split() == [ORTHANC_UID] * 4


def test_orthanc_has_no_capabilities(container) -> None:
    status = orthanc_status(container)
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capability_set], 16) == 0, f"{capability_set} = {status[capability_set]}"


def test_orthanc_cannot_gain_privileges(container) -> None:
    assert orthanc_status(container)["NoNewPrivs"] == "1"


@pytest.mark.parametrize("path", ["/usr/local/lib/auscat/probe", "/etc/probe", "/var/lib/orthanc/probe"])
def test_root_filesystem_is_read_only(container, path: str) -> None:
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    result = container.exec_run(["python3", "-c", f"open({path!r}, 'w')"])
    assert result.exit_code != 0
    assert b"Read-only file system" in result.output


@pytest.mark.parametrize("path", ["/var/lib/orthanc/db", "/tmp", "/run/auscat"])  # noqa: S108 - inside the container
def test_orthanc_writes_only_to_its_data_and_tmpfs(container, path: str) -> None:
    probe = f"{path}/.auscat-write-probe"
    result = container.exec_run(["python3", "-c", f"import os; open({probe!r}, 'w').close(); os.remove({probe!r})"])
    assert result.exit_code == 0, result.output
