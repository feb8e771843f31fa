"""The benchmark's clients: pynetdicom and DCMTK storescu for C-STORE, REST ingest and retrieval, finds.

Every client gets the same settings against every server; each timed call returns
the wall-clock seconds of the whole transfer (association set-up included).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from multiprocessing import get_context
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.transport import AssociationSocket

from tests.bench.servers import BenchError, Server

CALLING_AET = "AUSCAT-BENCH"
# A sender resends an instance the server refused for a transient reason (HTTP 503, a C-STORE
# failure status): Orthanc's PostgreSQL index answers so when conflicting transactions ran out of retries.
RESENDS = 10
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
DIMSE_TIMEOUT_SECONDS = 120
REST_TIMEOUT_SECONDS = 120
STORESCU_TIMEOUT_SECONDS = 1200


@dataclass(frozen=True)
class Timed:
    """What a timed transfer took: wall seconds, bytes on the wire if not the instances', resends."""

    seconds: float
    transferred: int | None = None
    retries: int = 0


_original_create_socket = AssociationSocket._create_socket


def _create_socket_without_nagle(self: AssociationSocket, address) -> socket.socket:
    sock = _original_create_socket(self, address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def enable_tcp_nodelay() -> None:
    """Make every pynetdicom association socket send without Nagle's delay.

    DICOM clients such as CTP (dcm4che) and DCMTK (with TCP_NODELAY=1) disable Nagle's
    algorithm; pynetdicom has no option for it, and with Nagle a small PDU that follows
    a large one waits for the peer's delayed ACK (tens of ms per instance).
    """
    AssociationSocket._create_socket = _create_socket_without_nagle  # type: ignore[method-assign]


def _init_store_worker() -> None:
    enable_tcp_nodelay()
    # Send each file's dataset bytes as they are on disk: nothing is decoded or re-encoded while timed.
    _config.STORE_SEND_CHUNKED_DATASET = True


def _store_worker(paths: list[str], host: str, port: int, called_aet: str) -> tuple[float, float, list[int], int, str]:
    """C-STORE files over one association, resending refused ones; (start, end, statuses, resends, error)."""
    ae = AE(ae_title=CALLING_AET)
    ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT_SECONDS
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    start = time.perf_counter()
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        return start, time.perf_counter(), [], 0, f"association with {called_aet}@{host}:{port} {state}"
    statuses: list[int] = []
    resends = 0
    error = ""
    try:
        for path in paths:
            if not assoc.is_established:
                state = "aborted" if assoc.is_aborted else "closed"
                error = f"association {state} by the peer after {len(statuses)} of {len(paths)} instances"
                break
            for attempt in range(RESENDS + 1):
                status = assoc.send_c_store(path)
                code = int(status.Status) if status and "Status" in status else -1
                if code == SUCCESS or code == -1 or attempt == RESENDS:
                    break
                resends += 1
            statuses.append(code)
    except (RuntimeError, OSError) as failure:
        error = f"{failure} after {len(statuses)} of {len(paths)} instances"
    finally:
        if assoc.is_established:
            assoc.release()
    return start, time.perf_counter(), statuses, resends, error


def _noop() -> int:
    time.sleep(0.2)
    return os.getpid()


class PynetdicomPool:
    """Worker processes, one per association, started once so that timed runs pay no start-up."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_store_worker)
        # Start every worker now (the pool only starts them on demand, one per pending task).
        for future in [self.executor.submit(_noop) for _ in range(workers)]:
            future.result()

    def store(self, server: Server, parts: Sequence[Sequence[Path]]) -> Timed:
        """C-STORE each part over its own association at once; wall-clock seconds of the whole."""
        if len(parts) > self.workers:
            raise ValueError(f"{len(parts)} associations but only {self.workers} worker processes")
        futures = [
            self.executor.submit(
                _store_worker, [str(path) for path in part], server.host, server.dicom_port, server.aet
            )
            for part in parts
        ]
        results = [future.result() for future in futures]
        for _, _, statuses, _, error in results:
            if error:
                raise BenchError(
                    f"pynetdicom C-STORE to {server.name} ({server.aet}@{server.host}:{server.dicom_port}): {error}"
                )
            failed = sorted({status for status in statuses if status != SUCCESS})
            if failed:
                raise BenchError(
                    f"pynetdicom C-STORE to {server.name}: {len([s for s in statuses if s != SUCCESS])} of "
                    f"{len(statuses)} instances failed with status(es) {', '.join(f'0x{s:04X}' for s in failed)}"
                )
        seconds = max(result[1] for result in results) - min(result[0] for result in results)
        return Timed(seconds, retries=sum(result[3] for result in results))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def ensure_dcmtk() -> str:
    """Path of storescu, installing Debian's dcmtk package when it is missing."""
    found = shutil.which("storescu")
    if found:
        return found
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "dcmtk"]):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0:
            raise BenchError(f"storescu is missing and `{' '.join(command)}` failed: {done.stderr.strip()[-1000:]}")
    found = shutil.which("storescu")
    if not found:
        raise BenchError("apt-get install dcmtk succeeded but storescu is still not on PATH")
    return found


def storescu_command(storescu: str, server: Server, directory: Path) -> list[str]:
    """One association sending every file of ``directory``; only the needed presentation contexts are proposed."""
    return [
        storescu, "--quiet", "-aet", CALLING_AET, "-aec", server.aet, "--required", "+sd",
        server.host, str(server.dicom_port), str(directory),
    ]  # fmt: skip


