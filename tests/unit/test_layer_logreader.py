"""The log reader: association audit lines from Orthanc's log, the container log, and the one writer of the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import auscat_access
import auscat_logreader
import pytest
from auscat_audit import AuditPipe, AuditTrail, association_line
from auscat_logreader import AssociationLog

LAYER = Path(auscat_logreader.__file__).parent
DEFAULT = Path(__file__).resolve().parents[2] / "files" / "orthanc.json"

# Orthanc 1.13.0's own lines (--verbose-dicom), as it logged one accepted association, one with a bad called AET,
# one from an AET it does not know and a command it refused.
SERVER = "I1203 11:33:19.523296     DICOM-SERVER CommandDispatcher.cpp"
RECEIVED = f"{SERVER}:340] (dicom) Association Received from AET CTP on IP 10.42.42.250\n"
ACKNOWLEDGED = f"{SERVER}:681] (dicom) Association Acknowledged (Max Send PDV: 16370) to AET CTP on IP 10.42.42.250\n"
ECHO = "I1203 11:33:19.529155          DICOM-0 CommandDispatcher.cpp:978] (dicom) Received Echo Request\n"
BAD_CALLED = (
    "W1203 11:33:20.532783     DICOM-SERVER CommandDispatcher.cpp:619] "
    "Rejected association, because of a bad called AET in the request (WRONG)\n"
)
UNKNOWN = (
    "W1203 11:33:21.000001     DICOM-SERVER CommandDispatcher.cpp:634] "
    "Rejected association for remote AET X on IP 1.2.3.4\n"
)
REFUSED_REQUEST = (
    "W1203 11:33:22.000001          DICOM-3 CommandDispatcher.cpp:845] Rejected STORE request from remote DICOM "
    'modality with AET "CTP" and hostname "10.42.42.250"\n'
)
GENERIC = "W1203 11:33:14.052734             MAIN main.cpp:2452] Orthanc version: 1.13.0\n"


def feed(*lines: str, keep: bool = False) -> tuple[list[dict], list[str]]:
    written: list[str] = []
    log = AssociationLog(written.append, keep_dicom_info=keep)
    forwarded = [line for line in lines if log.line(line.encode())]
    log.close()
    return [json.loads(line) for line in written], forwarded


def test_an_acknowledged_association_is_audited_as_accepted_with_its_calling_ae_and_address() -> None:
    audited, _ = feed(RECEIVED, ACKNOWLEDGED, ECHO)
    assert [(a["kind"], a["decision"], a["calling_aet"], a["client"]) for a in audited] == [
        ("association", "accepted", "CTP", "10.42.42.250")
    ]


def test_each_refusal_is_audited_with_its_rule() -> None:
    audited, _ = feed(RECEIVED, BAD_CALLED, UNKNOWN, REFUSED_REQUEST)
    assert [(a["decision"], a["calling_aet"], a["client"]) for a in audited] == [
        ("refused", "CTP", "10.42.42.250"),
        ("refused", "X", "1.2.3.4"),
        ("refused", "CTP", "10.42.42.250"),
    ]
    assert audited[0]["called_aet"] == "WRONG"
    assert "DicomCheckCalledAet" in audited[0]["why"]
    assert "DicomModalities" in audited[1]["why"]
    assert audited[2]["request"] == "STORE"


def test_an_association_received_and_never_answered_is_refused_by_negotiation() -> None:
    audited, _ = feed(RECEIVED, RECEIVED, ACKNOWLEDGED)
    assert [(a["decision"], a.get("why")) for a in audited] == [
        ("refused", auscat_logreader.NEGOTIATION_FAILED),
        ("accepted", None),
    ]


def test_the_dicom_details_only_the_reader_asked_for_stay_out_of_the_container_log() -> None:
    _, forwarded = feed(GENERIC, RECEIVED, ACKNOWLEDGED, ECHO, BAD_CALLED, "a line Orthanc did not prefix\n")
    assert forwarded == [GENERIC, BAD_CALLED, "a line Orthanc did not prefix\n"]
    _, kept = feed(GENERIC, RECEIVED, ECHO, keep=True)
    assert kept == [GENERIC, RECEIVED, ECHO]


def test_an_association_line_holds_no_dicom_value() -> None:
    audited, _ = feed(RECEIVED, ACKNOWLEDGED)
    assert set(audited[0]) == {"time", "kind", "calling_aet", "client", "decision"}


def run_reader(tmp_path: Path, log: bytes, audit: bytes) -> tuple[str, list[dict]]:
    """The reader on real pipes, fed from threads as Orthanc and the plugin would, until both close."""
    log_read, log_write = os.pipe()
    audit_read, audit_write = os.pipe()
    out = tmp_path / "container.log"
    with out.open("w") as stream:
        trail = AuditTrail(tmp_path / "audit", max_megabytes=1, files=1, stream_fd=stream.fileno())
        writers = [
            threading.Thread(target=lambda fd=fd, data=data: (os.write(fd, data), os.close(fd)))
            for fd, data in ((log_write, log), (audit_write, audit))
        ]
        for writer in writers:
            writer.start()
        auscat_logreader.run(log_read, audit_read, trail, out_fd=stream.fileno())
        for writer in writers:
            writer.join()
    os.close(log_read)
    os.close(audit_read)
    lines = (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()
    return out.read_text(), [json.loads(line) for line in lines]


def test_the_reader_writes_the_plugins_lines_and_the_associations_to_the_files_and_the_container_log(
    tmp_path: Path,
) -> None:
    plugin_line = '{"time":"2026-12-03T11:33:19.600Z","kind":"instance","decision":"stored"}'
    decision = auscat_access.Decision(True, "alice", "researcher", "browse, tags, previews, files and archives")
    record = auscat_access.http_record(decision, "GET", "/patients", "10.242.42.7")
    log = (GENERIC + RECEIVED + ACKNOWLEDGED + ECHO + "the last line, unterminated").encode()
    container, audited = run_reader(tmp_path, log, f"{plugin_line}\n{record}\n".encode())
    assert sorted(line["kind"] for line in audited) == ["association", "http", "instance"]
    http = next(line for line in audited if line["kind"] == "http")
    assert (http["user"], http["path"], http["decision"]) == ("alice", "/patients", "allowed")
    assert auscat_access.RECORD_MARK not in container
    assert GENERIC in container
    assert plugin_line in container
    assert '"kind":"association"' in container
    assert "Received Echo Request" not in container
    assert container.endswith("the last line, unterminated\n") or "the last line, unterminated\n" in container


def test_a_line_the_reader_cannot_take_is_reported_not_raised(tmp_path: Path, capfd) -> None:
    read, write = os.pipe()
    os.close(read)
    pipe = AuditPipe(write, tmp_path)
    pipe.write('{"kind":"http"}')  # the reader gone: EPIPE (Python ignores SIGPIPE)
    pipe.write('{"kind":"http"}')
    pipe.close()
    assert capfd.readouterr().err.count("audit line not written to the log reader") == 1


FAKE_ORTHANC = """\
    #!{python}
    import os, signal, sys, time
    # What Orthanc would do: log on standard error, the plugin's line on the audit pipe, stop on SIGTERM.
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    arguments = " ".join(sys.argv[1:-1])
    sys.stderr.write("W1203 11:33:14.052734             MAIN main.cpp:2452] arguments: " + arguments + "\\n")
    sys.stderr.write({received!r} + {acknowledged!r} + {echo!r})
    sys.stderr.flush()
    os.write(int(os.environ["AUSCAT_AUDIT_FD"]), b'{{"kind":"http","decision":"allowed"}}\\n')
    print("ready", flush=True)
    while not stopping:
        time.sleep(0.05)
    time.sleep(0.3)  # the reader got the same SIGTERM, and must still be there for the last line
    sys.stderr.write("W1203 11:33:30.000000             MAIN main.cpp:2545] Orthanc has stopped\\n")
