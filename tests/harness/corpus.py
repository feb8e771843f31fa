"""Broken DICOM files derived from the phantoms, for the malformed-input attack.

Every case is a whole DICOM Part 10 file (or what is left of one) and a note of
the routes it can travel: REST and DICOMweb STOW take any bytes; C-STORE needs
a readable file meta group to choose a presentation context, so a case whose
meta group is broken is sent over HTTP only.

    python -m tests.harness.corpus OUTPUT_DIR   writes the corpus, one file per case
"""

from __future__ import annotations

import argparse
import copy
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from tests.harness import phantoms

HTTP_ONLY = ("rest", "stow")
ALL_ROUTES = ("cstore", "rest", "stow")
PREAMBLE = 128
SEED = 20261127


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    data: bytes
    routes: tuple[str, ...]


def meta_end(data: bytes) -> int:
    """Offset of the first byte after the file meta group."""
    group_length = struct.unpack_from("<I", data, PREAMBLE + 12)[0]
    return PREAMBLE + 16 + group_length


def _element_offset(data: bytes, keyword_tag: int, start: int) -> int:
    """Offset of an explicit-VR little-endian element header (first match after start)."""
    tag = Tag(keyword_tag)
    offset = data.find(struct.pack("<HH", tag.group, tag.element), start)
    if offset < 0:
        raise ValueError(f"tag {tag} not found")
    return offset


LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def with_length(data: bytes, tag: int, new_length: int, start: int) -> bytes:
    """The file with one element's declared value length replaced (the value bytes unchanged)."""
    offset = _element_offset(data, tag, start)
    vr = data[offset + 4 : offset + 6]
    buffer = bytearray(data)
    if vr in LONG_VRS:
        struct.pack_into("<I", buffer, offset + 8, new_length & 0xFFFFFFFF)
    else:
        struct.pack_into("<H", buffer, offset + 6, new_length & 0xFFFF)
    return bytes(buffer)


def _declared_length(data: bytes, tag: int, start: int) -> int:
    offset = _element_offset(data, tag, start)
    if data[offset + 4 : offset + 6] in LONG_VRS:
        return struct.unpack_from("<I", data, offset + 8)[0]
    return struct.unpack_from("<H", data, offset + 6)[0]


def _truncated(ct: bytes, rtstruct: bytes, rng: random.Random) -> list[Case]:
    cases = []
    for source, label, count in ((ct, "ct", 40), (rtstruct, "rtstruct", 20)):
        body = meta_end(source)
        cuts = [
            *sorted(rng.sample(range(1, len(source) - 1), count - 4)),
            PREAMBLE + 2,
            PREAMBLE + 40,
            body + 3,
            body + 64,
        ]
        for cut in cuts:
            routes = ALL_ROUTES if cut > body else HTTP_ONLY
            cases.append(Case(f"truncated-{label}-at-{cut}", "truncated", source[:cut], routes))
    return cases


WRONG_LENGTH_TAGS = {
    "PatientName": 0x00100010,
    "StudyInstanceUID": 0x0020000D,
    "SOPInstanceUID": 0x00080018,
    "Modality": 0x00080060,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "PixelSpacing": 0x00280030,
    "ImagePositionPatient": 0x00200032,
    "PixelData": 0x7FE00010,
}


def _wrong_lengths(ct: bytes) -> list[Case]:
    body = meta_end(ct)
    cases = []
    for keyword, tag in WRONG_LENGTH_TAGS.items():
        declared = _declared_length(ct, tag, body)
        for label, length in (
            ("plus-1", declared + 1),
            ("plus-6", declared + 6),
            ("minus-2", max(declared - 2, 1)),
            ("huge", 0xFFFFFFF0 if keyword == "PixelData" else 0xFFF0),
        ):
            cases.append(
                Case(f"length-{keyword}-{label}", "wrong length", with_length(ct, tag, length, body), ALL_ROUTES)
            )
    return cases


