"""Stored data survives a forced service update and a removal and redeployment of the whole stack."""

from __future__ import annotations

import docker
import pytest

from tests.harness import stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, assert_study_intact
from tests.probes.conftest import need


@pytest.fixture
def restartable(target: Target, docker_client: docker.DockerClient) -> docker.DockerClient:
    need(target, "ORTHANC_ALLOW_RESTART=1", target.allow_restart)
    return docker_client


def test_data_survives_forced_service_update(
    target: Target, orthanc: Orthanc, restartable: docker.DockerClient, stored_study: StoredStudy
) -> None:
    before = stack.wait_until_healthy(restartable, target.service)
    stack.docker_cli("service", "update", "--force", "--detach", target.service)
    after = stack.wait_until_healthy(restartable, target.service, not_container=before)
    assert after != before
    assert_study_intact(orthanc, stored_study)


def test_data_survives_stack_removal_and_redeploy(
    target: Target, orthanc: Orthanc, restartable: docker.DockerClient, stored_study: StoredStudy
) -> None:
    before = stack.wait_until_healthy(restartable, target.service)
    stack.docker_cli("stack", "rm", target.stack)
    stack.wait_until_gone(restartable, target.service, target.network)
    stack.docker_cli("stack", "deploy", "--resolve-image", "never", "--compose-file", target.stack_file, target.stack)
    after = stack.wait_until_healthy(restartable, target.service, not_container=before)
    assert after != before
    assert_study_intact(orthanc, stored_study)
