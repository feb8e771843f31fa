"""Benchmark payloads: DICOM Part 10 bytes encoded once, re-stamped with fresh identifiers per use.

Orthanc skips an instance whose SOPInstanceUID it already stores, which would make a
repeated run look fast, so every instance sent carries new UIDs. Encoding a 0.5 MB
slice with pydicom costs milliseconds; instead each dataset is encoded once with
placeholder values of a fixed length, and a fresh instance is a byte replacement of
those placeholders by values of the same length (group and element lengths stay valid).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from tests.harness import phantoms

# pydicom's UID root, which generate_uid() also uses for synthetic data.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
TOKEN_DIGITS = 10
NUMBER_DIGITS = 12
PLACEHOLDER_TOKEN = "1" * TOKEN_DIGITS
KINDS = {"study": 1, "series": 2, "instance": 3, "frame": 4}
FIELDS = ("patient", "name", *KINDS)
SMALL_SIZE = 64


def new_token() -> str:
    """A random run token of TOKEN_DIGITS digits that never equals the placeholder's."""
    return str(2 * 10 ** (TOKEN_DIGITS - 1) + secrets.randbelow(8 * 10 ** (TOKEN_DIGITS - 1)))


def uid(token: str, kind: str, number: int) -> str:
    """A UID of fixed length: root, run token, then the kind's digit and a zero-padded number."""
    return f"{UID_ROOT}{token}.{KINDS[kind]}{number:0{NUMBER_DIGITS}d}"


def patient_id(token: str, number: int) -> str:
    return f"BENCH-{token}-{number:07d}"


def identity(token: str, patient: int, study: int, series: int, instance: int) -> dict[str, str]:
    """Every stamped value of one instance; all have the placeholders' lengths."""
    return {
        "patient": patient_id(token, patient),
        "name": f"BENCH^{token}-{patient:07d}",
        "study": uid(token, "study", study),
        "series": uid(token, "series", series),
        "instance": uid(token, "instance", instance),
        "frame": uid(token, "frame", study),
    }


PLACEHOLDERS = identity(PLACEHOLDER_TOKEN, 0, 0, 0, 0)


def make_template(dataset: Dataset) -> bytes:
    """Encode a copy of ``dataset`` with the placeholder identity; raises if one would not be found."""
    ds = dataset.copy()
    ds.file_meta = dataset.file_meta.copy()
    ds.PatientID = PLACEHOLDERS["patient"]
    ds.PatientName = PLACEHOLDERS["name"]
    ds.StudyInstanceUID = PLACEHOLDERS["study"]
    ds.SeriesInstanceUID = PLACEHOLDERS["series"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = PLACEHOLDERS["instance"]
    ds.FrameOfReferenceUID = PLACEHOLDERS["frame"]
    data = phantoms.part10(ds)
    missing = [name for name, value in PLACEHOLDERS.items() if value.encode() not in data]
    if missing:
        raise ValueError(f"template lacks the placeholders of {', '.join(missing)}")
    return data


def stamp(template: bytes, values: Mapping[str, str]) -> bytes:
    """The template with every placeholder replaced by the value of the same field."""
    data = template
    for name in FIELDS:
        placeholder, value = PLACEHOLDERS[name], values[name]
        if len(value) != len(placeholder):
            raise ValueError(f"{name} {value!r} is not {len(placeholder)} characters long like its placeholder")
        data = data.replace(placeholder.encode(), value.encode())
    return data


def ct_templates(count: int) -> list[bytes]:
    """``count`` encoded 512 x 512 16-bit CT slices of the harness phantom (about 0.5 MB each)."""
    study = phantoms.make_study(slices=count)
    return [make_template(ds) for ds in study.ct]


def small_template() -> bytes:
    """A 64 x 64 16-bit CT slice of a few KB, for growing an archive to many instances."""
    ds = phantoms.make_study(slices=1).ct[0]
    step = phantoms.ROWS // SMALL_SIZE
    pixels = np.frombuffer(ds.PixelData, dtype=np.int16).reshape(phantoms.ROWS, phantoms.COLUMNS)
    ds.Rows = ds.Columns = SMALL_SIZE
    ds.PixelSpacing = [phantoms.PIXEL_SPACING_MM * step] * 2
    ds.PixelData = np.ascontiguousarray(pixels[::step, ::step]).tobytes()
    return make_template(ds)


@dataclass
class Part:
    """What one association (or REST connection) sends: one patient's study, one series."""

    patient_id: str
    study_uid: str
    instances: list[bytes] = field(default_factory=list)


@dataclass
class Batch:
    """One run's instances, one part per association: parallel senders, each with its own study.

    Several associations writing into one study make the PostgreSQL index serialise
    (conflicting transactions are retried); different studies per sender is the usual case.
    """

    parts: list[Part] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(len(part.instances) for part in self.parts)

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.all())

    @property
    def study_uids(self) -> list[str]:
        return [part.study_uid for part in self.parts]

    def all(self) -> Iterator[bytes]:
        for part in self.parts:
            yield from part.instances


class Stamper:
    """Hands out batches with identifiers never used before in this process (one random token per stamper)."""

    def __init__(self, templates: Iterable[bytes], token: str | None = None) -> None:
        self.templates = list(templates)
        if not self.templates:
            raise ValueError("no templates to stamp")
        self.token = token or new_token()
        self._patients = 0
        self._instances = 0

    def batch(self, instances: int, parts: int) -> Batch:
        """``instances`` instances split as evenly as possible into ``parts`` studies of one series each."""
        if parts < 1 or instances < parts:
            raise ValueError(f"cannot split {instances} instances into {parts} parts")
        batch = Batch()
        for size in split(instances, parts):
            patient = self._patients = self._patients + 1
            part = Part(patient_id(self.token, patient), uid(self.token, "study", patient))
            for _ in range(size):
                template = self.templates[self._instances % len(self.templates)]
                self._instances += 1
                part.instances.append(stamp(template, identity(self.token, patient, patient, patient, self._instances)))
            batch.parts.append(part)
        return batch


def split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


@dataclass(frozen=True)
class Growth:
    """Instance ``i`` of a growing archive: patient ``i // per_patient``, one study and series per patient."""

    template: bytes
    token: str
    per_patient: int

    def instance(self, index: int) -> bytes:
        patient = index // self.per_patient
        return stamp(self.template, identity(self.token, patient, patient, patient, index))

    def patient_id(self, patient: int) -> str:
        return patient_id(self.token, patient)

    def share(self, start: int, end: int, index: int, count: int) -> Iterator[bytes]:
        """Sender ``index`` of ``count``'s instances among [start, end): whole patients, never one another's."""
        for number in range(start, end):
            if (number // self.per_patient) % count == index:
                yield self.instance(number)

    def patients(self, instances: int) -> int:
        """How many patients the first ``instances`` instances belong to."""
        return -(-instances // self.per_patient)
