"""The phantom generator and the dataset comparison used by the probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from tests.harness import dicom, phantoms


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> phantoms.Study:
    study = phantoms.make_study(slices=20)
    phantoms.write_study(study, tmp_path_factory.mktemp("phantom"))
    return study


def test_study_has_twenty_ct_slices_and_one_rtstruct(study: phantoms.Study) -> None:
    modalities = [dcmread(path).Modality for path in study.paths]
    assert modalities.count("CT") == 20
    assert modalities.count("RTSTRUCT") == 1


def test_every_file_is_marked_de_identified(study: phantoms.Study) -> None:
    for path in study.paths:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientBirthDate == ""


def test_ct_slices_carry_real_pixel_data(study: phantoms.Study) -> None:
    ds = dcmread(study.paths[10])
    pixels = ds.pixel_array
    assert pixels.shape == (512, 512)
    assert pixels.min() < -900  # air
    assert pixels.max() > 0  # water and target
    assert len(np.unique(pixels)) > 100


def test_rtstruct_references_every_ct_slice(study: phantoms.Study) -> None:
    rtstruct = dcmread(study.paths[-1])
    series = rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == study.ct_series_uid
    referenced = {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence}
    assert referenced == {ds.SOPInstanceUID for ds in study.ct}
    assert [roi.ROIName for roi in rtstruct.StructureSetROISequence] == ["BODY", "GTV"]


def test_each_study_gets_fresh_uids() -> None:
    first, second = phantoms.make_study(slices=1), phantoms.make_study(slices=1)
    assert first.study_uid != second.study_uid
    assert first.patient_id != second.patient_id


def test_dataset_bytes_ignore_the_file_meta_group(study: phantoms.Study, tmp_path: Path) -> None:
    ds = dcmread(study.paths[0])
    original = study.paths[0].read_bytes()
    ds.file_meta.ImplementationVersionName = "OTHER_WRITER"
    rewritten = tmp_path / "rewritten.dcm"
    ds.save_as(rewritten, enforce_file_format=True)
    assert rewritten.read_bytes() != original
    assert dicom.dataset_bytes(rewritten.read_bytes()) == dicom.dataset_bytes(original)


def test_dataset_bytes_refuse_a_non_dicom_file() -> None:
    with pytest.raises(ValueError, match="DICM"):
        dicom.dataset_bytes(b"\0" * 200)
