"""Orthanc's log reader: the audit line of each DICOM association, and the one writer of the audit files.

Orthanc's plugin SDK has no callback for an association; Orthanc only logs its decision, in its DICOM category:
"Association Received from AET … on IP …" (INFO) followed by "Association Acknowledged …" (INFO) or by one of the
refusals below. So the entrypoint runs Orthanc with ``--verbose-dicom`` and, in a child process started before it
execs Orthanc, this reader on two pipes: Orthanc's standard error, and the audit lines the plugin writes
(``auscat_audit.AuditPipe``). The reader

- forwards every line of Orthanc's log unchanged to the container log, except the INFO and TRACE lines of the
  DICOM category that only ``--verbose-dicom`` asked for (kept when the operator's own arguments ask for them);
- writes one "association" audit line per association accepted or refused, and per DICOM command refused on an
  accepted association, with the calling AE, the address and the rule;
- writes the plugin's lines, so that one process writes and rotates the audit files; the plugin's short record of
  an HTTP decision becomes its JSON line here (``auscat_access.line_of_record``), out of Orthanc's process.

It is a separate process, so none of this runs under Orthanc's Python lock. It ignores SIGTERM and SIGINT and ends
when Orthanc has closed both pipes. Orthanc is the container's first process, and when it exits the kernel ends
the reader too: what is still in the pipes then (at most the lines of the last ``GATHER_SECONDS``) does not reach
the log. In a normal stop that is only Orthanc's last log line or two, since its HTTP and DICOM servers, and so
the audit lines, stopped more than a second earlier; a crash of Orthanc can take that many audit lines with it.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from auscat_access import line_of_record
from auscat_audit import association_line

# Orthanc's arguments that ask for the DICOM category's INFO (or TRACE) lines in the container log.
VERBOSE_ARGUMENTS = frozenset({"--verbose", "--trace", "--verbose-dicom", "--trace-dicom"})
READ_SIZE = 65536
GATHER_SECONDS = 0.02  # how long the lines of a burst gather before one write
LONGEST_LINE = 1 << 20  # a longer run of bytes without a newline is passed on as it is

# "I1203 11:33:19.523296     DICOM-SERVER CommandDispatcher.cpp:340] (dicom) Association Received from AET …":
# level, date and time, the thread name (when Orthanc prints it), file:line, the category of INFO/TRACE lines.
_PREFIX = re.compile(
    rb"^(?P<level>[EWIT])\d{4} \d\d:\d\d:\d\d\.\d+ +(?:(?P<thread>\S+) )?(?P<source>[\w.+-]+):\d+\] "
    rb"(?:\((?P<category>\w+)\) )?(?P<message>.*)$"
)
_RECEIVED = re.compile(r"^Association Received from AET (?P<aet>.*) on IP (?P<ip>\S+)$")
_ACKNOWLEDGED = re.compile(r"^Association Acknowledged \(.*?\)(?: to AET (?P<aet>.*) on IP (?P<ip>\S+))?$")
_REFUSED_REQUEST = re.compile(
    r'^Rejected (?P<request>\S+) request from remote DICOM modality with AET "(?P<aet>.*)" and hostname "(?P<ip>.*)"$'
)
# A refusal of the association itself: the message, and the rule it applied.
_REFUSALS = (
    (
        re.compile(r"^Rejected association for remote AET (?P<aet>.*) on IP (?P<ip>\S+)$"),
        "calling AET not allowed from this address (DicomModalities, DicomCheckModalityHost)",
    ),
    (
        re.compile(r"^Rejected association, because of a bad called AET in the request \((?P<called>.*)\)$"),
        "called AET is not this server's (DicomAet, DicomCheckCalledAet)",
    ),
    (re.compile(r"^Association Rejected: (?P<reason>.*)$"), "association rejected: {reason}"),
)
NEGOTIATION_FAILED = "association negotiation failed (see Orthanc's log)"


@dataclass
class AssociationLog:
    """Turns Orthanc's log lines into association audit lines; one instance per Orthanc process."""

    write: Callable[[str], None]
    keep_dicom_info: bool = False
    # Per Orthanc thread: the association received and not yet acknowledged or refused (calling AE, address).
    pending: dict[bytes, tuple[str, str]] = field(default_factory=dict)

    def line(self, raw: bytes) -> bool:
        """Audit what the line says; whether it belongs in the container log."""
        parsed = _PREFIX.match(raw.rstrip(b"\r\n"))
        if parsed is None:
            return True
        thread = parsed["thread"] or b""
        message = parsed["message"].decode("utf-8", errors="replace")
        self.association(thread, message)
        dicom_detail = parsed["level"] in b"IT" and parsed["category"] == b"dicom"
        return self.keep_dicom_info or not dicom_detail

    def association(self, thread: bytes, message: str) -> None:
        if found := _RECEIVED.match(message):
            self.settle(thread, "refused", NEGOTIATION_FAILED)  # an earlier one that got no answer
            self.pending[thread] = (found["aet"], found["ip"])
        elif found := _ACKNOWLEDGED.match(message):
            aet, ip = self.pending.pop(thread, (found["aet"] or "", found["ip"] or ""))
            self.write(association_line("accepted", aet, ip))
        elif found := _REFUSED_REQUEST.match(message):
            why = "the DICOM command is not allowed for this modality (DicomModalities)"
            self.write(association_line("refused", found["aet"], found["ip"], request=found["request"], why=why))
        else:
            for pattern, rule in _REFUSALS:
                if found := pattern.match(message):
                    aet, ip = self.pending.pop(
                        thread, (found.groupdict().get("aet", ""), found.groupdict().get("ip", ""))
                    )
                    called = found.groupdict().get("called", "")
                    why = rule.format(reason=found.groupdict().get("reason", ""))
                    self.write(association_line("refused", aet, ip, called_aet=called, why=why))
                    return

    def settle(self, thread: bytes, decision: str, why: str) -> None:
        if thread in self.pending:
            aet, ip = self.pending.pop(thread)
            self.write(association_line(decision, aet, ip, why=why))

    def close(self) -> None:
        for thread in list(self.pending):
            self.settle(thread, "refused", NEGOTIATION_FAILED)


