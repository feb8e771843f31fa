"""Concurrent re-sends of the same study store it exactly once (issue: reliability, concurrency).

20 workers each send the same 50-instance study 5 times over their own associations, all at once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import dicom, phantoms
from tests.harness.orthanc import Orthanc, Target

WORKERS = 20
RESENDS = 5
INSTANCES = 50


def test_twenty_workers_resending_one_study_store_it_exactly_once(
    target: Target, orthanc: Orthanc, tmp_path: Path, record
) -> None:
    study = phantoms.make_study(slices=INSTANCES - 1)
    paths = phantoms.write_study(study, tmp_path)
    assert len(paths) == INSTANCES

    started = time.monotonic()

    def worker(_: int) -> list[int]:
        statuses: list[int] = []
        for _ in range(RESENDS):
            statuses.extend(dicom.store(paths, target.dicom_host, target.dicom_port, target.aet).values())
        return statuses

    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = [status for statuses in pool.map(worker, range(WORKERS)) for status in statuses]
        elapsed = time.monotonic() - started
        patient = orthanc.patient_id_of(study.patient_id)
        assert patient is not None
        stored = len(orthanc.get(f"/patients/{patient}/instances").json())
        studies = len(orthanc.get(f"/patients/{patient}/studies").json())
        record(
            "concurrency",
            {"workers": WORKERS, "resends": RESENDS, "instances": INSTANCES, "c_stores": len(results),
             "failures": sum(status != dicom.SUCCESS for status in results), "studies": studies,
             "instances_stored": stored, "seconds": round(elapsed, 1)},
        )  # fmt: skip
        assert len(results) == WORKERS * RESENDS * INSTANCES
        assert set(results) == {dicom.SUCCESS}
        assert studies == 1
        assert stored == INSTANCES
    finally:
        orthanc.delete_patient(study.patient_id)
