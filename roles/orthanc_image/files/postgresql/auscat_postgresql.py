"""Entrypoint of the AusCAT PostgreSQL image: the index database of one Orthanc stack.

On the first start it creates the cluster in a scratch directory and only then
renames it into place, so an interrupted first start leaves nothing half made.
On every start it sets the password of the Orthanc role from the Swarm secret
(single-user mode, no network), so a new secret takes effect with the next
rollout. Then it execs the server, listening on the stack network for the
Orthanc role only (scram-sha-256).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN_DIR = Path(os.environ.get("AUSCAT_POSTGRESQL_BIN", "/usr/lib/postgresql/17/bin"))
DATA_ROOT = Path(os.environ.get("AUSCAT_POSTGRESQL_DATA", "/var/lib/postgresql/data"))
PASSWORD_FILE = Path(os.environ.get("AUSCAT_POSTGRESQL_PASSWORD_FILE", "/run/secrets/postgresql-password"))
DATABASE = os.environ.get("AUSCAT_POSTGRESQL_DATABASE", "orthanc")
ROLE = os.environ.get("AUSCAT_POSTGRESQL_USER", "orthanc")
SOCKET_DIR = "/run/postgresql"
CLUSTER = "pgdata"

HBA = f"""# AusCAT: the superuser only through the local socket as its own OS user; Orthanc by password.
local   all        postgres            peer
host    {DATABASE}  {ROLE}  0.0.0.0/0  scram-sha-256
host    {DATABASE}  {ROLE}  ::/0       scram-sha-256
"""


class SetupError(Exception):
    """A problem that keeps the database from starting, naming the file at fault."""


def read_password(path: Path) -> str:
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SetupError(f"{path}: cannot read the password secret ({error.strerror})") from error
    if not password:
        raise SetupError(f"{path}: the password secret is empty")
    return password


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def single_user(cluster: Path, database: str, statements: list[str]) -> None:
    """Run statements in single-user mode (no network); their text goes through stdin, never argv."""
    result = subprocess.run(  # noqa: S603 - fixed binary, no shell
        [str(BIN_DIR / "postgres"), "--single", "-D", str(cluster), "-c", "listen_addresses=", database],
        input="".join(f"{statement};\n" for statement in statements),
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "FATAL" in line]
    if result.returncode != 0 or errors:
        raise SetupError(f"{cluster}: single-user setup failed: {' | '.join(errors) or result.returncode}")


def create_cluster(cluster: Path) -> None:
    """initdb into a scratch directory, create the Orthanc database, then move it into place."""
    scratch = DATA_ROOT / f"{CLUSTER}.init"
    if scratch.exists():
        subprocess.run(["rm", "-rf", str(scratch)], check=True)  # noqa: S603, S607 - leftover of an interrupted first start
    print(f"auscat-postgresql: creating the cluster in {cluster}", flush=True)
    subprocess.run(  # noqa: S603 - fixed binary, no shell
        [
            str(BIN_DIR / "initdb"),
            "--pgdata",
            str(scratch),
            "--username=postgres",
            "--auth-local=peer",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--data-checksums",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (scratch / "pg_hba.conf").write_text(HBA, encoding="utf-8")
    single_user(scratch, "postgres", [f"CREATE ROLE {ROLE} LOGIN"])
    single_user(scratch, "postgres", [f"CREATE DATABASE {DATABASE} OWNER {ROLE}"])
    scratch.rename(cluster)


def main(argv: list[str]) -> int:
    cluster = DATA_ROOT / CLUSTER
    try:
        password = read_password(PASSWORD_FILE)
        if not (cluster / "PG_VERSION").is_file():
            if cluster.exists():
                raise SetupError(f"{cluster} exists but holds no PostgreSQL cluster (no PG_VERSION): left untouched")
            create_cluster(cluster)
        single_user(cluster, "postgres", [f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD {sql_literal(password)}"])
    except (SetupError, subprocess.CalledProcessError) as error:
        print(f"auscat-postgresql: {error}", file=sys.stderr)
        return 2
    server = [
        str(BIN_DIR / "postgres"),
        "-D",
        str(cluster),
        "-c",
        "listen_addresses=*",
        "-c",
        f"unix_socket_directories={SOCKET_DIR}",
        *argv,
    ]
    os.execv(server[0], server)  # noqa: S606 - exec, no shell


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
