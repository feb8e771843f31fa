"""The production scenario's probes share the skeleton probes' fixtures; its users, one per role, come from
the files prepare.yml writes under AUSCAT_PRODUCTION_DIR."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from tests.harness.orthanc import Target
from tests.probes.conftest import (  # noqa: F401 - fixtures, found by pytest under these names
    docker_client,
    phantom_cleanup,
    probe_dir,
    stored_study,
    target,
)

ROLES = ("admin", "researcher", "uploader", "metrics")


def scenario_dir() -> Path:
    return Path(os.environ["AUSCAT_PRODUCTION_DIR"])


def scenario_passwords() -> dict[str, str]:
    """Every user's password, as the vault holds them."""
    return json.loads((scenario_dir() / "passwords.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def users(target: Target) -> dict[str, Target]:  # noqa: F811 - the probes' target fixture
    """The target as the scenario's user of each role (admin: the probes' user)."""
    found = {}
    for role in ROLES:
        name = "credentials" if role == "admin" else role
        credentials = json.loads((scenario_dir() / f"{name}.json").read_text(encoding="utf-8"))
        found[role] = dataclasses.replace(target, username=credentials["username"], password=credentials["password"])
    return found
