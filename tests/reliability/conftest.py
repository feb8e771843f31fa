"""Fixtures of the attacks: the target, a REST client, the Docker engine, and a record of figures.

Each attack writes its figures to AUSCAT_RESULTS_DIR/<attack>.json (when set), from which
docs/reliability.md takes its tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from tests.harness.orthanc import Target


@pytest.fixture(scope="session")
def target() -> Target:
    target = Target.from_environment()
    if not target.dicom_port:
        pytest.fail("ORTHANC_DICOM_PORT is not set: the attacks need the published DICOM port")
    return target


@pytest.fixture(scope="session")
def docker_client(target: Target) -> docker.DockerClient:
    if not target.stack:
        pytest.fail("ORTHANC_STACK is not set: the attacks need the stack's name")
    return docker.from_env()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("AUSCAT_DATA_DIR")
    if not value:
        pytest.fail("AUSCAT_DATA_DIR is not set: the attacks need the host's data directory")
    return Path(value)


@pytest.fixture(scope="session")
def record() -> Callable[[str, dict], None]:
    """record(attack, figures): keep an attack's figures for the docs, and print them."""
    directory = os.environ.get("AUSCAT_RESULTS_DIR")

    def write(attack: str, figures: dict) -> None:
        text = json.dumps(figures, indent=2, sort_keys=True)
        print(f"\n{attack}: {text}")
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / f"{attack}.json").write_text(text + "\n", encoding="utf-8")

    return write


def int_setting(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        pytest.fail(f"{name} must be a whole number, not {value!r}")
