"""The host as the roles left it (testinfra): engine, Swarm, data directory, and the container's posture."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.harness.orthanc import Target

ORTHANC_UID = "4242"


@pytest.fixture(scope="module")
def container(host, target: Target) -> str:
    assert target.service, "ORTHANC_STACK is not set"
    ids = host.check_output(
        "docker ps --quiet --filter label=com.docker.swarm.service.name=%s --filter health=healthy", target.service
    ).split()
    assert len(ids) == 1, f"expected one healthy task of {target.service}, found {ids}"
    return ids[0]


def test_docker_engine_answers(host) -> None:
    assert host.run("docker version").rc == 0


def test_swarm_is_active(host) -> None:
    assert host.check_output("docker info --format '{{.Swarm.LocalNodeState}}'") == "active"


def stack_services(target: Target) -> list[str]:
    """The services the stack should have: orthanc, and its index database with the PostgreSQL backend."""
    postgresql = os.environ.get("AUSCAT_INDEX_BACKEND") == "postgresql"
    return [f"{target.stack}_orthanc", *([f"{target.stack}_postgresql"] if postgresql else [])]


def test_service_is_named_orthanc_in_its_stack(host, target: Target) -> None:
    services = host.check_output("docker stack services --format '{{.Name}}' %s", target.stack).split()
    assert sorted(services) == stack_services(target)


def test_data_directory_belongs_to_the_orthanc_user(host) -> None:
    data_dir = host.file(os.environ["AUSCAT_DATA_DIR"])
    assert data_dir.is_directory
    assert (str(data_dir.uid), data_dir.mode) == (ORTHANC_UID, 0o750)


def test_orthanc_does_not_run_as_root(host, container: str) -> None:
    assert host.check_output("docker exec %s id -u", container) == ORTHANC_UID


@pytest.mark.parametrize("path", ["/run/secrets/orthanc.json", "/run/auscat/orthanc.json"])
def test_configuration_is_readable_only_by_orthanc(host, container: str, path: str) -> None:
    owner, mode = host.check_output("docker exec %s stat -c '%%u %%a' %s", container, path).split()
    assert owner == ORTHANC_UID
    assert mode in ("400", "600")


def test_secret_users_replace_the_default_users(host, container: str, target: Target) -> None:
    merged = json.loads(host.check_output("docker exec %s cat /run/auscat/orthanc.json", container))
    # The production scenario has one user per role (prepare.yml writes their passwords); the others one user.
    passwords = Path(os.environ.get("AUSCAT_PRODUCTION_DIR", "/nonexistent")) / "passwords.json"
    expected = json.loads(passwords.read_text()) if passwords.is_file() else {target.username: target.password}
    assert merged["RegisteredUsers"] == expected
    assert target.username in expected


def test_only_the_secret_in_use_remains_labelled_for_the_stack(host, target: Target) -> None:
    labelled = host.check_output(
        "docker secret ls --filter label=org.auscat.stack=%s --format '{{.Name}}'", target.stack
    ).split()
    secrets_format = "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}"
    services = stack_services(target)
    command = "docker service inspect --format %s" + " %s" * len(services)
    in_use = host.check_output(command, secrets_format, *services).split()
    assert sorted(labelled) == sorted(in_use)
    # orthanc.json, the TLS bundle over HTTPS, the database password with PostgreSQL
    assert len(in_use) == 1 + target.url.startswith("https://") + (len(services) - 1)


def test_image_records_the_fingerprint_of_its_inputs(host, container: str) -> None:
    image = host.check_output("docker inspect --format '{{.Config.Image}}' %s", container)
    labels = json.loads(host.check_output("docker image inspect --format '{{json .Config.Labels}}' %s", image))
    assert len(labels.get("org.auscat.inputs", "")) == 16


def stack_images(host, target: Target) -> list[str]:
    """The image of each service of the stack."""
    return [
        host.check_output(
            "docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' %s", name
        ).split("@")[0]
        for name in stack_services(target)
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["orthanc", "postgresql"])
def test_image_has_no_pending_update_from_its_archives(host, target: Target, index: int) -> None:
    images = stack_images(host, target)
    if index >= len(images):
        pytest.skip("the stack has no PostgreSQL service")
    # The image's own apt sources (the suite, -updates, -security), read fresh; held pins count too.
    pending = host.run(
        "docker run --rm --user 0 --entrypoint sh %s -c "
        "'apt-get update -qq --error-on=any >/dev/null && apt-get -s --ignore-hold full-upgrade | grep ^Inst || true'",
        images[index],
    )
    assert pending.rc == 0, pending.stderr
    assert pending.stdout.strip() == "", f"{images[index]} has pending updates:\n{pending.stdout}"
    sources = host.check_output(
        "docker run --rm --network none --entrypoint cat %s /etc/apt/sources.list.d/debian.sources", images[index]
    )
    assert "-security" in sources


def test_image_records_its_package_list_and_its_digest(host, target: Target) -> None:
    for image in stack_images(host, target):
        listing = host.check_output(
            "docker run --rm --network none --entrypoint cat %s /usr/share/auscat/packages.txt", image
        )
        labels = json.loads(host.check_output("docker image inspect --format '{{json .Config.Labels}}' %s", image))
        digest = hashlib.sha256((listing + "\n").encode()).hexdigest()
        assert labels["org.auscat.packages.sha256"] == digest, image
        assert len(listing.splitlines()) > 50


def test_password_is_absent_from_docker_inspect(host, container: str, target: Target) -> None:
    image = host.check_output("docker inspect --format '{{.Config.Image}}' %s", container)
    for kind, name in (("service", target.service), ("container", container), ("image", image)):
        inspected = host.check_output("docker %s inspect %s", kind, name)
        assert target.password not in inspected, f"the password shows in docker {kind} inspect"
