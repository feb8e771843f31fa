"""The audit trail: one JSON line per access decision, in rotated files on the data volume and in the container log.

Three kinds of line: "http", one per HTTP request decision (``auscat_access.http_line``); "instance", one per
instance stored or refused, by any route (C-STORE, REST, DICOMweb STOW), with the calling AE, the client address,
the user, the SOPInstanceUID and, for a refusal, the rule (``instance_line``); and "association", one per DICOM
association accepted or refused, and per DICOM command refused on an accepted one, with the calling AE, the
address and the rule (``association_line``, written by ``auscat_logreader`` from Orthanc's log).

The files are /var/lib/orthanc/db/audit/audit.jsonl and the full files before it, audit.jsonl.1 (newest) ...
audit.jsonl.N (N = AusCAT.AuditFiles; each up to AusCAT.AuditMaxMegabytes), so they survive restarts and upgrades
and are in every backup of the data directory. The same line goes to the container's standard error. Under the
image's entrypoint one process writes both, the log reader (``auscat_logreader``): the plugin hands its lines
down a pipe (``AuditPipe``), so nothing is called in Orthanc and the files have one writer. A line never holds a
request body, a query string or a DICOM attribute value.

The report functions below answer "who accessed this resource" and "what did this user download", read by
``auscat_tool.py audit`` and playbooks/audit.yml.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

AUDIT_DIRECTORY = Path(os.environ.get("AUSCAT_AUDIT_DIRECTORY", "/var/lib/orthanc/db/audit"))
AUDIT_FILE = "audit.jsonl"
# The descriptor of the pipe to the log reader, set by the entrypoint for Orthanc (and so for the plugin).
AUDIT_FD_VARIABLE = "AUSCAT_AUDIT_FD"
DEFAULT_MAX_MEGABYTES = 100
DEFAULT_FILES = 10
ERROR_REPORT_SECONDS = 60


class _QuietRotatingFile(logging.handlers.RotatingFileHandler):
    """A file that cannot be written (a full disk) is reported on standard error once a minute, not per line."""

    reported_at = float("-inf")

    def handleError(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self.reported_at >= ERROR_REPORT_SECONDS:
            self.reported_at = now
            error = sys.exc_info()[1]
            os.write(2, f"auscat: the audit file {self.baseFilename} cannot be written: {error!r}\n".encode())


class AuditTrail:
    """Thread-safe: Orthanc calls the plugin's callbacks from several threads, and logging's handlers lock.

    A directory that cannot be made or a file that cannot be opened (wrong owner, a full disk) is reported on
    standard error, and the lines still go to the stream: the trail never stops Orthanc or its log.
    """

    def __init__(self, directory: Path, max_megabytes: float, files: int, stream_fd: int | None = 2) -> None:
        self.path = directory / AUDIT_FILE
        self.logger = logging.Logger(f"auscat.audit.{directory}", logging.INFO)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            handler = _QuietRotatingFile(
                self.path, maxBytes=int(max_megabytes * 1024 * 1024), backupCount=files, encoding="utf-8"
            )
        except OSError as error:
            message = f"auscat: the audit file {self.path} cannot be opened ({error!r}); lines go to the log only\n"
            os.write(2, message.encode())
        else:
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
        if stream_fd is not None:
            stream = logging.StreamHandler(os.fdopen(os.dup(stream_fd), "w", buffering=1, encoding="utf-8"))
            stream.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(stream)

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path = AUDIT_DIRECTORY) -> AuditTrail:
        section = config.get("AusCAT", {}) if isinstance(config.get("AusCAT"), dict) else {}
        return cls(
            directory,
            float(section.get("AuditMaxMegabytes", DEFAULT_MAX_MEGABYTES)),
            max(1, int(section.get("AuditFiles", DEFAULT_FILES))),
        )

    def write(self, line: str) -> None:
        self.logger.info(line)

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


class AuditPipe:
    """The plugin's end of the trail under the entrypoint: each line goes, in one locked write, to the log reader.

    A line that cannot be written (the reader gone) is reported on standard error once a minute; the request or
    instance it describes goes on as it would with a full disk.
    """

    reported_at = float("-inf")

    def __init__(self, fd: int, directory: Path = AUDIT_DIRECTORY) -> None:
        self.fd = fd
        self.path = directory / AUDIT_FILE  # written by the reader
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        data = memoryview(f"{line}\n".encode())
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError as error:
                now = time.monotonic()
                if now - self.reported_at >= ERROR_REPORT_SECONDS:
                    self.reported_at = now
                    os.write(2, f"auscat: audit line not written to the log reader: {error!r}\n".encode())

    def close(self) -> None:
        os.close(self.fd)


def open_trail(config: dict[str, Any]) -> AuditTrail | AuditPipe:
    """The plugin's trail: the pipe to the entrypoint's log reader, or the files themselves without one."""
    fd = os.environ.get(AUDIT_FD_VARIABLE)
    return AuditPipe(int(fd)) if fd else AuditTrail.from_config(config)


def timestamp(now: datetime.datetime | None = None) -> str:
    """The time of an audit line: UTC, ISO 8601 to the millisecond, with a Z."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instance_line(
    decision: str,
    origin: str,
    sop_instance_uid: str,
    *,
    instance_id: str = "",
    calling_aet: str = "",
    called_aet: str = "",
    client: str = "",
    user: str = "",
    why: str = "",
    now: datetime.datetime | None = None,
) -> str:
    """The audit line of one instance "stored" or "refused": JSON, the SOPInstanceUID and no other DICOM value.

    Empty fields are left out: a C-STORE has no user, a REST upload no AE titles, and a refused C-STORE names
    neither AE nor address (Orthanc hands the plugin only the bytes before it stores).
    """
    resource = {"level": "instance", "id": instance_id, "instance": sop_instance_uid}
    return compact_line(
        now,
        kind="instance",
        origin=origin,
        calling_aet=calling_aet,
        called_aet=called_aet,
        client=client,
        user=user,
        resource={key: value for key, value in resource.items() if value},
        decision=decision,
        why=why,
    )


