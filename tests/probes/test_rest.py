"""What was sent over DICOM is visible and retrievable over the authenticated REST API."""

from __future__ import annotations

import io
import zipfile

import pyorthanc
from pydicom import dcmread

from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, assert_study_intact


def test_counts_at_each_level_match_what_was_sent(orthanc: Orthanc, stored_study: StoredStudy) -> None:
    patient = orthanc.patient_id_of(stored_study.study.patient_id)
    assert patient is not None
    studies = orthanc.get(f"/patients/{patient}/studies").json()
    series = orthanc.get(f"/patients/{patient}/series").json()
    instances = orthanc.get(f"/patients/{patient}/instances").json()
    assert (len(studies), len(series), len(instances)) == (1, 2, 21)
    counts = sorted(len(s["Instances"]) for s in series)
    assert counts == [1, 20]


def test_key_tags_are_indexed(orthanc: Orthanc, stored_study: StoredStudy) -> None:
    study = stored_study.study
    study_id = orthanc.lookup(study.study_uid, "Study")
    assert study_id is not None
    tags = orthanc.get(f"/studies/{study_id}").json()
    assert tags["MainDicomTags"]["StudyInstanceUID"] == study.study_uid
    assert tags["PatientMainDicomTags"]["PatientID"] == study.patient_id
    ct = orthanc.get(f"/series/{orthanc.lookup(study.ct_series_uid, 'Series')}").json()
    assert ct["MainDicomTags"]["Modality"] == "CT"
    assert ct["MainDicomTags"]["SeriesDescription"] == "Phantom CT"
    rt = orthanc.get(f"/series/{orthanc.lookup(study.rtstruct_series_uid, 'Series')}").json()
    assert rt["MainDicomTags"]["Modality"] == "RTSTRUCT"


def test_every_instance_is_byte_identical_to_the_file_sent(orthanc: Orthanc, stored_study: StoredStudy) -> None:
    assert_study_intact(orthanc, stored_study)


def test_rtstruct_references_the_stored_ct_series(orthanc: Orthanc, stored_study: StoredStudy) -> None:
    rtstruct_uid = stored_study.study.rtstruct.SOPInstanceUID
    ds = dcmread(io.BytesIO(orthanc.get(f"/instances/{orthanc.lookup(rtstruct_uid, 'Instance')}/file").content))
    referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == stored_study.study.ct_series_uid
    for image in referenced.ContourImageSequence:
        assert orthanc.lookup(image.ReferencedSOPInstanceUID, "Instance") is not None


def test_rest_only_client_finds_and_downloads_the_series(target: Target, stored_study: StoredStudy) -> None:
    client = pyorthanc.Orthanc(
        target.url, username=target.username, password=target.password, verify=target.ssl_context()
    )
    found = pyorthanc.find_series(client, query={"SeriesInstanceUID": stored_study.study.ct_series_uid})
    assert len(found) == 1
    archive = zipfile.ZipFile(io.BytesIO(found[0].get_zip()))
    dicom_files = [name for name in archive.namelist() if not name.endswith("/")]
    assert len(dicom_files) == 20
    sop_uids = {str(dcmread(io.BytesIO(archive.read(name))).SOPInstanceUID) for name in dicom_files}
    assert sop_uids == {str(ds.SOPInstanceUID) for ds in stored_study.study.ct}