def write_all(fd: int, data: bytes) -> None:
    """Write everything, or nothing more once the descriptor is gone (a closed container log)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass


def run(
    log_fd: int,
    audit_fd: int,
    trail,
    out_fd: int,
    keep_dicom_info: bool = False,
    gather_seconds: float = GATHER_SECONDS,
) -> None:
    """Read both pipes until Orthanc has closed them; forward, audit and write as the module says.

    What a read brings is written in one batch (one write to the container log, one audit record), then the reader
    waits ``gather_seconds`` so that a burst of requests costs a few wake-ups of the reader and of Docker's log
    driver rather than one per request. A line waits that long at most; the pipe holds a burst meanwhile.
    """
    audited: list[str] = []
    forwarded: list[bytes] = []
    associations = AssociationLog(audited.append, keep_dicom_info)
    selector = selectors.DefaultSelector()
    buffers = {log_fd: b"", audit_fd: b""}
    for fd in buffers:
        selector.register(fd, selectors.EVENT_READ)

    def handle(fd: int, raw: bytes) -> None:
        try:
            if fd == audit_fd:
                audited.append(line_of_record(raw.rstrip(b"\n").decode("utf-8", errors="replace")))
            elif associations.line(raw):
                forwarded.append(raw)
        except Exception as error:  # a line the reader cannot handle must not stop Orthanc's log
            forwarded.extend((raw, f"auscat: log reader: {error!r}\n".encode()))

    def flush() -> None:
        if forwarded:
            write_all(out_fd, b"".join(forwarded))
            forwarded.clear()
        if audited:
            trail.write("\n".join(audited))
            audited.clear()

    while buffers:
        for key, _ in selector.select():
            fd = key.fd
            chunk = os.read(fd, READ_SIZE)
            if not chunk:  # Orthanc closed it: what is left is its last, unterminated line
                if buffers[fd]:
                    handle(fd, buffers[fd] + b"\n")
                selector.unregister(fd)
                del buffers[fd]
                continue
            *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
            for line in lines:
                handle(fd, line + b"\n")
            if len(buffers[fd]) > LONGEST_LINE:
                handle(fd, buffers[fd] + b"\n")
                buffers[fd] = b""
        flush()
        if buffers:
            time.sleep(gather_seconds)
    associations.close()
    flush()
    trail.close()


def ignore_stop_signals() -> None:
    """Orthanc gets docker's SIGTERM (and a terminal's SIGINT); the reader lives until Orthanc's pipes close."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)
