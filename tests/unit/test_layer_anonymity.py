"""The anonymisation gate on phantoms (marked de-identified) and on identifiable copies of them."""

from __future__ import annotations

import copy

import auscat_anonymity
import auscat_rules
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.harness import phantoms

GATE = auscat_rules.Rules(anonymisation=True, identifying=auscat_anonymity.identifying_tags(
    auscat_anonymity.DEFAULT_IDENTIFYING_ATTRIBUTES
))  # fmt: skip


@pytest.fixture(scope="module")
def study() -> phantoms.Study:
    return phantoms.make_study(slices=2)


def test_de_identified_phantoms_pass(study: phantoms.Study) -> None:
    for dataset in study.datasets:
        GATE.check(phantoms.part10(dataset))


@pytest.mark.parametrize("marker", [None, "NO", ""])
def test_instance_not_marked_de_identified_is_refused(study: phantoms.Study, marker: str | None) -> None:
    dataset = copy.deepcopy(study.ct[0])
    if marker is None:
        del dataset.PatientIdentityRemoved
    else:
        dataset.PatientIdentityRemoved = marker
    with pytest.raises(auscat_rules.Refusal, match=r"PatientIdentityRemoved \(0012,0062\) is not YES") as refused:
        GATE.check(phantoms.part10(dataset))
    assert refused.value.sop_instance_uid == dataset.SOPInstanceUID


def test_identifying_attribute_is_refused_by_keyword_never_by_value(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.ct[0])
    dataset.PatientAddress = "12 Example Street, Sydney"
    with pytest.raises(auscat_rules.Refusal, match="identifying attribute PatientAddress is present") as refused:
        GATE.check(phantoms.part10(dataset))
    assert "Example Street" not in str(refused.value)


def test_identifying_attribute_inside_a_sequence_is_refused(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.rtstruct)
    item = Dataset()
    item.OtherPatientIDs = "MRN-0001"
    dataset.ReferencedPatientSequence = Sequence([item])
    with pytest.raises(auscat_rules.Refusal, match="identifying attribute OtherPatientIDs"):
        GATE.check(phantoms.part10(dataset))


def test_empty_identifying_attribute_passes(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.ct[0])
    dataset.PatientAddress = ""
    dataset.OtherPatientIDsSequence = Sequence()
    GATE.check(phantoms.part10(dataset))


def test_configured_list_replaces_the_default(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.ct[0])
    dataset.PatientBirthDate = "19700101"
    GATE.check(phantoms.part10(dataset))  # a date Annex E lets CTP replace: not in the default list
    rules = auscat_rules.Rules.from_config({"AusCAT": {"AnonymisationGate": True, "IdentifyingAttributes": [
        "PatientBirthDate"
    ]}})  # fmt: skip
    with pytest.raises(auscat_rules.Refusal, match="identifying attribute PatientBirthDate"):
        rules.check(phantoms.part10(dataset))


def test_gate_is_off_unless_configured(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.ct[0])
    del dataset.PatientIdentityRemoved
    auscat_rules.Rules.from_config({}).check(phantoms.part10(dataset))


def test_unknown_keyword_is_named() -> None:
    with pytest.raises(ValueError, match="not DICOM keywords: 'PatientAdress'"):
        auscat_anonymity.identifying_tags(["PatientAddress", "PatientAdress"])


def test_default_list_holds_only_dicom_keywords() -> None:
    tags = auscat_anonymity.identifying_tags(auscat_anonymity.DEFAULT_IDENTIFYING_ATTRIBUTES)
    assert len(tags) == len(auscat_anonymity.DEFAULT_IDENTIFYING_ATTRIBUTES)


@pytest.mark.parametrize("rules", [GATE, auscat_rules.Rules(), auscat_rules.Rules(integrity=False)])
def test_a_file_that_may_be_stored_gives_its_sop_instance_uid(study: phantoms.Study, rules: auscat_rules.Rules) -> None:
    dataset = study.datasets[0]
    assert rules.check(phantoms.part10(dataset)) == str(dataset.SOPInstanceUID)


def test_an_unreadable_file_with_no_rule_on_has_no_uid_and_is_not_refused() -> None:
    assert auscat_rules.Rules(integrity=False).check(b"not DICOM") == ""
