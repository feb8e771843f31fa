"""Structural checks an instance must pass before Orthanc stores it.

Orthanc's parser accepts files whose attributes contradict their pixel data (say
Rows = Columns = 65535 over 512 x 512 pixels): they are stored, acknowledged, and
fail later in every viewer and pipeline. These checks refuse them at the door.
Each check returns the name of the rule an instance breaks, or None.
"""

from __future__ import annotations

import struct
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

# Values longer than this are read only when a check needs them.
DEFER_BYTES = 1024
BITS_ALLOCATED = (1, 8, 16, 32, 64)
PIXEL_REPRESENTATIONS = (0, 1)
PREAMBLE = 128
META_START = PREAMBLE + 4
META_LONG_VRS = (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR")

# Standard transfer syntaxes (PS3.5 Annex A, PS3.6 Table A-1): a file declaring another cannot be read.
TRANSFER_SYNTAXES = frozenset(
    "1.2.840.10008.1.2" + suffix
    for suffix in (
        "", ".1", ".1.99", ".2", ".5",
        *(f".4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93, 94, 95, 100, 101, 102, 103, 104, 105, 106,
                              107, 108, 110, 111, 112, 201, 202, 203)),
    )
)  # fmt: skip

# Attributes of type 1 (required, non-empty) in every composite instance (SOP Common, General Study,
# General Series modules), and in the SOP classes AusCAT stores whose content is not pixel data.
REQUIRED_ALWAYS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
REQUIRED_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.481.3": (  # RT Structure Set
        "StructureSetLabel",
        "StructureSetROISequence",
        "ROIContourSequence",
        "RTROIObservationsSequence",
    ),
    "1.2.840.10008.5.1.4.1.1.481.5": ("RTPlanLabel",),  # RT Plan
}
# Image storage SOP classes whose instances cannot exist without pixel data.
IMAGE_SOP_CLASSES = frozenset(
    (
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.128",  # PET Image
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose (dose grid)
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    )
)
IMAGE_PIXEL_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated")


