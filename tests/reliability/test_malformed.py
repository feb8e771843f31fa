"""Malformed input: every broken file gets an error on every route, and nothing else is harmed.

The corpus (tests/harness/corpus.py, over 200 files derived from the phantoms) goes over
C-STORE, REST and DICOMweb STOW; requests declaring absurd Content-Lengths go over HTTP.
Afterwards the same Orthanc process is still serving and a study stored before is intact.
The CVE-class probes (tests/harness/hostile.py) are each refused by the same process, whose peak
memory grows by less than PROBE_MEMORY_BOUND_MIB.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.harness import corpus, dicom, hostile, stack
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy, assert_study_intact, send_study

MINIMUM_CORPUS = 200
SENDERS = 8
BOUNDARY = "auscat-corpus"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED_SOP_SEQUENCE = "00081199"
ASSOCIATION_PATIENCE_SECONDS = 120
DECLARED_LENGTHS = (2**20, 2**31, 2**40, 2**63 - 1, 10**23)
# An affected Orthanc allocates what the probe declares (4 GiB); a fixed one a few MiB at most.
PROBE_MEMORY_BOUND_MIB = 64


def stow_body(data: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def stow_stored_something(reply: requests.Response) -> bool:
    """A STOW answer stores an instance only when it is 2xx *and* references it (PS3.18 10.5.3)."""
    if not reply.ok:
        return False
    try:
        return bool(reply.json().get(REFERENCED_SOP_SEQUENCE, {}).get("Value"))
    except ValueError:
        return True  # an unreadable 2xx answer cannot be taken as a refusal


def send(case: corpus.Case, route: str, target: Target, orthanc: Orthanc, path: Path) -> str | None:
    """Send one case over one route; None when the sender was told it failed, else what it was told."""
    if route == "cstore":
        # Orthanc's DICOM threads may all be waiting on earlier broken associations: retry the
        # association (never the verdict) until the file has really been offered.
        deadline = time.monotonic() + ASSOCIATION_PATIENCE_SECONDS
        while True:
            try:
                status = dicom.store_raw(path, target.dicom_host, target.dicom_port, target.aet)
                break
            except dicom.AssociationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        return None if status != dicom.SUCCESS else "C-STORE status 0x0000"
    if route == "rest":
        reply = orthanc.session.post(orthanc.url + "/instances", data=case.data, timeout=60)
        return None if not reply.ok else f"HTTP {reply.status_code}"
    reply = orthanc.session.post(
        orthanc.url + "/dicom-web/studies",
        data=stow_body(case.data),
        headers={"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
        timeout=60,
    )
    return None if not stow_stored_something(reply) else f"HTTP {reply.status_code} referencing an instance"


def declared_length_answer(target: Target, path: str, length: int, content_type: str) -> str:
    """POST a kilobyte while declaring ``length`` bytes, close the sending side, return the status line."""
    headers = {"Content-Type": content_type, "Content-Length": str(length)}
    return hostile.raw_post(target.url, target.username, target.password, path, headers, b"\0" * 1024)


@pytest.fixture(scope="module")
def good_study(target: Target, orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory):
    stored = send_study(target, tmp_path_factory.mktemp("good"), slices=10)
    assert set(stored.statuses.values()) == {dicom.SUCCESS}
    yield stored
    orthanc.delete_patient(stored.study.patient_id)


def test_every_malformed_file_gets_an_error_and_the_server_keeps_serving(
    target: Target, orthanc: Orthanc, docker_client, good_study: StoredStudy, tmp_path: Path, record
) -> None:
    cases = corpus.build()
    assert len(cases) >= MINIMUM_CORPUS
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    instances_before = orthanc.get("/statistics").json()["CountInstances"]

    jobs = []
    for case in cases:
        path = tmp_path / f"{case.name}.dcm"
        path.write_bytes(case.data)
        jobs.extend((case, route, path) for route in case.routes)
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        answers = list(pool.map(lambda job: send(job[0], job[1], target, orthanc, job[2]), jobs))
    accepted = [
        f"{case.name} over {route}: {answer}" for (case, route, _), answer in zip(jobs, answers, strict=True) if answer
    ]

    declared = {
        (path, length): declared_length_answer(target, path, length, content_type)
        for path, content_type in (("/instances", "application/dicom"), ("/dicom-web/studies", STOW_TYPE))
        for length in DECLARED_LENGTHS
    }
    accepted += [
        f"POST {path} declaring {length} bytes: {line}"
        for (path, length), line in declared.items()
        if " 2" in line[8:11]
    ]

    after = stack.healthy_task_container(docker_client, target.service)
    instances_after = orthanc.get("/statistics").json()["CountInstances"]
    per_route = collections.Counter(route for _, route, _ in jobs)
    record(
        "malformed",
        {"files": len(cases), "by_category": dict(collections.Counter(case.category for case in cases)),
         "sends_by_route": dict(per_route), "declared_length_requests": len(declared),
         "accepted": accepted, "same_container": after is not None and after.id == container.id,
         "instances_before": instances_before, "instances_after": instances_after},
    )  # fmt: skip
    assert not accepted, f"{len(accepted)} malformed sends were not refused: {accepted[:10]}"
    assert after is not None, "Orthanc has no healthy task after the corpus"
    assert after.id == container.id, "the Orthanc container was replaced: it crashed"
    assert instances_after == instances_before
    assert_study_intact(orthanc, good_study)


@pytest.mark.parametrize("probe", [probe.__name__ for probe in hostile.PROBES])
def test_cve_class_probe_is_refused_by_the_same_process_within_its_memory_bound(
    target: Target, orthanc: Orthanc, docker_client, good_study: StoredStudy, probe: str, record
) -> None:
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    instances_before = orthanc.get("/statistics").json()["CountInstances"]

    (result,) = hostile.run(target.url, target.username, target.password, container.id, names=[probe])

    record(f"cve_probe_{probe}", result)
    assert result["refused"], f"{result['probe']} was not refused: {result['answer']}"
    assert result["same_process"], f"{result['probe']}: the Orthanc process did not survive ({result['answer']})"
    assert result["peak_growth_mib"] < PROBE_MEMORY_BOUND_MIB, result
    assert stack.healthy_task_container(docker_client, target.service).id == container.id
    assert orthanc.get("/statistics").json()["CountInstances"] == instances_before
    assert_study_intact(orthanc, good_study)
