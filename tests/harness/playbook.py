"""Run this repository's playbooks against the inventory of the deployed stack (AUSCAT_INVENTORY)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 1200


def run_playbook(
    playbook: str,
    extra_vars: dict | None = None,
    vars_file: Path | None = None,
    verbosity: int = 0,
    tags: str = "",
) -> subprocess.CompletedProcess:
    """ansible-playbook playbooks/<playbook> (only the tasks of ``tags`` when given); output in .stdout/.stderr,
    never raises on failure.

    Secrets go in ``vars_file`` (passed as -e @file), never in ``extra_vars`` (the command line)."""
    inventory = os.environ.get("AUSCAT_INVENTORY")
    assert inventory, "AUSCAT_INVENTORY must name the inventory of the deployed stack"
    # Molecule's verifier exports ANSIBLE_FORCE_COLOR, which beats NOCOLOR: plain text needs both.
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPOSITORY / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    command = ["ansible-playbook", "-i", inventory, f"playbooks/{playbook}"]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    if vars_file:
        command += ["-e", f"@{vars_file}"]
    if tags:
        command += ["--tags", tags]
    if verbosity:
        command.append("-" + "v" * verbosity)
    return subprocess.run(
        command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )


def unfolded_output(result: subprocess.CompletedProcess) -> str:
    """The playbook's output on one line: Ansible folds long messages at spaces."""
    return " ".join((result.stdout + result.stderr).split())
