"""Entrypoint of the AusCAT Orthanc image.

Merges the baked default configuration with the Swarm secret, validates it,
writes the result where only the Orthanc user can read it, starts the log reader
(``auscat_logreader``: association audit lines, the one writer of the audit files) on
pipes that become Orthanc's standard error and the plugin's audit line, and execs
Orthanc with no_new_privs set, so neither Orthanc nor anything it starts can gain
privileges.
``--check-config FILE`` (``-`` for standard input) validates a would-be secret
against this image without starting anything; ``--profile NAME`` also requires the
configuration to declare that profile ("AusCAT": {"Profile": NAME}).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import sys
import time
from pathlib import Path

import auscat_audit
import auscat_config
import auscat_logreader

DEFAULT_CONFIG = Path(os.environ.get("AUSCAT_DEFAULT_CONFIG", "/etc/auscat/orthanc.default.json"))
SECRET_CONFIG = Path(os.environ.get("AUSCAT_SECRET_CONFIG", "/run/secrets/orthanc.json"))
MERGED_CONFIG = Path(os.environ.get("AUSCAT_MERGED_CONFIG", "/run/auscat/orthanc.json"))
ORTHANC_BINARY = os.environ.get("AUSCAT_ORTHANC_BINARY", "Orthanc")
PR_SET_NO_NEW_PRIVS = 38
# How long Orthanc's start waits for its PostgreSQL index to accept connections ("AusCAT": {"IndexWaitSeconds"}).
DEFAULT_INDEX_WAIT_SECONDS = 120


def write_private(path: Path, config: dict) -> None:
    """Write the merged configuration readable by the current user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(config, stream, indent=2)
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def check(candidate: str, profile: str | None) -> int:
    """Validate a would-be secret merged over this image's default."""
    if candidate == "-":
        override = auscat_config.parse(sys.stdin.read(), "<secret on standard input>")
        source = "secret on standard input"
    else:
        override = auscat_config.load(Path(candidate))
        source = candidate
    merged = auscat_config.merge(auscat_config.load(DEFAULT_CONFIG), override)
    auscat_config.validate(merged, source)
    declared = auscat_config.profile(merged)
    if profile and declared != profile:
        raise auscat_config.ConfigError(
            source, f'declares profile {declared!r}, not {profile!r} ("AusCAT": {{"Profile": ...}})'
        )
    print(f"auscat: {source}: configuration is valid for profile {declared}")
    return 0


def wait_for_index(config: dict, clock=time.monotonic, sleep=time.sleep) -> bool:
    """Start Orthanc only once its PostgreSQL index accepts connections (Swarm has no start order).

    Gives up after the configured time and lets Orthanc's own connection retries report the problem.
    """
    index = auscat_config.postgresql_index(config)
    if index is None or "Host" not in index:
        return True
    address = (str(index["Host"]), int(index.get("Port", 5432)))
    layer = config.get(auscat_config.LAYER_SECTION, {})
    deadline = clock() + float(layer.get("IndexWaitSeconds", DEFAULT_INDEX_WAIT_SECONDS))
    announced = False
    while True:
        try:
            with socket.create_connection(address, timeout=2):
                return True
        except OSError as error:
            if clock() >= deadline:
                where = f"{address[0]}:{address[1]}"
                print(f"auscat: PostgreSQL index {where} still unreachable ({error}); starting anyway", flush=True)
                return False
            if not announced:
                print(f"auscat: waiting for the PostgreSQL index at {address[0]}:{address[1]}", flush=True)
                announced = True
            sleep(1)


def forbid_new_privileges() -> None:
    """Set no_new_privs (inherited by Orthanc and its children, never cleared): setuid binaries stay inert."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def start_log_reader(config: dict, orthanc_args: list[str]) -> list[str]:
    """Fork the log reader; make this process's standard error and the plugin's audit pipe its inputs.

    Returns the arguments Orthanc needs for it: ``--verbose-dicom`` (its association lines), unless the operator's
    own arguments already ask for the DICOM category's details, which the reader then keeps in the container log.
    """
    keep = any(argument in auscat_logreader.VERBOSE_ARGUMENTS for argument in orthanc_args)
    log_read, log_write = os.pipe()
    audit_read, audit_write = os.pipe()
    if os.fork() == 0:  # the reader: Orthanc's child once this process execs
        status = 0
        try:
            os.close(log_write)
            os.close(audit_write)
            auscat_logreader.ignore_stop_signals()
            trail = auscat_audit.AuditTrail.from_config(config)
            auscat_logreader.run(log_read, audit_read, trail, out_fd=2, keep_dicom_info=keep)
        except BaseException as error:
            print(f"auscat: log reader stopped: {error!r}", file=sys.stderr, flush=True)
            status = 1
        finally:
            os._exit(status)
    os.close(log_read)
    os.close(audit_read)
    sys.stderr.flush()
    os.dup2(log_write, 2)
    os.close(log_write)
    os.set_inheritable(audit_write, True)
    os.environ[auscat_audit.AUDIT_FD_VARIABLE] = str(audit_write)
    return [] if keep else ["--verbose-dicom"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-entrypoint", description=__doc__)
    parser.add_argument("--check-config", metavar="FILE", help="validate FILE (or - for stdin) and exit")
    parser.add_argument("--profile", choices=auscat_config.PROFILES, help="with --check-config: required profile")
    args, orthanc_args = parser.parse_known_args(argv)
    try:
        if args.check_config:
            return check(args.check_config, args.profile)
        config = auscat_config.build(DEFAULT_CONFIG, SECRET_CONFIG)
        write_private(MERGED_CONFIG, config)
    except auscat_config.ConfigError as error:
        print(f"auscat: configuration error: {error}", file=sys.stderr)
        return 2
    wait_for_index(config)
    forbid_new_privileges()
    reader_args = start_log_reader(config, orthanc_args)
    os.execvp(ORTHANC_BINARY, [ORTHANC_BINARY, *reader_args, *orthanc_args, str(MERGED_CONFIG)])  # noqa: S606 - exec, no shell
    return 1  # not reached: execvp replaces the process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
