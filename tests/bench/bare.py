"""Bare Orthanc: the deployed image's files and configuration, run on the host outside any container.

The image's filesystem is exported into a directory and Orthanc runs there under
``chroot --userspec=4242:4242`` in the host's network namespace, with the image's and
the service's environment and the stack's merged configuration. Only the ports differ
(the stack's own are taken), which is why Orthanc is started directly and not through
the image's entrypoint: the entrypoint refuses any HttpPort or DicomPort other than
8042 and 4242. It would do nothing else that bears on speed (merge, validate, exec).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.servers import (
    WORK_ROOT,
    BenchError,
    Server,
    log_tail,
    mounts_under,
    remove_tree,
    require_free_ports,
    run,
)

ROOTFS = WORK_ROOT / "bare-rootfs"
HTTP_PORT = 57042
DICOM_PORT = 57242
ORTHANC_UID = 4242
CONFIG_IN_ROOT = "/run/auscat/orthanc.json"
DATA_IN_ROOT = "/var/lib/orthanc/db"
EXPORT_CONTAINER = "auscat_bench_bare_export"
IMAGE_MARKER = ".auscat-bench-image"
LABEL = "org.auscat.bench"
STOP_TIMEOUT_SECONDS = 30
TMP_SIZE = "1g"  # as the stack's /tmp tmpfs (orthanc_tmp_size)


def bare_config(merged: dict) -> dict:
    """The stack's configuration with the bare server's ports."""
    return {**merged, "HttpPort": HTTP_PORT, "DicomPort": DICOM_PORT}


def environment(image_env: list[str], service_env: list[str]) -> list[str]:
    """The image's variables, then the service's over them, as NAME=VALUE."""
    merged: dict[str, str] = {}
    for item in [*image_env, *service_env]:
        name, _, value = item.partition("=")
        merged[name] = value
    return [f"{name}={value}" for name, value in merged.items()]


def export_rootfs(image: str, image_id: str, rootfs: Path = ROOTFS) -> None:
    """The image's filesystem in ``rootfs`` (kept when it already holds this image), with an empty data directory."""
    marker = rootfs / IMAGE_MARKER
    if not (marker.exists() and marker.read_text(encoding="utf-8") == image_id):
        remove_tree(rootfs)
        rootfs.mkdir(parents=True)
        subprocess.run(["docker", "rm", "--force", EXPORT_CONTAINER], capture_output=True, check=False)
        run(["docker", "create", "--name", EXPORT_CONTAINER, "--label", f"{LABEL}=bare", image], f"creating {image}")
        try:
            with subprocess.Popen(["docker", "export", EXPORT_CONTAINER], stdout=subprocess.PIPE) as export:
                untar = subprocess.run(
                    ["tar", "-x", "--numeric-owner", "-f", "-", "-C", str(rootfs)],
                    stdin=export.stdout,
                    capture_output=True,
                    check=False,
                )
            if export.returncode != 0 or untar.returncode != 0:
                raise BenchError(
                    f"exporting {image} into {rootfs} failed (docker export exit {export.returncode}, "
                    f"tar exit {untar.returncode}: {untar.stderr.decode(errors='replace').strip()[-500:]})"
                )
        finally:
            run(["docker", "rm", "--force", EXPORT_CONTAINER], f"removing {EXPORT_CONTAINER}")
        marker.write_text(image_id, encoding="utf-8")
    data = rootfs / DATA_IN_ROOT.lstrip("/")
    remove_tree(data)
    data.mkdir(mode=0o750, parents=True)
    os.chown(data, ORTHANC_UID, ORTHANC_UID)


@dataclass
class Bare:
    """The bare Orthanc process and what was mounted for it."""

    image: str
    image_config: dict
    service_env: list[str]
    config: dict = field(repr=False)
    password: str = field(repr=False)
    log_path: Path
    rootfs: Path = ROOTFS
    process: subprocess.Popen | None = None
    mounted: list[Path] = field(default_factory=list)

    def _mount(self, target: str, *arguments: str) -> None:
        point = self.rootfs / target.lstrip("/")
        point.mkdir(parents=True, exist_ok=True)
        run(["mount", *arguments, str(point)], f"mounting {point} for the bare Orthanc")
        self.mounted.append(point)

    def start(self) -> Server:
        require_free_ports("bare Orthanc", [HTTP_PORT, DICOM_PORT])
        self.unmount()
        for point in mounts_under(self.rootfs):  # left by a run that was killed
            run(["umount", "--lazy", str(point)], f"unmounting the leftover {point}")
        self._mount("/proc", "-t", "proc", "proc")
        self._mount("/dev", "--bind", "/dev")
        self._mount("/tmp", "-t", "tmpfs", "-o", f"size={TMP_SIZE},mode=1777", "tmpfs")  # noqa: S108 - inside the rootfs

        config_file = self.rootfs / CONFIG_IN_ROOT.lstrip("/")
        config_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(bare_config(self.config), stream, indent=2)
        os.chown(config_file, ORTHANC_UID, ORTHANC_UID)

        env = environment(self.image_config.get("Env") or [], self.service_env)
        working_dir = self.image_config.get("WorkingDir") or "/"
        binary = dict(item.partition("=")[::2] for item in env).get("AUSCAT_ORTHANC_BINARY", "Orthanc")
        command = [
            "chroot", f"--userspec={ORTHANC_UID}:{ORTHANC_UID}", str(self.rootfs),
            "/usr/bin/env", "-i", "-C", working_dir, *env, binary, CONFIG_IN_ROOT,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return Server(
            name="bare",
            http_port=HTTP_PORT,
            dicom_port=DICOM_PORT,
            password=self.password,
            logs=self.logs,
            description=f"pid {self.process.pid}, chroot {self.rootfs}",
            pid=self.process.pid,
        )

    def logs(self) -> str:
        status = ""
        if self.process is not None and self.process.poll() is not None:
            status = f"(the process exited with {self.process.returncode})\n"
        return status + log_tail(self.log_path)

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL) and unmount what was mounted for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)
        self.unmount()

    def unmount(self) -> None:
        while self.mounted:
            point = self.mounted.pop()
            done = subprocess.run(["umount", str(point)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                run(["umount", "--lazy", str(point)], f"unmounting {point}")