class Refusal(Exception):
    """An instance that must not be stored, with the rule it breaks (never its values)."""

    def __init__(self, rule: str, sop_instance_uid: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.sop_instance_uid = sop_instance_uid


def check_file_meta(data: bytes) -> None:
    """The file meta group must be exactly as long as it says, and only group 0002."""
    if data[PREAMBLE:META_START] != b"DICM":
        raise Refusal("no DICM prefix: not a DICOM Part 10 file")
    header = data[META_START : META_START + 12]
    if len(header) < 12 or header[:6] != b"\x02\x00\x00\x00UL":
        raise Refusal("file meta group does not start with its group length")
    end = META_START + 12 + struct.unpack_from("<I", header, 8)[0]
    offset = META_START + 12
    while offset < end:
        element = data[offset : offset + 12]
        if len(element) < 8 or element[:2] != b"\x02\x00":
            raise Refusal("file meta group length does not match its elements")
        if element[4:6] in META_LONG_VRS:
            offset += 12 + struct.unpack_from("<I", element, 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", element, 6)[0]
    if offset != end:
        raise Refusal("file meta group length does not match its elements")
    if data[end : end + 2] == b"\x02\x00":
        raise Refusal("group 0002 repeated after the file meta group")


def read(data: bytes) -> pydicom.Dataset:
    """Parse a DICOM Part 10 file without loading large values."""
    try:
        return pydicom.dcmread(BytesIO(data), defer_size=DEFER_BYTES)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as error:
        raise Refusal(f"unreadable DICOM file ({type(error).__name__})") from None


def sop_instance_uid(data: bytes) -> str:
    """The SOPInstanceUID of a Part 10 file, read up to that attribute only; "" when it cannot be read."""
    try:
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError):
        return ""
    return str(dataset.get("SOPInstanceUID", ""))


def _positive_int(dataset: pydicom.Dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Refusal(f"{keyword} is missing or not a number") from None
    if number <= 0:
        raise Refusal(f"{keyword} must be positive")
    return number


def expected_pixel_bytes(dataset: pydicom.Dataset) -> int:
    """Length of native (uncompressed) PixelData implied by the image pixel module."""
    rows = _positive_int(dataset, "Rows")
    columns = _positive_int(dataset, "Columns")
    samples = _positive_int(dataset, "SamplesPerPixel", 1)
    frames = _positive_int(dataset, "NumberOfFrames", 1)
    bits = _positive_int(dataset, "BitsAllocated")
    if bits not in BITS_ALLOCATED:
        raise Refusal(f"BitsAllocated must be one of {BITS_ALLOCATED}")
    pixels = rows * columns * samples * frames
    return (pixels + 7) // 8 if bits == 1 else pixels * bits // 8


def check_header(dataset: pydicom.Dataset) -> None:
    """Transfer syntax known, meta and dataset agree, required attributes present and non-empty."""
    meta = dataset.file_meta
    if str(meta.get("TransferSyntaxUID", "")) not in TRANSFER_SYNTAXES:
        raise Refusal("TransferSyntaxUID is missing or not a standard transfer syntax")
    sop_class = str(dataset.get("SOPClassUID", ""))
    for keyword in (*REQUIRED_ALWAYS, *REQUIRED_BY_SOP_CLASS.get(sop_class, ())):
        if keyword not in dataset or dataset[keyword].is_empty:
            raise Refusal(f"{keyword} is missing or empty")
    if str(meta.get("MediaStorageSOPInstanceUID", "")) != str(dataset.SOPInstanceUID):
        raise Refusal("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    if str(meta.get("MediaStorageSOPClassUID", "")) != sop_class:
        raise Refusal("MediaStorageSOPClassUID differs from SOPClassUID")


def check_pixel_module(dataset: pydicom.Dataset) -> None:
    """Bits, sign and high bit as PS3.3 C.7.6.3 allows them."""
    allocated = _positive_int(dataset, "BitsAllocated")
    stored = _positive_int(dataset, "BitsStored", allocated)
    if stored > allocated:
        raise Refusal("BitsStored exceeds BitsAllocated")
    high_bit = dataset.get("HighBit", stored - 1)
    if high_bit != stored - 1:
        raise Refusal("HighBit must be BitsStored - 1")
    if dataset.get("PixelRepresentation", 0) not in PIXEL_REPRESENTATIONS:
        raise Refusal("PixelRepresentation must be 0 or 1")


def check_pixel_data(dataset: pydicom.Dataset) -> None:
    """Native PixelData must be exactly as long as Rows x Columns x samples x frames x bits say."""
    if "PixelData" not in dataset:
        if str(dataset.get("SOPClassUID", "")) in IMAGE_SOP_CLASSES:
            raise Refusal("PixelData is missing from an image")
        if any(keyword in dataset for keyword in IMAGE_PIXEL_ATTRIBUTES):
            raise Refusal("image pixel attributes without PixelData")
        return
    element = dataset["PixelData"]
    if element.is_undefined_length:  # encapsulated (compressed): the codec checks the frames
        _positive_int(dataset, "Rows")
        _positive_int(dataset, "Columns")
        check_pixel_module(dataset)
        return
    expected = expected_pixel_bytes(dataset)
    length = len(element.value or b"")
    if length not in (expected, expected + 1):  # one byte of padding keeps the length even
        raise Refusal("PixelData length does not match Rows, Columns, SamplesPerPixel, NumberOfFrames, BitsAllocated")
    check_pixel_module(dataset)


def check(data: bytes) -> pydicom.Dataset:
    """Raise Refusal when the file must not be stored; returns the parsed dataset otherwise."""
    check_file_meta(data)
    dataset = read(data)
    uid = str(dataset.get("SOPInstanceUID", ""))
    try:
        check_header(dataset)
        check_pixel_data(dataset)
    except Refusal as refusal:
        refusal.sop_instance_uid = uid
        raise
    return dataset