def storescu_store(storescu: str, server: Server, directories: Sequence[Path]) -> Timed:
    """One storescu process per directory, all at once, with TCP_NODELAY=1 (which DCMTK reads); wall seconds."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            storescu_command(storescu, server, directory),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for directory in directories
    ]
    outputs = [process.communicate(timeout=STORESCU_TIMEOUT_SECONDS)[0] for process in processes]
    elapsed = time.perf_counter() - start
    for process, output in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise BenchError(
                f"storescu to {server.name} ({server.aet}@{server.host}:{server.dicom_port}) exited with "
                f"{process.returncode}: {output.decode(errors='replace').strip()[-1000:]}"
            )
    return Timed(elapsed)


def timed_threads(target: Callable[[int], None], count: int) -> float:
    """Run ``target(index)`` in ``count`` threads started together; wall seconds, re-raising the first error."""
    barrier = threading.Barrier(count)
    times: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            target(index)
        except BaseException as error:  # reported to the caller below
            errors.append(error)
        times.append((start, time.perf_counter()))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return max(end for _, end in times) - min(start for start, _ in times)


class InstancePoster:
    """POST /instances over one keep-alive HTTP/1.1 connection (TCP_NODELAY, as http.client sets it).

    Plain http.client rather than requests: the client shares the host's CPUs with the server,
    and requests costs several times more CPU per call.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.connection = http.client.HTTPConnection(server.host, server.http_port, timeout=REST_TIMEOUT_SECONDS)
        credentials = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/dicom"}
        self.retries = 0

    def connect(self) -> None:
        self.connection.connect()

    def post(self, data: bytes) -> None:
        for attempt in range(RESENDS + 1):
            self.connection.request("POST", "/instances", body=data, headers=self.headers)
            reply = self.connection.getresponse()
            body = reply.read()
            if reply.status != HTTPStatus.SERVICE_UNAVAILABLE or attempt == RESENDS:
                break
            self.retries += 1
        status = json.loads(body).get("Status") if reply.status == HTTPStatus.OK else None
        if status != "Success":
            raise BenchError(
                f"POST /instances to {self.server.name}: HTTP {reply.status}, "
                f"{body[:300].decode(errors='replace') if status is None else 'Status ' + str(status)}"
            )

    def close(self) -> None:
        self.connection.close()


def rest_store(server: Server, parts: Sequence[Iterable[bytes]]) -> Timed:
    """POST /instances of each part over its own keep-alive connection, all at once; wall seconds."""
    posters = [InstancePoster(server) for _ in parts]
    for poster in posters:
        poster.connect()  # before timing, as an association is opened while timed

    def send(index: int) -> None:
        for data in parts[index]:
            posters[index].post(data)

    try:
        seconds = timed_threads(send, len(parts))
    finally:
        for poster in posters:
            poster.close()
    return Timed(seconds, retries=sum(poster.retries for poster in posters))


def rest_retrieve(server: Server, study_id: str) -> Timed:
    """GET /studies/{id}/archive, read to the end; the zip's size as the bytes transferred."""
    client = server.client()
    start = time.perf_counter()
    reply = client.session.get(f"{server.url}/studies/{study_id}/archive", stream=True, timeout=REST_TIMEOUT_SECONDS)
    if reply.status_code != 200:
        raise BenchError(f"GET /studies/{study_id}/archive on {server.name}: HTTP {reply.status_code}")
    size = sum(len(chunk) for chunk in reply.iter_content(1 << 20))
    return Timed(time.perf_counter() - start, transferred=size)


def tools_find_latencies(server: Server, patient_ids: Sequence[str]) -> list[float]:
    """Milliseconds of each POST /tools/find at study level by PatientID, on one keep-alive connection."""
    client = server.client()
    client.get("/system")
    latencies = []
    for patient_id in patient_ids:
        query = {"Level": "Study", "Query": {"PatientID": patient_id}}
        start = time.perf_counter()
        reply = client.session.post(server.url + "/tools/find", json=query, timeout=REST_TIMEOUT_SECONDS)
        reply.raise_for_status()
        reply.json()
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def cfind_latencies(server: Server, patient_ids: Sequence[str]) -> list[float]:
    """Milliseconds of each study-level C-FIND by PatientID, over one association, until the final response."""
    enable_tcp_nodelay()
    ae = AE(ae_title=CALLING_AET)
    ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT_SECONDS
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(server.host, server.dicom_port, ae_title=server.aet)
    if not assoc.is_established:
        raise BenchError(f"C-FIND: no association with {server.name} ({server.aet}@{server.host}:{server.dicom_port})")
    latencies = []
    try:
        for patient_id in patient_ids:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.PatientID = patient_id
            identifier.StudyInstanceUID = ""
            start = time.perf_counter()
            final = -1
            for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                final = int(status.Status) if status and "Status" in status else -1
                if final not in PENDING:
                    break
            latencies.append((time.perf_counter() - start) * 1000)
            if final != SUCCESS:
                raise BenchError(
                    f"C-FIND on {server.name} for PatientID {patient_id} ended with status 0x{final & 0xFFFF:04X} "
                    f"(does DicomModalities allow {CALLING_AET} to find?)"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return latencies
