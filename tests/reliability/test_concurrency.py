"""Concurrent re-sends of the same study store it exactly once (issue: reliability, concurrency).

20 workers each send the same 50-instance study 5 times over their own associations, all at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import dicom, phantoms
from tests.harness.orthanc import Orthanc, Target

WORKERS = 20
RESENDS = 5
INSTANCES = 50


@pytest.fixture(scope="module")
def target() -> Target:
    target = Target.from_environment()
    if not target.dicom_port:
        pytest.skip("ORTHANC_DICOM_PORT is not set")
    return target


@pytest.fixture(scope="module")
def orthanc(target: Target) -> Orthanc:
    return Orthanc(target.url, target.username, target.password)


def test_twenty_workers_resending_one_study_store_it_exactly_once(
    target: Target, orthanc: Orthanc, tmp_path: Path
) -> None:
    study = phantoms.make_study(slices=INSTANCES - 1)
    paths = phantoms.write_study(study, tmp_path)
    assert len(paths) == INSTANCES

    def worker(_: int) -> list[int]:
        statuses: list[int] = []
        for _ in range(RESENDS):
            statuses.extend(dicom.store(paths, target.dicom_host, target.dicom_port, target.aet).values())
        return statuses

    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = [status for statuses in pool.map(worker, range(WORKERS)) for status in statuses]
        assert len(results) == WORKERS * RESENDS * INSTANCES
        assert set(results) == {dicom.SUCCESS}
        patient = orthanc.patient_id_of(study.patient_id)
        assert patient is not None
        assert len(orthanc.get(f"/patients/{patient}/studies").json()) == 1
        assert len(orthanc.get(f"/patients/{patient}/instances").json()) == INSTANCES
    finally:
        patient = orthanc.patient_id_of(study.patient_id)
        if patient:
            orthanc.delete(f"/patients/{patient}")
