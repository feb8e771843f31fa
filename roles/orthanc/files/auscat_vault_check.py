#!/usr/bin/env python3
"""Check, on the controller, that passwords are kept only in Ansible Vault.

    auscat_vault_check.py DIRECTORY... [--encrypted FILE]... < passwords.json

Reads a JSON list of passwords on standard input and looks through every file under
each DIRECTORY (the inventory, following links). A file that is not vault-encrypted and
contains one of the passwords is a leak; each FILE given with --encrypted must be
vault-encrypted. Prints the problems, naming files, never passwords; exits 1 if any.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

VAULT_HEADER = b"$ANSIBLE_VAULT;"
MAX_BYTES = 16 * 1024 * 1024


def is_vault(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(len(VAULT_HEADER)) == VAULT_HEADER


def files_under(directory: Path):
    for root, _dirs, names in os.walk(directory, followlinks=True):
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file() and path.stat().st_size <= MAX_BYTES:
                yield path


def problems(directories: list[Path], encrypted: list[Path], passwords: list[str]) -> list[str]:
    found = []
    needles = [password.encode() for password in passwords if password]
    for directory in directories:
        for path in files_under(directory):
            if not is_vault(path) and any(needle in path.read_bytes() for needle in needles):
                found.append(f"{path} holds a password in clear: move it to a vault-encrypted file")
    for path in encrypted:
        if not path.is_file():
            found.append(f"{path} does not exist")
        elif not is_vault(path):
            found.append(f"{path} is not encrypted: ansible-vault encrypt {path}")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="*", type=Path)
    parser.add_argument("--encrypted", action="append", type=Path, default=[])
    args = parser.parse_args(argv)
    passwords = json.load(sys.stdin)
    found = problems(args.directories, args.encrypted, [str(password) for password in passwords])
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
