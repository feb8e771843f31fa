"""Run this repository's playbooks against the inventory of the deployed stack (AUSCAT_INVENTORY)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 1200


def run_playbook(playbook: str, extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    """ansible-playbook playbooks/<playbook>; output in .stdout/.stderr, never raises on failure."""
    inventory = os.environ.get("AUSCAT_INVENTORY")
    assert inventory, "AUSCAT_INVENTORY must name the inventory of the deployed stack"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPOSITORY / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    command = ["ansible-playbook", "-i", inventory, f"playbooks/{playbook}"]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    return subprocess.run(
        command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
