"""Fixtures every suite against a deployed stack shares: the target, a REST client and the Docker engine.

The probes and the attacks override ``target`` and ``docker_client`` with versions that check
their own required settings.
"""

from __future__ import annotations

import docker
import pytest

from tests.harness.orthanc import Orthanc, Target


@pytest.fixture(scope="session")
def target() -> Target:
    return Target.from_environment()


@pytest.fixture(scope="session")
def orthanc(target: Target) -> Orthanc:
    return Orthanc.for_target(target)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env()
