"""The audit trail as the deployed server wrote it on the data volume (AUSCAT_DATA_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def audit_file() -> Path:
    return Path(os.environ["AUSCAT_DATA_DIR"]) / "audit" / "audit.jsonl"


def audit_lines() -> list[dict]:
    return [json.loads(line) for line in audit_file().read_text().splitlines() if line]


def instance_lines(sop_instance_uid: str) -> list[dict]:
    """The "instance" lines (stored or refused) of one SOPInstanceUID."""
    return [
        line
        for line in audit_lines()
        if line["kind"] == "instance" and line["resource"].get("instance") == sop_instance_uid
    ]
