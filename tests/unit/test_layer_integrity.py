"""The image layer's structural checks, on phantoms and on broken copies of them."""

from __future__ import annotations

import copy

import auscat_integrity
import pytest

from tests.harness import phantoms


@pytest.fixture(scope="module")
def study() -> phantoms.Study:
    return phantoms.make_study(slices=2)


def test_phantoms_pass(study: phantoms.Study) -> None:
    for dataset in study.datasets:
        auscat_integrity.check(phantoms.part10(dataset))


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"Rows": 65535, "Columns": 65535}, "PixelData length does not match"),
        ({"NumberOfFrames": 1000}, "PixelData length does not match"),
        ({"BitsAllocated": 12}, "BitsAllocated must be one of"),
        ({"Rows": 0}, "Rows must be positive"),
        ({"SamplesPerPixel": 3}, "PixelData length does not match"),
    ],
)
def test_pixel_attributes_that_contradict_pixel_data_are_refused(
    study: phantoms.Study, change: dict, rule: str
) -> None:
    dataset = copy.deepcopy(study.datasets[0])
    for keyword, value in change.items():
        setattr(dataset, keyword, value)
    with pytest.raises(auscat_integrity.Refusal, match=rule) as refused:
        auscat_integrity.check(phantoms.part10(dataset))
    assert refused.value.sop_instance_uid == dataset.SOPInstanceUID


def test_missing_rows_is_refused(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.datasets[0])
    del dataset.Rows
    with pytest.raises(auscat_integrity.Refusal, match="Rows is missing"):
        auscat_integrity.check(phantoms.part10(dataset))


def test_truncated_pixel_data_is_refused(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.datasets[0])
    dataset.PixelData = dataset.PixelData[:1000]
    with pytest.raises(auscat_integrity.Refusal, match="PixelData length"):
        auscat_integrity.check(phantoms.part10(dataset))


def test_missing_sop_instance_uid_is_refused(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.datasets[0])
    del dataset.SOPInstanceUID
    with pytest.raises(auscat_integrity.Refusal, match="SOPInstanceUID is missing or empty"):
        auscat_integrity.check(phantoms.part10(dataset))


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"\0" * 128 + b"DICM" + b"\xff" * 64])
def test_bytes_that_are_no_instance_are_refused(data: bytes) -> None:
    with pytest.raises(auscat_integrity.Refusal):
        auscat_integrity.check(data)


def test_refusal_names_the_rule_never_attribute_values(study: phantoms.Study) -> None:
    dataset = copy.deepcopy(study.datasets[0])
    dataset.Rows = 4099
    with pytest.raises(auscat_integrity.Refusal) as refused:
        auscat_integrity.check(phantoms.part10(dataset))
    assert "4099" not in str(refused.value)
    assert str(dataset.PatientID) not in str(refused.value)
