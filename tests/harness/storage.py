"""Files planted in Orthanc's storage area as a crash leaves them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def planted_orphan(data_dir: Path, name: str, content: bytes) -> Iterator[Path]:
    """A stored file NAME (a UUID) that no index entry refers to, in Orthanc's layout (<2>/<2>/<uuid>);
    removed afterwards with the directories made for it. Those are owned as the data directory is, as
    Orthanc would have made them: a directory of root's there would make every later instance whose UUID
    starts with these digits fail to store."""
    planted = data_dir / name[0:2] / name[2:4] / name
    made = [directory for directory in (planted.parent.parent, planted.parent) if not directory.exists()]
    owner = data_dir.stat()
    try:
        for directory in made:
            directory.mkdir()
            os.chown(directory, owner.st_uid, owner.st_gid)
        planted.write_bytes(content)
        yield planted
    finally:
        planted.unlink(missing_ok=True)
        for directory in reversed(made):
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
