"""The production profile's known-vulnerability gate, through the real playbook's preflight."""

from __future__ import annotations

from pathlib import Path

import docker
import yaml

from tests.harness import stack
from tests.harness.orthanc import Target
from tests.harness.playbook import run_playbook, unfolded_output

TABLE = Path(__file__).resolve().parents[2] / "roles" / "orthanc_image" / "vars" / "vulnerabilities.yml"
VULNERABLE_TAG = "1.12.7-7"  # Debian trixie's Orthanc, before the 2026 fixes
PREFLIGHT = "orthanc_image_preflight"


def orthanc_cves() -> list[str]:
    table = yaml.safe_load(TABLE.read_text())["_orthanc_image_vulnerabilities"]
    return [entry["id"] for entry in table if entry["component"] == "orthanc"]


def test_production_refuses_a_vulnerable_orthanc_naming_the_cves_and_the_fix(
    docker_client: docker.DockerClient, target: Target
) -> None:
    before = stack.service_image(docker_client, target.service)
    result = run_playbook("site.yml", {"orthanc_image_tag": VULNERABLE_TAG}, tags=PREFLIGHT)
    output = unfolded_output(result)
    assert result.returncode != 0, output
    cves = orthanc_cves()
    assert f"orthanc 1.12.7 has known vulnerabilities {', '.join(cves)} (first fixed in 1.12.11)" in output, output
    assert "Nothing was changed" in output, output
    assert stack.service_image(docker_client, target.service) == before


def test_production_names_only_the_vulnerabilities_the_inventory_has_not_accepted(
    docker_client: docker.DockerClient, target: Target
) -> None:
    *accepted, remaining = orthanc_cves()
    result = run_playbook(
        "site.yml",
        {"orthanc_image_tag": VULNERABLE_TAG, "orthanc_accepted_vulnerabilities": accepted},
        tags=PREFLIGHT,
    )
    output = unfolded_output(result)
    assert result.returncode != 0, output
    assert f"orthanc 1.12.7 has known vulnerabilities {remaining} (first fixed in 1.12.11)" in output, output


def test_production_accepts_a_vulnerable_orthanc_whose_cves_are_listed_and_warns() -> None:
    result = run_playbook(
        "site.yml",
        {"orthanc_image_tag": VULNERABLE_TAG, "orthanc_accepted_vulnerabilities": orthanc_cves()},
        tags=PREFLIGHT,
    )
    output = unfolded_output(result)
    assert result.returncode == 0, output
    assert "WARNING: orthanc_image_tag 1.12.7-7 runs orthanc 1.12.7" in output, output
    assert "accepted by orthanc_accepted_vulnerabilities" in output, output


def test_production_passes_the_default_release_without_a_warning() -> None:
    result = run_playbook("site.yml", tags=PREFLIGHT)
    output = unfolded_output(result)
    assert result.returncode == 0, output
    assert "has known vulnerabilities" not in output, output  # the refusal's and the warning's words
