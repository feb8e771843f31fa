"""The systemd units of the scheduled backup, rendered by Ansible from the role's templates and vars, then
checked by systemd-analyze (where it is installed): the Molecule hosts run cron, not systemd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
ROLE = REPOSITORY / "roles" / "orthanc_lifecycle"
RENDER = """
- name: Render the units of the scheduled backup
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the role's variables
      ansible.builtin.include_vars: {role}/vars/main.yml
    - name: Render the units
      ansible.builtin.template:
        src: "{role}/templates/backup.{{{{ item }}}}.j2"
        dest: "{{{{ out }}}}/auscat-backup-auscat.{{{{ item }}}}"
        mode: "0644"
      loop: [service, timer]
"""


def render(tmp_path: Path, weekdays: list[str]) -> tuple[Path, Path]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER.format(role=ROLE), encoding="utf-8")
    settings = {
        "out": str(tmp_path),
        "ansible_python_interpreter": sys.executable,
        "orthanc_stack_name": "auscat",
        "orthanc_lifecycle_state_dir": "/var/lib/auscat/lifecycle",
        "orthanc_lifecycle_backup_schedule": "02:30",
        "orthanc_lifecycle_backup_weekdays": weekdays,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPOSITORY / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", json.dumps(settings)],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / "auscat-backup-auscat.service", tmp_path / "auscat-backup-auscat.timer"


@pytest.mark.parametrize(("weekdays", "calendar"), [([], "*-*-* 02:30:00"), (["Mon", "Thu"], "Mon,Thu *-*-* 02:30:00")])
def test_timer_fires_at_the_scheduled_time_and_runs_the_scheduled_backup(
    tmp_path: Path, weekdays: list[str], calendar: str
) -> None:
    service, timer = render(tmp_path, weekdays)
    assert f"\nOnCalendar={calendar}\n" in timer.read_text()
    assert "\nPersistent=true\n" in timer.read_text()
    assert (
        "\nExecStart=/usr/bin/python3 /usr/local/lib/auscat/auscat_scheduled_backup.py"
        " --config /var/lib/auscat/lifecycle/auscat/backup.json\n" in service.read_text()
    )
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units were rendered but not verified")
    verified = subprocess.run([analyze, "verify", "--man=no", str(service), str(timer)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert not verified.stderr.strip(), verified.stderr
    normalized = subprocess.run([analyze, "calendar", calendar], capture_output=True, text=True, check=True).stdout
    assert f"Normalized form: {calendar}" in normalized, normalized
