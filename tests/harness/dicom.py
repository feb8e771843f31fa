"""C-ECHO and C-STORE with pynetdicom, as CTP does.

Depends only on pydicom and pynetdicom (no numpy), so the same file also runs
inside a container on the stack network:

    python -m tests.harness.dicom echo HOST PORT [--aet ORTHANC]
    python -m tests.harness.dicom store HOST PORT FILE... [--aet ORTHANC]

``store`` prints one line per file: ``<status hex> <SOPInstanceUID>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

CALLING_AET = "AUSCAT-PROBE"
SUCCESS = 0x0000
RAW_TIMEOUT_SECONDS = 5
# How long a sender waits for an association or a response: an answer that is slow under load is
# not a lost one (twice pynetdicom's default; the benchmark waits longer still).
RESPONSE_TIMEOUT_SECONDS = 60


class AssociationError(Exception):
    """The peer did not accept an association."""


def _associate(ae: AE, host: str, port: int, called_aet: str):
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        raise AssociationError(f"no association with {called_aet}@{host}:{port} (rejected, aborted or unreachable)")
    return assoc


def association_state(assoc) -> str:
    """What became of an association whose request got no answer: aborted, released, or still open."""
    return "aborted" if assoc.is_aborted else "released" if assoc.is_released else "open"


def echo(host: str, port: int, called_aet: str = "ORTHANC", calling_aet: str = CALLING_AET) -> int:
    """C-ECHO; returns the DIMSE status (0 is success)."""
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, host, port, called_aet)
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()


def storage_ae(datasets: Iterable, calling_aet: str = CALLING_AET) -> AE:
    """An AE offering each SOP class only in its datasets' transfer syntax, so they travel as encoded."""
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = RESPONSE_TIMEOUT_SECONDS
    for sop_class, syntax in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [syntax])
    return ae


def store(
    paths: Iterable[Path], host: str, port: int, called_aet: str = "ORTHANC", calling_aet: str = CALLING_AET
) -> dict[str, int]:
    """C-STORE every file over one association; returns the status per SOPInstanceUID.

    Each SOP class is offered only in its file's transfer syntax, so the dataset
    travels exactly as encoded in the file. Raises AssociationError, naming the
    file, when a C-STORE gets no response (the association is then lost).
    """
    paths = list(paths)
    datasets = [dcmread(path) for path in paths]
    ae = storage_ae(datasets, calling_aet)
    assoc = _associate(ae, host, port, called_aet)
    statuses: dict[str, int] = {}
    try:
        for number, (path, ds) in enumerate(zip(paths, datasets, strict=True), start=1):
            started = time.monotonic()
            status = assoc.send_c_store(ds)
            if not status or "Status" not in status:
                raise AssociationError(
                    f"no response from {called_aet}@{host}:{port} to C-STORE {number} of {len(datasets)} ({path}) "
                    f"after {time.monotonic() - started:.1f} s (DIMSE timeout {ae.dimse_timeout} s); "
                    f"association {association_state(assoc)}"
                )
            statuses[str(ds.SOPInstanceUID)] = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def store_until_failure(
    paths: Iterable[Path], host: str, port: int, called_aet: str = "ORTHANC", calling_aet: str = CALLING_AET
) -> dict[str, int]:
    """C-STORE files over one association until the peer stops answering.

    Returns the status of every file that got an answer; the rest were never acknowledged.
    """
    datasets = [dcmread(path) for path in paths]
    ae = storage_ae(datasets, calling_aet)
    ae.dimse_timeout = ae.network_timeout = RAW_TIMEOUT_SECONDS * 2
    statuses: dict[str, int] = {}
    try:
        assoc = _associate(ae, host, port, called_aet)
    except AssociationError:
        return statuses
    try:
        for ds in datasets:
            if not assoc.is_established:
                break
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, OSError):
                break
            if not status or "Status" not in status:
                break
            statuses[str(ds.SOPInstanceUID)] = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def store_raw(path: Path, host: str, port: int, called_aet: str = "ORTHANC", calling_aet: str = CALLING_AET) -> int:
    """C-STORE one file's dataset bytes exactly as they are, broken or not, over its own association.

    Only the file meta group is read (for the presentation context). Returns the
    DIMSE status, or -1 when the peer answered nothing (abort, closed connection).
    """
    meta, _ = split_dataset(path)
    ae = AE(ae_title=calling_aet)
    # A peer that cannot parse what it received may stay silent: give up on it quickly.
    ae.dimse_timeout = ae.network_timeout = RAW_TIMEOUT_SECONDS
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = _associate(ae, host, port, called_aet)
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes undecoded
    try:
        status = assoc.send_c_store(path)
        return int(status.Status) if status and "Status" in status else -1
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        if assoc.is_established:
            assoc.release()


def dataset_bytes(part10: bytes) -> bytes:
    """The dataset of a DICOM Part 10 file without preamble and file meta group.

    A receiver writes its own meta group (implementation UID, source AE), so what
    C-STORE preserves is the dataset: compare these bytes, not whole files.
    """
    if part10[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 file: no DICM prefix")
    # (0002,0000) File Meta Information Group Length, explicit VR little endian: tag, "UL", length 4, value.
    if part10[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError("file meta group does not start with its group length")
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="C-ECHO or C-STORE to a DICOM peer.")
    parser.add_argument("action", choices=["echo", "store"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--aet", default="ORTHANC", help="called AE title (default ORTHANC)")
    parser.add_argument("--calling-aet", default=CALLING_AET)
    args = parser.parse_args(argv)
    try:
        if args.action == "echo":
            status = echo(args.host, args.port, args.aet, args.calling_aet)
            print(f"{status:04x} C-ECHO")
            return 0 if status == SUCCESS else 1
        statuses = store(args.files, args.host, args.port, args.aet, args.calling_aet)
    except AssociationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for uid, status in statuses.items():
        print(f"{status:04x} {uid}")
    return 0 if all(status == SUCCESS for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