def _bad_meta(ct: bytes) -> list[Case]:
    body = meta_end(ct)
    group_length_at = PREAMBLE + 12
    syntax_at = ct.find(b"1.2.840.10008.1.2.1", PREAMBLE)

    def patched(offset: int, replacement: bytes) -> bytes:
        return ct[:offset] + replacement + ct[offset + len(replacement) :]

    def group_length(value: int) -> bytes:
        return patched(group_length_at, struct.pack("<I", value))

    variants = {
        "no-dicm-prefix": patched(PREAMBLE, b"DICN"),
        "zeroed-prefix": patched(PREAMBLE, b"\0\0\0\0"),
        "group-length-zero": group_length(0),
        "group-length-short": group_length(body - PREAMBLE - 16 - 10),
        "group-length-long": group_length(body - PREAMBLE - 16 + 10),
        "group-length-huge": group_length(0xFFFFFFF0),
        "unknown-transfer-syntax": patched(syntax_at, b"1.2.840.10008.9.9.9"),
        "deflate-syntax-on-plain-data": patched(syntax_at, b"1.2.840.10008.1.2.1.99"),
        "big-endian-syntax-on-little-data": patched(syntax_at, b"1.2.840.10008.1.2.2\0"),
        "meta-only": ct[:body],
        "preamble-only": ct[:PREAMBLE],
        "prefix-only": ct[: PREAMBLE + 4],
        "meta-tag-garbled": patched(PREAMBLE + 4, b"\x02\x01"),
        "meta-vr-garbled": patched(PREAMBLE + 8, b"ZZ"),
        "dataset-without-preamble": ct[PREAMBLE + 4 :],
        "meta-group-repeated": ct[:body] + ct[PREAMBLE + 4 : body] + ct[body:],
        "two-files-concatenated": ct + ct,
        "meta-with-random-tail": ct[:body] + bytes(range(256)) * 4,
        "utf16-text": "DICM not really".encode("utf-16"),
        "html-error-page": b"<html><body>502 Bad Gateway</body></html>",
    }
    return [Case(f"meta-{name}", "bad meta header", data, HTTP_ONLY) for name, data in variants.items()]


def _absurd(source: Dataset) -> list[Case]:
    changes: list[tuple[str, Callable[[Dataset], None]]] = []
    for keyword, values in (
        ("Rows", (0, 1, 511, 513, 65535)),
        ("Columns", (0, 1, 1024, 65535)),
        ("NumberOfFrames", (0, 2, 1000, 2147483647)),
        ("BitsAllocated", (0, 1, 7, 12, 32, 255)),
        ("SamplesPerPixel", (0, 3, 255)),
        ("BitsStored", (17, 255)),
        ("HighBit", (16, 200)),
        ("PixelRepresentation", (2, 255)),
    ):
        for value in values:
            changes.append((f"{keyword}-{value}", lambda ds, k=keyword, v=value: setattr(ds, k, v)))
    changes.append(("no-pixel-data", lambda ds: delattr(ds, "PixelData")))
    changes.append(("empty-pixel-data", lambda ds: setattr(ds, "PixelData", b"")))
    changes.append(("pixel-data-one-row", lambda ds: setattr(ds, "PixelData", ds.PixelData[: 512 * 2])))
    changes.append(("pixel-data-doubled", lambda ds: setattr(ds, "PixelData", ds.PixelData * 2)))
    cases = []
    for name, change in changes:
        dataset = copy.deepcopy(source)
        change(dataset)
        cases.append(Case(f"absurd-{name}", "absurd dimensions", phantoms.part10(dataset), ALL_ROUTES))
    # Values pydicom refuses to write: encode a valid one, then overwrite its bytes.
    framed = copy.deepcopy(source)
    framed.NumberOfFrames = 99
    data = phantoms.part10(framed)
    value_at = _element_offset(data, 0x00280008, meta_end(data)) + 8
    for text in (b"-1", b"ab", b"1\\"):
        patched = data[:value_at] + text + data[value_at + 2 :]
        cases.append(Case(f"absurd-NumberOfFrames-{text.hex()}", "absurd dimensions", patched, ALL_ROUTES))
    return cases


def _random(ct: bytes, rng: random.Random) -> list[Case]:
    body = meta_end(ct)
    cases = []
    for index in range(25):
        size = rng.choice((1, 16, 132, 1024, 65536, 600_000))
        cases.append(Case(f"random-{index}-{size}-bytes", "random bytes", rng.randbytes(size), HTTP_ONLY))
    for index in range(25):
        size = rng.choice((2, 64, 4096, 500_000))
        # A readable meta group followed by noise: this one can travel over C-STORE too.
        cases.append(
            Case(f"random-dataset-{index}-{size}-bytes", "random bytes", ct[:body] + rng.randbytes(size), ALL_ROUTES)
        )
    return cases


def build(study: phantoms.Study | None = None) -> list[Case]:
    """The whole corpus, the same for the same phantom (the randomness is seeded)."""
    study = study or phantoms.make_study(slices=1)
    ct, rtstruct = study.ct[0], study.rtstruct
    assert rtstruct is not None
    ct_bytes, rtstruct_bytes = phantoms.part10(ct), phantoms.part10(rtstruct)
    rng = random.Random(SEED)  # noqa: S311 - reproducible noise, not cryptography
    return [
        *_truncated(ct_bytes, rtstruct_bytes, rng),
        *_wrong_lengths(ct_bytes),
        *_bad_meta(ct_bytes),
        *_absurd(ct),
        *_random(ct_bytes, rng),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    cases = build()
    for case in cases:
        (args.output / f"{case.name}.dcm").write_bytes(case.data)
    print(f"{len(cases)} cases written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
