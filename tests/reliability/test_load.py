"""Sustained mixed load: ingest, retrieval and finds at once, for AUSCAT_LOAD_SECONDS (default 60).

Two associations send fresh studies continuously (keeping the archive bounded by deleting
each sender's older studies), two readers download instances of a reference study, one
client runs /tools/find. Every operation must succeed; Orthanc's memory must stay under
MEMORY_BOUND_BYTES; throughput and p95 latencies are recorded for docs/reliability.md.
"""

from __future__ import annotations

import copy
import random
import statistics
import threading
import time
from collections.abc import Callable

import requests
from pydicom.uid import generate_uid

from tests.harness import dicom, phantoms, stack
from tests.harness.orthanc import TIMEOUT_SECONDS, Orthanc, Target
from tests.harness.study import StoredStudy, assert_study_intact, send_study
from tests.reliability.conftest import int_setting

SECONDS = int_setting("AUSCAT_LOAD_SECONDS", 60)
SENDERS = 2
READERS = 2
STUDY_SLICES = 25
KEEP_STUDIES = 3  # per sender; older ones are deleted to keep the archive bounded
MEMORY_BOUND_BYTES = 512 * 1024**2
MEMORY_SAMPLE_SECONDS = 2


def p95(samples: list[float]) -> float:
    return round(statistics.quantiles(samples, n=20)[-1] * 1000, 1) if len(samples) >= 20 else float("nan")