"""


def test_the_entrypoint_runs_orthanc_on_the_readers_pipes_and_the_reader_outlives_sigterm(tmp_path: Path) -> None:
    fake = tmp_path / "Orthanc"
    fake.write_text(
        textwrap.dedent(FAKE_ORTHANC).format(
            python=sys.executable, received=RECEIVED, acknowledged=ACKNOWLEDGED, echo=ECHO
        )
    )
    fake.chmod(0o700)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"RegisteredUsers": {"site": "pw-1234567890abcd"}}))
    environment = {
        **os.environ,
        "PYTHONPATH": str(LAYER),
        "AUSCAT_ORTHANC_BINARY": str(fake),
        "AUSCAT_DEFAULT_CONFIG": str(DEFAULT),
        "AUSCAT_SECRET_CONFIG": str(secret),
        "AUSCAT_MERGED_CONFIG": str(tmp_path / "run" / "orthanc.json"),
        "AUSCAT_AUDIT_DIRECTORY": str(tmp_path / "audit"),
    }
    process = subprocess.Popen(
        [sys.executable, str(LAYER / "auscat_entrypoint.py")],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline() == "ready\n"
    os.killpg(process.pid, signal.SIGTERM)  # what a terminal's or a careless kill's group signal would do
    _, container = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "arguments: --verbose-dicom" in container
    assert "Orthanc has stopped" in container
    assert "Received Echo Request" not in container
    audited = [json.loads(line) for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    assert sorted((line["kind"], line["decision"]) for line in audited) == [
        ("association", "accepted"),
        ("http", "allowed"),
    ]
    assert container.count('"kind":"association"') == 1


def test_an_association_line_refuses_a_field_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="patient_name"):
        association_line("accepted", "CTP", "10.42.42.250", patient_name="x")
