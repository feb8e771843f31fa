#!/usr/bin/env python3
"""Storage files that Orthanc's index does not refer to (orphans), and index entries without a file.

    python3 auscat_orphans.py DATA_DIR --container ID                    report, change nothing
    python3 auscat_orphans.py DATA_DIR --container ID --quarantine DIR   move orphans into DIR (never deletes)
    python3 auscat_orphans.py DATA_DIR --postgresql-service NAME [...]   the index read in PostgreSQL itself

An orphan is what a crash leaves when Orthanc had written a file but not yet
committed its index entry: the sender never got a success status for it. Orthanc
keeps running: a SQLite index is read through Orthanc in the container ID
(auscat_tool attachments, through /tools/find), a PostgreSQL one in the database of
the service NAME (one query), after the files are listed; files younger than
--min-age-minutes, which may still be on their way into the index, are never taken
for orphans. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from auscat_backup import BackupError, query_postgresql, stored_path

TOOL = "/usr/local/lib/auscat/auscat_tool.py"
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


def indexed_uuids(container: str | None, postgresql_service: str | None) -> set[str]:
    if postgresql_service:
        return set(query_postgresql(postgresql_service, "COPY (SELECT uuid FROM attachedfiles) TO STDOUT"))
    result = subprocess.run(
        ["docker", "exec", container, "python3", TOOL, "attachments"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise OSError(f"auscat_tool attachments in {container} failed: {result.stdout.strip()} {result.stderr.strip()}")
    return set(result.stdout.split())


def scan(
    data_dir: Path, container: str | None, postgresql_service: str | None, min_age_seconds: float
) -> tuple[dict[str, Path], set[str]]:
    """(orphan files by uuid, indexed uuids without a file). Files are listed before the index is read."""
    files = stored_files(data_dir)
    indexed = indexed_uuids(container, postgresql_service)
    settled = time.time() - min_age_seconds
    orphans = {uuid: path for uuid, path in files.items() if uuid not in indexed and path.stat().st_mtime < settled}
    # A file stored after the listing is in the index but not in the listing: look again.
    missing = {uuid for uuid in indexed - files.keys() if not stored_path(data_dir, uuid).is_file()}
    return orphans, missing


def quarantine(orphans: dict[str, Path], data_dir: Path, destination: Path) -> None:
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in orphans.values():
        target = destination / path.relative_to(data_dir)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(path, target)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-orphans", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    index = parser.add_mutually_exclusive_group(required=True)
    index.add_argument("--container", help="the running Orthanc container (SQLite index)")
    index.add_argument("--postgresql-service", help="the Swarm service of the PostgreSQL index")
    parser.add_argument("--min-age-minutes", type=float, default=10.0)
    parser.add_argument("--quarantine", type=Path, metavar="DIR", help="move orphan files into DIR")
    args = parser.parse_args(argv)
    try:
        orphans, missing = scan(args.data_dir, args.container, args.postgresql_service, args.min_age_minutes * 60)
        orphan_bytes = sum(path.stat().st_size for path in orphans.values())
        if args.quarantine and orphans:
            quarantine(orphans, args.data_dir, args.quarantine)
    except (BackupError, OSError) as error:
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
