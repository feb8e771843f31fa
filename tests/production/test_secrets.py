"""The password stays in the vault: a change rolls a new secret and the old password stops working, and the
password never shows in Ansible's output, Orthanc's logs, docker inspect or the image."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from tests.harness import stack
from tests.harness.orthanc import TIMEOUT_SECONDS, Target
from tests.harness.playbook import run_playbook
from tests.production.conftest import scenario_passwords

CHUNK = 1 << 20


def status(target: Target, password: str) -> int:
    reply = requests.get(
        target.url + "/system", auth=(target.username, password), timeout=TIMEOUT_SECONDS, verify=target.verify
    )
    return reply.status_code


def secret_names(client: docker.DockerClient, target: Target) -> list[str]:
    spec = client.services.get(target.service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    return sorted(secret["SecretName"] for secret in spec.get("Secrets", []))


def rollout_with_password(tmp_path: Path, target: Target, password: str | None) -> subprocess.CompletedProcess:
    """site.yml at verbosity -v; with ``password``, the probes' user gets it (from a 0600 vars file), the other
    users keep theirs."""
    if password is None:
        return run_playbook("site.yml", verbosity=1)
    extra = tmp_path / "users.json"
    extra.touch(mode=0o600)
    users = {**scenario_passwords(), target.username: password}
    extra.write_text(json.dumps({"vault_orthanc_registered_users": users}))
    return run_playbook("site.yml", vars_file=extra, verbosity=1)


@pytest.fixture(scope="module")
def changed_password(
    target: Target, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """Roll out a new password, then the vault's again; what each rollout printed and rolled."""
    tmp_path = tmp_path_factory.mktemp("password")
    new_password = secrets.token_urlsafe(18)
    before = secret_names(docker_client, target)
    changed = rollout_with_password(tmp_path, target, new_password)
    state = {
        "new_password": new_password,
        "before": before,
        "after": secret_names(docker_client, target),
        "new_status": status(target, new_password),
        "old_status": status(target, target.password),
        "output": changed.stdout + changed.stderr,
        "returncode": changed.returncode,
    }
    yield state
    restored = rollout_with_password(tmp_path, target, None)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert status(target, target.password) == 200


def test_password_change_rolls_a_new_secret(changed_password: dict) -> None:
    assert changed_password["returncode"] == 0, changed_password["output"]
    assert changed_password["before"] != changed_password["after"]
    assert changed_password["new_status"] == 200


def test_old_password_gets_401_after_the_change(changed_password: dict) -> None:
    assert changed_password["old_status"] == 401


def test_password_is_absent_from_ansible_output(changed_password: dict, target: Target) -> None:
    output = changed_password["output"]
    assert changed_password["new_password"] not in output
    assert target.password not in output


def test_password_is_absent_from_orthanc_logs(docker_client: docker.DockerClient, target: Target) -> None:
    text = stack.task_logs(docker_client, target.service)
    assert len(text) > 0
    assert b"auscat: plugin loaded" in text
    assert target.password.encode() not in text


def test_password_is_absent_from_docker_inspect(docker_client: docker.DockerClient, target: Target) -> None:
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    for kind, name in (("service", target.service), ("container", container.id), ("image", container.image.id)):
        inspected = stack.docker_cli(kind, "inspect", name).stdout
        assert target.password not in inspected, f"the password shows in docker {kind} inspect"
    for secret in docker_client.secrets.list(filters={"label": f"org.auscat.stack={target.stack}"}):
        assert target.password not in json.dumps(secret.attrs)  # Swarm never returns a secret's data


def test_password_is_absent_from_the_image(docker_client: docker.DockerClient, target: Target, tmp_path: Path) -> None:
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    needle = target.password.encode()
    seen = 0
    tail = b""
    with subprocess.Popen(["docker", "save", container.image.id], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        while chunk := save.stdout.read(CHUNK):
            assert needle not in tail + chunk, "the password is inside the image"
            tail = chunk[-len(needle) :]
            seen += len(chunk)
    assert save.returncode == 0
    assert seen > 10 * CHUNK  # the whole image went through the search
    assert os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE"), "the scenario's vault password file is not set"