class Load:
    """Shared state of the workers: a deadline, error messages and per-operation latencies."""

    def __init__(self, seconds: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.latencies: dict[str, list[float]] = {"store": [], "read": [], "find": []}
        self.stored_bytes = 0
        self.memory: list[int] = []
        self.sent_uids: set[str] = set()

    def running(self) -> bool:
        return time.monotonic() < self.deadline and len(self.errors) < 20

    def timed(self, kind: str, action: Callable[[], str | None], what: str) -> None:
        """Run one operation; ``action`` returns None on success, else what went wrong."""
        started = time.monotonic()
        try:
            problem = action()
        except (requests.RequestException, OSError, RuntimeError, ValueError) as error:
            problem = repr(error)
        with self.lock:
            if problem is None:
                self.latencies[kind].append(time.monotonic() - started)
            else:
                self.errors.append(f"{what}: {problem}")


def worker(load: Load, name: str, work: Callable[..., None], *args) -> threading.Thread:
    """A thread running ``work``; if it dies, that is a failed operation, not a quieter load."""

    def run() -> None:
        try:
            work(*args)
        except Exception as error:  # whatever stopped the worker is reported
            with load.lock:
                load.errors.append(f"{name} stopped: {error!r}")

    return threading.Thread(target=run, name=name)


def fresh_copy(template: list, patient_id: str) -> list:
    """The template study with new UIDs: new data for Orthanc without generating pixels again."""
    study_uid, ct_series, rt_series = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for source in template:
        dataset = copy.deepcopy(source)  # a shallow copy would share (and race on) the template's elements
        dataset.PatientID, dataset.StudyInstanceUID = patient_id, study_uid
        dataset.SeriesInstanceUID = ct_series if dataset.Modality == "CT" else rt_series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        datasets.append(dataset)
    return datasets


def c_store(assoc, dataset) -> str | None:
    status = assoc.send_c_store(dataset)
    if not status or "Status" not in status:
        return f"no answer (association {dicom.association_state(assoc)})"
    return None if status.Status == dicom.SUCCESS else f"status 0x{status.Status:04X}"


def http_ok(reply: requests.Response, expect: Callable[[requests.Response], bool] = lambda _: True) -> str | None:
    if not reply.ok:
        return f"HTTP {reply.status_code}: {reply.text[:200]}"
    return None if expect(reply) else f"unexpected answer: {reply.text[:200]}"


def sender(index: int, target: Target, orthanc: Orthanc, template: list, load: Load) -> None:
    kept: list[str] = []
    ae = dicom.storage_ae(template)
    size = sum(len(ds.PixelData) for ds in template if "PixelData" in ds)
    number = 0
    while load.running():
        number += 1
        patient_id = f"LOAD-{index}-{number}-{generate_uid()[-8:]}"
        assoc = ae.associate(target.dicom_host, target.dicom_port, ae_title=target.aet)
        if not assoc.is_established:
            raise RuntimeError("association refused")
        datasets = fresh_copy(template, patient_id)
        try:
            for dataset in datasets:
                load.timed("store", lambda ds=dataset, a=assoc: c_store(a, ds), f"C-STORE {index}")
                if not assoc.is_established:
                    break  # counted once above; the next study opens a new association
        finally:
            if assoc.is_established:
                assoc.release()
        with load.lock:
            load.stored_bytes += size
            load.sent_uids.update(str(ds.SOPInstanceUID) for ds in datasets)
        kept.append(patient_id)
        if len(kept) > KEEP_STUDIES:
            orthanc.delete_patient(kept.pop(0))
    for patient_id in kept:
        orthanc.delete_patient(patient_id)


def reader(orthanc: Orthanc, instances: list[str], load: Load, rng: random.Random) -> None:
    while load.running():
        instance = rng.choice(instances)
        url = f"{orthanc.url}/instances/{instance}/file"
        load.timed("read", lambda u=url: http_ok(orthanc.session.get(u, timeout=TIMEOUT_SECONDS)), f"GET {url}")


def finder(orthanc: Orthanc, patient_ids: list[str], load: Load, rng: random.Random) -> None:
    while load.running():
        query = {"Level": "Study", "Query": {"PatientID": rng.choice(patient_ids)}}
        load.timed(
            "find",
            lambda q=query: http_ok(
                orthanc.session.post(orthanc.url + "/tools/find", json=q, timeout=TIMEOUT_SECONDS),
                lambda reply: len(reply.json()) == 1,
            ),
            f"find {query}",
        )


def sampler(container, load: Load) -> None:
    while load.running():
        load.memory.append(container.stats(stream=False)["memory_stats"].get("usage", 0))
        time.sleep(MEMORY_SAMPLE_SECONDS)


def test_sustained_mixed_load_has_no_errors_and_bounded_memory(
    target: Target, orthanc: Orthanc, docker_client, tmp_path, record
) -> None:
    reference: StoredStudy = send_study(target, tmp_path / "reference", slices=20)
    assert set(reference.statuses.values()) == {dicom.SUCCESS}
    instances = [orthanc.lookup(uid, "Instance") for uid in reference.md5_by_sop_uid]
    template = phantoms.make_study(slices=STUDY_SLICES - 1).datasets
    container = stack.healthy_task_container(docker_client, target.service)
    assert container is not None
    rng = random.Random(SECONDS)  # noqa: S311 - which instance to read, not cryptography
    load = Load(SECONDS)
    workers = [
        *(worker(load, f"sender {i}", sender, i, target, orthanc, template, load) for i in range(SENDERS)),
        *(worker(load, f"reader {i}", reader, orthanc, instances, load, rng) for i in range(READERS)),
        worker(load, "finder", finder, orthanc, [reference.study.patient_id], load, rng),
        worker(load, "sampler", sampler, container, load),
    ]
    started = time.monotonic()
    try:
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        elapsed = time.monotonic() - started
        after = stack.healthy_task_container(docker_client, target.service)
        figures = {
            "seconds": round(elapsed, 1),
            "errors": len(load.errors),
            "first_errors": load.errors[:5],
            "stored_instances": len(load.latencies["store"]),
            "distinct_instances_sent": len(load.sent_uids),
            "ingest_instances_per_s": round(len(load.latencies["store"]) / elapsed, 1),
            "ingest_mb_per_s": round(load.stored_bytes / elapsed / 1e6, 1),
            "reads": len(load.latencies["read"]),
            "finds": len(load.latencies["find"]),
            "p95_ms": {kind: p95(samples) for kind, samples in load.latencies.items()},
            "peak_memory_mib": round(max(load.memory, default=0) / 2**20),
            "memory_bound_mib": MEMORY_BOUND_BYTES // 2**20,
            "same_container": after is not None and after.id == container.id,
        }
        record("load", figures)
        assert not load.errors, f"{len(load.errors)} failed operations: {load.errors[:5]}"
        assert all(load.latencies.values()), "some kind of operation never ran"
        assert len(load.sent_uids) == len(load.latencies["store"]), "the load re-sent instances instead of new ones"
        assert load.memory, "memory was never sampled"
        assert max(load.memory) < MEMORY_BOUND_BYTES
        assert figures["same_container"], "Orthanc restarted under load"
        assert_study_intact(orthanc, reference)
    finally:
        orthanc.delete_patient(reference.study.patient_id)
