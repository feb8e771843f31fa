"""The anonymisation gate: only de-identified instances may be stored.

AusCAT stores research copies that CTP has de-identified. An instance is refused when
it is not marked de-identified (PatientIdentityRemoved (0012,0062) must be YES, as
CTP's anonymizer sets it) or when it carries a non-empty attribute from a list of
identifying attributes, at any depth of its sequences. A refusal names the rule and the
attribute's keyword, never its value.

The default list holds the attributes that DICOM PS3.15 Annex E (Basic Application Level
Confidentiality Profile, Table E.1-1) says to remove (action X) and that describe a
person. Attributes Annex E lets a de-identifier replace by a dummy value (PatientName,
PatientID, PatientBirthDate, ...) cannot be judged by their presence and are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable

import pydicom
from auscat_integrity import Refusal
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag

DEFAULT_IDENTIFYING_ATTRIBUTES = (
    "AdditionalPatientHistory",
    "Allergies",
    "BranchOfService",
    "CountryOfResidence",
    "EthnicGroup",
    "InstitutionAddress",
    "IssuerOfPatientID",
    "MedicalAlerts",
    "MedicalRecordLocator",
    "MilitaryRank",
    "NameOfPhysiciansReadingStudy",
    "Occupation",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientBirthName",
    "PatientBirthTime",
    "PatientComments",
    "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName",
    "PatientReligiousPreference",
    "PatientTelecomInformation",
    "PatientTelephoneNumbers",
    "PerformingPhysicianName",
    "PersonAddress",
    "PersonTelephoneNumbers",
    "PhysiciansOfRecord",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence",
    "RequestingPhysician",
    "ResponsibleOrganization",
    "ResponsiblePerson",
)
MARKER = "PatientIdentityRemoved"
MARKED = "YES"


def identifying_tags(keywords: Iterable[str]) -> dict[BaseTag, str]:
    """Tags of the given DICOM keywords; ValueError names any keyword DICOM does not define."""
    tags: dict[BaseTag, str] = {}
    unknown = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword) if isinstance(keyword, str) else None
        if tag is None:
            unknown.append(repr(keyword))
        else:
            tags[BaseTag(tag)] = keyword
    if unknown:
        raise ValueError(f"not DICOM keywords: {', '.join(unknown)}")
    return tags


def _is_sequence(dataset: pydicom.Dataset, tag: BaseTag) -> bool:
    raw_vr = getattr(dataset.get_item(tag), "VR", None)
    if raw_vr is not None:
        return raw_vr == "SQ"
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown attribute read with implicit VR
        return False


def find_identifying(dataset: pydicom.Dataset, tags: dict[BaseTag, str]) -> str | None:
    """Keyword of the first non-empty identifying attribute, searching nested sequences; None if clean.

    Only identifying attributes and sequences are decoded, so pixel data is never read."""
    for tag in list(dataset.keys()):
        if tag in tags and not dataset[tag].is_empty:
            return tags[tag]
        if _is_sequence(dataset, tag):
            for item in dataset[tag].value or ():
                found = find_identifying(item, tags)
                if found:
                    return found
    return None


def check(dataset: pydicom.Dataset, tags: dict[BaseTag, str]) -> None:
    """Raise Refusal when the instance is not marked de-identified or still identifies a person."""
    uid = str(dataset.get("SOPInstanceUID", ""))
    if str(dataset.get(MARKER, "")).strip().upper() != MARKED:
        raise Refusal(f"{MARKER} (0012,0062) is not YES: not marked de-identified", uid)
    found = find_identifying(dataset, tags)
    if found:
        raise Refusal(f"identifying attribute {found} is present", uid)