def association_line(
    decision: str, calling_aet: str, client: str, now: datetime.datetime | None = None, **details: str
) -> str:
    """The audit line of one DICOM association "accepted" or "refused", or of one command refused.

    ``details``: ``called_aet``, ``request`` (the refused command) and ``why`` (the rule of a refusal).
    """
    unknown = set(details) - {"called_aet", "request", "why"}
    if unknown:
        raise TypeError(f"association_line: unknown fields {sorted(unknown)}")
    return compact_line(
        now,
        kind="association",
        calling_aet=calling_aet,
        called_aet=details.get("called_aet", ""),
        client=client,
        request=details.get("request", ""),
        decision=decision,
        why=details.get("why", ""),
    )


def compact_line(now: datetime.datetime | None, **fields: Any) -> str:
    """One JSON line: the time, then the fields in order, empty ones left out."""
    record = {"time": timestamp(now), **fields}
    return json.dumps({key: value for key, value in record.items() if value}, separators=(",", ":"))


# Allowed requests that hand DICOM data out: files, archives, frames and renderings, WADO-URI, and DICOMweb
# WADO-RS retrieval (a study, series or instance path not ending in metadata).
_DOWNLOAD = re.compile(
    r"^/(?:patients|studies|series|instances)/[^/]+/(?:file|archive|media|numpy|frames/.*|preview|rendered|"
    r"image-uint8|image-uint16|image-int16|matlab|pdf|attachments/[^/]+/data)$"
    r"|^/tools/create-(?:archive|media|media-extended)$"
    r"|^/wado$"
    r"|^/jobs/[^/]+/archive$"
    r"|^/dicom-web/studies/[0-9.]+(?:/series/[0-9.]+(?:/instances/[0-9.]+)?)?(?:/frames/.*|/rendered|/bulk/.*)?$"
)


def audit_files(directory: Path = AUDIT_DIRECTORY) -> list[Path]:
    """The audit files, oldest first: audit.jsonl.N ... audit.jsonl.1, audit.jsonl."""
    rotated = sorted(
        (path for path in directory.glob(f"{AUDIT_FILE}.*") if path.suffix[1:].isdigit()),
        key=lambda path: int(path.suffix[1:]),
        reverse=True,
    )
    current = directory / AUDIT_FILE
    return [*rotated, *([current] if current.exists() else [])]


def read_lines(directory: Path = AUDIT_DIRECTORY) -> Iterator[dict[str, Any]]:
    """Every audit line, oldest first; a line that is not JSON (cut by a crash) is skipped."""
    for path in audit_files(directory):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for text in lines:
                try:
                    yield json.loads(text)
                except ValueError:
                    continue


def is_download(line: dict[str, Any]) -> bool:
    return line.get("kind") == "http" and line.get("decision") == "allowed" and bool(_DOWNLOAD.match(line["path"]))


def within(line: dict[str, Any], since: str, until: str) -> bool:
    """Whether the line's time is in [since, until); ISO 8601 times (a date alone is its midnight UTC)."""
    moment = line.get("time", "")
    return (not since or moment >= since) and (not until or moment < until)


def names_resource(line: dict[str, Any], ids: set[str], uids: set[str]) -> bool:
    resource = line.get("resource") or {}
    return resource.get("id") in ids or bool(uids & {resource.get(key) for key in ("study", "series", "instance")})


def who(line: dict[str, Any]) -> str:
    """The user of a line, or the calling AE of a C-STORE."""
    if line.get("user"):
        return line["user"]
    return f"AE {line['calling_aet']}" if line.get("calling_aet") else "?"


def summarise(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per user (or calling AE): requests, downloads, refusals, stores and associations; first and last time."""
    users: dict[str, dict[str, Any]] = {}
    for line in lines:
        entry = users.setdefault(
            who(line),
            {
                "requests": 0,
                "downloads": 0,
                "denied": 0,
                "stored": 0,
                "refused": 0,
                "associations": 0,
                "associations_refused": 0,
                "first": line["time"],
                "last": "",
            },
        )
        decision = line.get("decision")
        if line.get("kind") == "instance":
            entry["stored"] += decision == "stored"
            entry["refused"] += decision == "refused"
        elif line.get("kind") == "association":
            entry["associations"] += decision == "accepted"
            entry["associations_refused"] += decision == "refused"
        else:
            entry["requests"] += 1
            entry["downloads"] += is_download(line)
            entry["denied"] += decision == "denied"
        entry["last"] = line["time"]
    return users


def who_accessed(lines: Iterable[dict[str, Any]], ids: set[str], uids: set[str]) -> dict[str, Any]:
    """The requests and stores that named one of these Orthanc IDs or DICOM UIDs, and a summary per user."""
    found = [line for line in lines if names_resource(line, ids, uids)]
    return {"users": summarise(found), "requests": found}


def downloads_of(lines: Iterable[dict[str, Any]], user: str, since: str = "", until: str = "") -> dict[str, Any]:
    """What a user downloaded in [since, until)."""
    found = [line for line in lines if line.get("user") == user and within(line, since, until) and is_download(line)]
    return {"user": user, "since": since, "until": until, "downloads": found}
