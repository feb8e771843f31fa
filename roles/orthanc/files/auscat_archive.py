#!/usr/bin/env python3
"""SHA-256 manifest of the files inside a backup archive, read as a stream.

    python3 auscat_archive.py ARCHIVE > data.sha256

The output is in sha256sum's format with paths relative to the data directory,
so after extraction ``sha256sum --check --strict data.sha256`` verifies every file.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile

CHUNK = 1024 * 1024


def manifest(archive: str) -> list[str]:
    lines = []
    with tarfile.open(archive, mode="r|*") as stream:
        for member in stream:
            if not member.isfile():
                continue
            digest = hashlib.sha256()
            source = stream.extractfile(member)
            if source is None:
                raise ValueError(f"{archive}: cannot read member {member.name}")
            while chunk := source.read(CHUNK):
                digest.update(chunk)
            lines.append(f"{digest.hexdigest()}  {member.name}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: auscat_archive.py ARCHIVE", file=sys.stderr)
        return 2
    try:
        print("\n".join(manifest(argv[0])))
    except (OSError, tarfile.TarError, ValueError) as error:
        print(f"auscat_archive: {argv[0]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
