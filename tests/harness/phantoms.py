"""Synthetic, de-identified DICOM phantoms: a CT series and an RTSTRUCT that references it.

Every file says it carries no identity (PatientIdentityRemoved YES, as CTP's
anonymiser sets it) and uses fresh UIDs, so repeated runs never collide.

    python -m tests.harness.phantoms OUTPUT_DIR [--slices 20]
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    generate_uid,
)

ROWS = COLUMNS = 512
PIXEL_SPACING_MM = 0.976
SLICE_THICKNESS_MM = 2.5
BODY_RADIUS_MM = 150.0
TARGET_RADIUS_MM = 30.0


@dataclass
class Study:
    """One phantom study: what was generated and where it was written."""

    patient_id: str
    study_uid: str
    ct_series_uid: str
    rtstruct_series_uid: str
    frame_of_reference_uid: str
    ct: list[Dataset] = field(default_factory=list)
    rtstruct: Dataset | None = None
    paths: list[Path] = field(default_factory=list)

    @property
    def datasets(self) -> list[Dataset]:
        return [*self.ct, *([self.rtstruct] if self.rtstruct is not None else [])]


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common(study: Study, sop_class: str, modality: str, series_uid: str, series_number: int) -> Dataset:
    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.SpecificCharacterSet = "ISO_IR 100"
    today = datetime.date.today().strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = modality
    ds.Manufacturer = "AusCAT phantom"
    ds.PatientName = "PHANTOM^" + study.patient_id
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "AusCAT synthetic phantom: no patient data"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "AusCAT phantom"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    return ds


def _ct_pixels(z_mm: float) -> np.ndarray:
    """A water cylinder (0 HU) in air (-1000 HU) with a denser target (+60 HU) near its centre."""
    half = (ROWS - 1) / 2
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    r_mm = np.hypot(x - half, y - half) * PIXEL_SPACING_MM
    image = np.full((ROWS, COLUMNS), -1000, dtype=np.int16)
    image[r_mm <= BODY_RADIUS_MM] = 0
    if abs(z_mm) <= TARGET_RADIUS_MM:
        image[r_mm <= TARGET_RADIUS_MM] = 60
    rng = np.random.default_rng(int(z_mm * 10) & 0xFFFF)
    noise = rng.normal(0, 8, size=image.shape).astype(np.int16)
    return (image + noise).astype(np.int16)


def _ct_slice(study: Study, index: int, count: int) -> Dataset:
    ds = _common(study, CTImageStorage, "CT", study.ct_series_uid, 1)
    ds.SeriesDescription = "Phantom CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    z_mm = (index - (count - 1) / 2) * SLICE_THICKNESS_MM
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-(COLUMNS - 1) / 2 * PIXEL_SPACING_MM, -(ROWS - 1) / 2 * PIXEL_SPACING_MM, z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z_mm
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.PositionReferenceIndicator = ""
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = _ct_pixels(z_mm).tobytes()
    return ds


def _circle_contour(z_mm: float, radius_mm: float, points: int = 32) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    coordinates = np.column_stack([radius_mm * np.cos(angles), radius_mm * np.sin(angles), np.full(points, z_mm)])
    return [round(float(value), 2) for value in coordinates.ravel()]


def _rtstruct(study: Study) -> Dataset:
    ds = _common(study, RTStructureSetStorage, "RTSTRUCT", study.rtstruct_series_uid, 2)
    ds.SeriesDescription = "Phantom structures"
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "PHANTOM"
    ds.StructureSetDate, ds.StructureSetTime = ds.StudyDate, ds.StudyTime

    contour_images = []
    for ct in study.ct:
        item = Dataset()
        item.ReferencedSOPClassUID = ct.SOPClassUID
        item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        contour_images.append(item)
    series = Dataset()
    series.SeriesInstanceUID = study.ct_series_uid
    series.ContourImageSequence = Sequence(contour_images)
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    referenced_study.ReferencedSOPInstanceUID = study.study_uid
    referenced_study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = study.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([referenced_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    rois, contours, observations = [], [], []
    for number, (name, radius) in enumerate((("BODY", BODY_RADIUS_MM), ("GTV", TARGET_RADIUS_MM)), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = study.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)

        slices = []
        for ct in study.ct:
            z_mm = float(ct.ImagePositionPatient[2])
            if name == "GTV" and abs(z_mm) > TARGET_RADIUS_MM:
                continue
            image = Dataset()
            image.ReferencedSOPClassUID = ct.SOPClassUID
            image.ReferencedSOPInstanceUID = ct.SOPInstanceUID
            contour = Dataset()
            contour.ContourImageSequence = Sequence([image])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.ContourData = _circle_contour(z_mm, radius)
            contour.NumberOfContourPoints = len(contour.ContourData) // 3
            slices.append(contour)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [255, 0, 0] if name == "GTV" else [0, 255, 0]
        roi_contour.ContourSequence = Sequence(slices)
        contours.append(roi_contour)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "EXTERNAL" if name == "BODY" else "GTV"
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    return ds


def make_study(slices: int = 20, patient_id: str | None = None) -> Study:
    """Generate a phantom study in memory."""
    if slices < 1:
        raise ValueError(f"slices must be at least 1, not {slices}")
    study = Study(
        patient_id=patient_id or "AUSCAT-PHANTOM-" + generate_uid()[-8:].replace(".", ""),
        study_uid=generate_uid(),
        ct_series_uid=generate_uid(),
        rtstruct_series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
    )
    study.ct = [_ct_slice(study, index, slices) for index in range(slices)]
    study.rtstruct = _rtstruct(study)
    return study


def part10(dataset: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file, in memory."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_study(study: Study, directory: Path) -> list[Path]:
    """Write every dataset as a DICOM Part 10 file named after its SOPInstanceUID."""
    directory.mkdir(parents=True, exist_ok=True)
    study.paths = []
    for ds in study.datasets:
        path = directory / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        study.paths.append(path)
    return study.paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic de-identified CT + RTSTRUCT phantom study.")
    parser.add_argument("output", type=Path, help="directory to write the DICOM files to")
    parser.add_argument("--slices", type=int, default=20, help="number of CT slices (default 20)")
    parser.add_argument("--patient-id", help="PatientID to use (default: a fresh AUSCAT-PHANTOM-... id)")
    args = parser.parse_args(argv)
    study = make_study(args.slices, args.patient_id)
    paths = write_study(study, args.output)
    print(f"wrote {len(paths)} files for PatientID {study.patient_id} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
