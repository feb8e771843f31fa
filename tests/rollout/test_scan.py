"""playbooks/scan.yml finds stored instances the anonymisation gate would refuse (stored while it was off)."""

from __future__ import annotations

import copy
import re

from tests.harness import phantoms
from tests.harness.orthanc import Orthanc
from tests.harness.playbook import run_playbook, unfolded_output


def test_scan_reports_identifiable_instances_by_uid_and_rule(orthanc: Orthanc) -> None:
    study = phantoms.make_study(slices=3)
    clean, unmarked, addressed = (copy.deepcopy(dataset) for dataset in study.ct)
    del unmarked.PatientIdentityRemoved
    addressed.PatientAddress = "12 Example Street, Sydney"
    try:
        for dataset in (clean, unmarked, addressed):
            orthanc.post("/instances", data=phantoms.part10(dataset))  # the gate is off in this scenario
        result = run_playbook("scan.yml")
        assert result.returncode == 0, result.stdout + result.stderr
        output = unfolded_output(result)
        assert f"{unmarked.SOPInstanceUID} (Orthanc ID" in output
        assert "PatientIdentityRemoved (0012,0062) is not YES" in output
        assert f"{addressed.SOPInstanceUID} (Orthanc ID" in output
        assert "identifying attribute PatientAddress is present" in output
        assert str(clean.SOPInstanceUID) not in output
        assert "Example Street" not in output
        refused, scanned = map(int, re.search(r"(\d+) of (\d+) stored instances would be refused", output).groups())
        assert refused >= 2
        assert scanned >= 3
    finally:
        orthanc.delete_patient(study.patient_id)
