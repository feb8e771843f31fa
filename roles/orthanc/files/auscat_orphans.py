#!/usr/bin/env python3
"""Storage files that Orthanc's SQLite index does not refer to (orphans), and index entries without a file.

    python3 auscat_orphans.py DATA_DIR                       report, change nothing
    python3 auscat_orphans.py DATA_DIR --quarantine DIR      move orphans into DIR (never deletes)

An orphan is what a crash leaves when Orthanc had written a file but not yet
committed its index entry: the sender never got a success status for it. Run with
--quarantine only while Orthanc is stopped (playbooks/orphans.yml does that), or a
file being stored at that moment would be taken for an orphan. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import sys
from pathlib import Path

INDEX = "index"
# Orthanc's storage layout: <dir>/<uuid[0:2]>/<uuid[2:4]>/<uuid>.
STORED_FILE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def stored_files(data_dir: Path) -> dict[str, Path]:
    files = {}
    for first in data_dir.iterdir():
        if not (first.is_dir() and len(first.name) == 2):
            continue
        for path in first.glob("??/*"):
            if STORED_FILE.match(path.name) and path.is_file():
                files[path.name] = path
    return files


def indexed_uuids(data_dir: Path) -> set[str]:
    index = data_dir / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no SQLite index (is this an Orthanc data directory?)")
    connection = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in connection.execute("SELECT uuid FROM AttachedFiles")}
    finally:
        connection.close()


def scan(data_dir: Path) -> tuple[dict[str, Path], set[str]]:
    """(orphan files by uuid, indexed uuids without a file)."""
    files = stored_files(data_dir)
    indexed = indexed_uuids(data_dir)
    orphans = {uuid: path for uuid, path in files.items() if uuid not in indexed}
    return orphans, indexed - files.keys()


def quarantine(orphans: dict[str, Path], data_dir: Path, destination: Path) -> None:
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in orphans.values():
        target = destination / path.relative_to(data_dir)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(path, target)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-orphans", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--quarantine", type=Path, metavar="DIR", help="move orphan files into DIR")
    args = parser.parse_args(argv)
    try:
        orphans, missing = scan(args.data_dir)
        orphan_bytes = sum(path.stat().st_size for path in orphans.values())
        if args.quarantine and orphans:
            quarantine(orphans, args.data_dir, args.quarantine)
    except (OSError, sqlite3.Error) as error:
        print(json.dumps({"error": str(error)}))
        return 1
    print(
        json.dumps(
            {
                "orphans": len(orphans),
                "orphan_bytes": orphan_bytes,
                "quarantined_to": str(args.quarantine) if args.quarantine and orphans else None,
                "missing_files": sorted(missing),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
