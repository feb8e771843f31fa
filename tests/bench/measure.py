"""The benchmark's measurements: ingest and retrieval side by side, raw disk writes, archive growth."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.bench import clients, cpu, payload, stats
from tests.bench.servers import BenchError, Server, ServerGone

T = TypeVar("T")
QUIET_HOST_BUSY = 0.1
CLIENTS = ("pynetdicom", "storescu")
CONCURRENCIES = (1, 4, 8)


@dataclass(frozen=True)
class Plan:
    instances: int  # CT slices per run, split over the run's associations
    rounds: int
    concurrencies: tuple[int, ...] = CONCURRENCIES
    clients: tuple[str, ...] = CLIENTS


def write_parts(batch: payload.Batch, directory: Path) -> list[Path]:
    """Each part of the batch as a directory of files (one per association), written before timing."""
    shutil.rmtree(directory, ignore_errors=True)
    directories = []
    for index, part in enumerate(batch.parts):
        part_dir = directory / f"association-{index}"
        part_dir.mkdir(parents=True)
        for number, data in enumerate(part.instances):
            (part_dir / f"{number:05d}.dcm").write_bytes(data)
        directories.append(part_dir)
    return directories


def stored_studies(server: Server, batch: payload.Batch) -> list[str]:
    """Orthanc's IDs of the batch's studies, after checking that they hold every instance sent."""
    client = server.client()
    studies = []
    for part in batch.parts:
        study = client.lookup(part.study_uid, "Study")
        count = client.get(f"/studies/{study}/statistics").json()["CountInstances"] if study else 0
        if count != len(part.instances):
            raise BenchError(
                f"{server.name} stores {count} of the {len(part.instances)} instances just sent"
                f" (study {part.study_uid})"
            )
        studies.append(study)
    return studies


def write_files(batch: payload.Batch, directory: Path) -> clients.Timed:
    """Write each instance as its own file and fsync it, as a store that makes each instance durable would."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    start = time.perf_counter()
    for number, data in enumerate(batch.all()):
        descriptor = os.open(directory / f"{number:05d}.dcm", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    elapsed = time.perf_counter() - start
    shutil.rmtree(directory)
    return clients.Timed(elapsed)


class Ingest:
    """C-STORE (both clients), REST ingest and retrieval on every server, servers alternating round by round."""

    def __init__(
        self,
        servers: Sequence[Server],
        plan: Plan,
        stamper: payload.Stamper,
        scratch: Path,
        disk_dir: Path,
        storescu: str,
        pool: clients.PynetdicomPool,
        say: Callable[[str], None],
    ) -> None:
        self.servers = list(servers)
        self.plan = plan
        self.stamper = stamper
        self.scratch = scratch
        self.disk_dir = disk_dir
        self.storescu = storescu
        self.pool = pool
        self.say = say
        self.samples: list[stats.Sample] = []
        self.failures: list[str] = []  # runs that failed once and were measured again
        self.background: list[dict[str, float]] = []  # host CPU busy before each round, from others' work

    def _record(self, sample: stats.Sample) -> None:
        self.samples.append(sample)
        extra = f", Orthanc {sample.server_cpu_ms:.1f} CPU ms/inst" if sample.server_cpu_ms is not None else ""
        extra += f", {sample.retries} resent" if sample.retries else ""
        extra += f", host {sample.host_busy * 100:.0f} % busy" if sample.host_busy is not None else ""
        self.say(
            f"  round {sample.round}  {sample.measure:<13} {sample.client:<10} x{sample.concurrency}  "
            f"{sample.server:<15} {sample.rate:8.1f} inst/s {sample.mbps:8.1f} MB/s ({sample.seconds:.2f} s{extra})"
        )

    def _sample(
        self,
        measure: str,
        server: Server | None,
        client: str,
        concurrency: int,
        round_number: int,
        batch: payload.Batch,
        timed: Callable[[], clients.Timed],
    ) -> stats.Sample:
        """Run ``timed`` with the CPU meters around it, and record it."""
        where = f"{measure} {client} x{concurrency} on {server.name if server else 'disk'}, round {round_number}"
        meter = cpu.Meter(server.pid if server else None).start()
        try:
            outcome = timed()
        except (BenchError, OSError, http.client.HTTPException, requests.RequestException) as error:
            _require_alive(server, where)
            logs = f"\n--- {server.name}: last log lines ---\n{server.logs()}" if server else ""
            raise BenchError(f"{where}: {error}{logs}") from None
        server_cpu, host_busy = meter.stop()
        _require_alive(server, where)
        sample = stats.Sample(
            measure,
            server.name if server else "disk",
            client,
            concurrency,
            round_number,
            batch.instances,
            batch.size,
            outcome.seconds,
            outcome.transferred,
            server_cpu,
            host_busy,
            outcome.retries,
        )
        self._record(sample)
        return sample

    def _cstore(self, server: Server, client: str, concurrency: int, round_number: int) -> None:
        batch = self.stamper.batch(self.plan.instances, concurrency)
        directories = write_parts(batch, self.scratch / "cstore")
        if client == "pynetdicom":
            parts = [sorted(directory.iterdir()) for directory in directories]
            timed = partial(self.pool.store, server, parts)
        elif client == "storescu":
            timed = partial(clients.storescu_store, self.storescu, server, directories)
        else:
            raise ValueError(f"unknown C-STORE client {client!r}")
        sample = self._sample("cstore", server, client, concurrency, round_number, batch, timed)
        shutil.rmtree(self.scratch / "cstore")
        self._check(server, batch, sample)

    def _check(self, server: Server, batch: payload.Batch, sample: stats.Sample) -> list[str]:
        """The stored studies' IDs, after checking (outside the timing) that every instance arrived."""
        try:
            return stored_studies(server, batch)
        except BenchError as error:
            self.samples.remove(sample)
            raise BenchError(f"{error}\n--- {server.name}: last log lines ---\n{server.logs()}") from None

    def _rest(self, server: Server, concurrency: int, round_number: int) -> tuple[str, payload.Batch]:
        """REST ingest of a batch; one of its studies (ID and instances as a batch of its own) to retrieve."""
        batch = self.stamper.batch(self.plan.instances, concurrency)
        sample = self._sample(
            "rest-ingest",
            server,
            "rest",
            concurrency,
            round_number,
            batch,
            lambda: clients.rest_store(server, [part.instances for part in batch.parts]),
        )
        return self._check(server, batch, sample)[0], payload.Batch(batch.parts[:1])

    def _retrieve(self, server: Server, study: str, batch: payload.Batch, round_number: int) -> None:
        """The study's archive; MB/s counts the DICOM bytes retrieved, the zip's own size is kept as ``transferred``."""
        self._sample(
            "rest-retrieve", server, "rest", 1, round_number, batch, lambda: clients.rest_retrieve(server, study)
        )

    def _disk(self, round_number: int) -> None:
        batch = self.stamper.batch(self.plan.instances, 1)
        self._sample("disk-write", None, "fsync", 1, round_number, batch, lambda: write_files(batch, self.disk_dir))

    def _retrying(self, run: Callable[[], T]) -> T:
        """Run one measurement; when it fails (its server still up), record why and run it once more, fresh UIDs."""
        try:
            return run()
        except ServerGone:
            raise
        except BenchError as error:
            self.failures.append(str(error))
            self.say(f"  FAILED, measuring once more with fresh UIDs: {str(error).splitlines()[0]}")
            return run()

    def run(self) -> list[stats.Sample]:
        for round_number in range(1, self.plan.rounds + 1):
            # Alternate the order too, so that no server always runs first (or right after the same one).
            order = self.servers if round_number % 2 else self.servers[::-1]
            busy = cpu.background_busy()
            self.background.append({"round": round_number, "host_busy": busy})
            warning = " (the host is not quiet: expect noisy figures)" if busy > QUIET_HOST_BUSY else ""
            self.say(
                f"round {round_number}/{self.plan.rounds}: {', '.join(server.name for server in order)}; "
                f"host {busy:.0%} busy before it{warning}"
            )
            for client in self.plan.clients:
                for concurrency in self.plan.concurrencies:
                    for server in order:
                        self._retrying(partial(self._cstore, server, client, concurrency, round_number))
            studies: dict[str, tuple[str, payload.Batch]] = {}
            for concurrency in self.plan.concurrencies:
                for server in order:
                    study = self._retrying(partial(self._rest, server, concurrency, round_number))
                    studies.setdefault(server.name, study)
            for server in order:
                self._retrying(partial(self._retrieve, server, *studies[server.name], round_number))
            self._retrying(partial(self._disk, round_number))
        return self.samples


def _require_alive(server: Server | None, where: str) -> None:
    if server and server.pid and not Path(f"/proc/{server.pid}").exists():
        raise ServerGone(
            f"{server.name}'s Orthanc process (PID {server.pid}) ended during {where}"
            f"\n--- {server.name}: last log lines ---\n{server.logs()}"
        )


def clear(server: Server) -> int:
    """Delete every patient the server stores; how many there were."""
    client = server.client()
    patients = client.get("/patients").json()
    for patient in patients:
        client.delete(f"/patients/{patient}")
    remaining = client.get("/statistics").json()["CountInstances"]
    if remaining:
        raise BenchError(f"{server.name} still stores {remaining} instances after deleting every patient")
    return len(patients)


def count_instances(server: Server) -> int:
    return int(server.client().get("/statistics").json()["CountInstances"])


@dataclass(frozen=True)
class GrowthPlan:
    total: int
    threads: int
    finds: int
    per_patient: int
    checkpoints: tuple[int, ...]


def grow(
    server: Server, backend: str, plan: GrowthPlan, rng: random.Random, say: Callable[[str], None]
) -> dict[str, Any]:
    """Grow the (empty) archive to plan.total small instances over REST, timing finds at each checkpoint."""
    if count_instances(server):
        raise BenchError(f"the {backend} archive ({server.name}) must be empty before it grows")
    growth = payload.Growth(payload.small_template(), payload.new_token(), plan.per_patient)
    result: dict[str, Any] = {
        "backend": backend,
        "server": server.name,
        "threads": plan.threads,
        "instances_per_patient": plan.per_patient,
        "instance_size": len(growth.instance(0)),
        "checkpoints": [],
        "windows": [],
    }
    windows: list[tuple[int, int, float]] = []
    meters: list[dict[str, float | None]] = []
    stored = 0
    for checkpoint in plan.checkpoints:
        if checkpoint > stored:
            start = stored

            meter = cpu.Meter(server.pid).start()
            try:
                shares = [growth.share(start, checkpoint, index, plan.threads) for index in range(plan.threads)]
                timed = clients.rest_store(server, shares)
            except (BenchError, OSError, http.client.HTTPException) as error:
                _require_alive(server, f"growth of the {backend} archive")
                raise BenchError(
                    f"growth of the {backend} archive from {start} to {checkpoint} instances: {error}"
                    f"\n--- {server.name}: last log lines ---\n{server.logs()}"
                ) from None
            server_cpu, host_busy = meter.stop()
            seconds = timed.seconds
            windows.append((start, checkpoint, seconds))
            meters.append(
                {
                    "server_cpu_ms": server_cpu / (checkpoint - start) * 1000 if server_cpu is not None else None,
                    "host_busy": host_busy,
                    "retries": timed.retries,
                }
            )
            stored = checkpoint
            counted = count_instances(server)
            if counted != stored:
                raise BenchError(f"the {backend} archive holds {counted} instances after {stored} were sent")
            rate = (checkpoint - start) / seconds
            say(f"  {backend}: {start} -> {checkpoint} instances in {seconds:.1f} s ({rate:.0f} inst/s)")
        patients = growth.patients(stored)
        numbers = [rng.randrange(patients) if patients else rng.randrange(1_000_000) for _ in range(plan.finds)]
        patient_ids = [growth.patient_id(number) for number in numbers]
        if patients:
            found = server.client().post("/tools/find", json={"Level": "Study", "Query": {"PatientID": patient_ids[0]}})
            if len(found.json()) != 1:
                raise BenchError(f"/tools/find on {server.name} found {found.json()} for stored {patient_ids[0]}")
        # Orthanc's CPU while only the finds run: work of its own (e.g. resources becoming stable
        # StableAge seconds after their last instance) competes with them for the index.
        meter = cpu.Meter(server.pid).start()
        started = time.perf_counter()
        tools_find = clients.tools_find_latencies(server, patient_ids)
        cfind = clients.cfind_latencies(server, patient_ids)
        finds_seconds = time.perf_counter() - started
        server_cpu, host_busy = meter.stop()
        result["checkpoints"].append(
            {
                "instances": stored,
                "patients": patients,
                "tools_find_ms": tools_find,
                "cfind_ms": cfind,
                "tools_find": stats.latency_summary(tools_find),
                "cfind": stats.latency_summary(cfind),
                "during_finds": {
                    "seconds": finds_seconds,
                    "orthanc_cpu_share": server_cpu / finds_seconds if server_cpu is not None else None,
                    "host_busy": host_busy,
                },
            }
        )
        latest = result["checkpoints"][-1]
        say(
            f"  {backend} at {stored} instances: /tools/find median {latest['tools_find']['median_ms']:.2f} ms,"
            f" C-FIND median {latest['cfind']['median_ms']:.2f} ms"
        )
    result["windows"] = [window | meter for window, meter in zip(stats.window_rates(windows), meters, strict=True)]
    rates = result["windows"]
    result["drift"] = stats.drift(rates[0]["rate"], rates[-1]["rate"]) if len(rates) >= 2 else None
    return result
