"""The audit trail as the deployed server wrote it on the data volume (AUSCAT_DATA_DIR)."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

SETTLE_SECONDS = 0.3
WAIT_SECONDS = 10


def audit_file() -> Path:
    return Path(os.environ["AUSCAT_DATA_DIR"]) / "audit" / "audit.jsonl"


def now() -> str:
    """This moment as an audit line's time (UTC, milliseconds, Z), to compare with the lines' times."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_lines() -> list[dict]:
    """Every line of the current file, once it has stopped growing.

    The log reader writes a line a moment after the request, store or association it records has been answered.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    size = -1
    while size != audit_file().stat().st_size and time.monotonic() < deadline:
        size = audit_file().stat().st_size
        time.sleep(SETTLE_SECONDS)
    return [json.loads(line) for line in audit_file().read_text().splitlines() if line]


def instance_lines(sop_instance_uid: str) -> list[dict]:
    """The "instance" lines (stored or refused) of one SOPInstanceUID."""
    return [
        line
        for line in audit_lines()
        if line["kind"] == "instance" and line["resource"].get("instance") == sop_instance_uid
    ]


def association_lines(calling_aet: str, client: str, since: str) -> list[dict]:
    """The "association" lines of one calling AE from one address, from a moment on."""
    return [
        line
        for line in audit_lines()
        if line["kind"] == "association"
        and (line.get("calling_aet"), line.get("client")) == (calling_aet, client)
        and line["time"] >= since
    ]
