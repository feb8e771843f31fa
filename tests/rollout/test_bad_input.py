"""Bad input fails the rollout with a message naming the problem, and the running stack is left alone."""

from __future__ import annotations

from pathlib import Path

import docker

from tests.harness.orthanc import Target
from tests.harness.playbook import run_playbook


def stack_state(docker_client: docker.DockerClient, target: Target) -> dict:
    """What would change if the rollout touched the stack: service version, task containers, secrets."""
    service = docker_client.services.get(target.service)
    containers = docker_client.containers.list(filters={"label": f"com.docker.swarm.service.name={target.service}"})
    secrets = docker_client.secrets.list(filters={"label": f"org.auscat.stack={target.stack}"})
    return {
        "service_version": service.attrs["Version"]["Index"],
        "containers": sorted(c.id for c in containers),
        "secrets": sorted(s.name for s in secrets),
    }


def assert_refused(docker_client: docker.DockerClient, target: Target, extra_vars: dict, *expected: str) -> None:
    before = stack_state(docker_client, target)
    result = run_playbook("site.yml", extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for text in expected:
        assert text in output, output
    assert stack_state(docker_client, target) == before


def test_malformed_secret_file_is_refused_with_its_line(docker_client, target: Target, tmp_path: Path) -> None:
    secret = tmp_path / "orthanc.json"
    secret.write_text('{\n  "RegisteredUsers": {"site": "a-long-site-password",}\n}\n')
    extra = {"orthanc_config_file": str(secret), "orthanc_registered_users": {}}
    assert_refused(docker_client, target, extra, str(secret), "invalid JSON at line 2")


def test_wrong_variable_type_is_refused_naming_the_variable(docker_client, target: Target) -> None:
    assert_refused(docker_client, target, {"orthanc_http_port": "eighty"}, "orthanc_http_port")


def test_setting_that_moves_data_off_the_volume_is_refused(docker_client, target: Target) -> None:
    assert_refused(docker_client, target, {"orthanc_config": {"StorageDirectory": "/srv/orthanc"}}, "StorageDirectory")
