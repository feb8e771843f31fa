"""Structural checks an instance must pass before Orthanc stores it.

Orthanc's parser accepts files whose attributes contradict their pixel data (say
Rows = Columns = 65535 over 512 x 512 pixels): they are stored, acknowledged, and
fail later in every viewer and pipeline. These checks refuse them at the door.
Each check returns the name of the rule an instance breaks, or None.
"""

from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

# Values longer than this are read only when a check needs them.
DEFER_BYTES = 1024
BITS_ALLOCATED = (1, 8, 16, 32, 64)


class Refusal(Exception):
    """An instance that must not be stored, with the rule it breaks (never its values)."""

    def __init__(self, rule: str, sop_instance_uid: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.sop_instance_uid = sop_instance_uid


def read(data: bytes) -> pydicom.Dataset:
    """Parse a DICOM Part 10 file without loading large values."""
    try:
        return pydicom.dcmread(BytesIO(data), defer_size=DEFER_BYTES)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as error:
        raise Refusal(f"unreadable DICOM file ({type(error).__name__})") from None


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


def check_pixel_data(dataset: pydicom.Dataset) -> None:
    """Native PixelData must be exactly as long as Rows x Columns x samples x frames x bits say."""
    if "PixelData" not in dataset:
        return
    element = dataset["PixelData"]
    if element.is_undefined_length:  # encapsulated (compressed): the codec checks the frames
        _positive_int(dataset, "Rows")
        _positive_int(dataset, "Columns")
        return
    expected = expected_pixel_bytes(dataset)
    length = len(element.value or b"")
    if length not in (expected, expected + 1):  # one byte of padding keeps the length even
        raise Refusal("PixelData length does not match Rows, Columns, SamplesPerPixel, NumberOfFrames, BitsAllocated")


def check(data: bytes) -> None:
    """Raise Refusal when the file must not be stored."""
    dataset = read(data)
    uid = str(dataset.get("SOPInstanceUID", ""))
    try:
        if not uid:
            raise Refusal("SOPInstanceUID is missing")
        check_pixel_data(dataset)
    except Refusal as refusal:
        refusal.sop_instance_uid = uid
        raise
