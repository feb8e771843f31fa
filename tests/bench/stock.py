"""Stock Orthanc: the deployed image's Orthanc binary with Orthanc's built-in defaults, in a plain container.

Its configuration names only where data goes, remote access and one user, so every other
setting (PDU length, threads, plugins, ...) is Orthanc's own default, and the container has
no TCP_NODELAY variable: this is what the deployed defaults are compared against.
"""

from __future__ import annotations

import json
import os
import subprocess

from tests.bench.servers import HOST, USERNAME, WORK_ROOT, Server, remove_tree, require_free_ports, run

CONTAINER = "auscat_bench_stock"
LABEL = "org.auscat.bench"
HTTP_PORT = 56042
DICOM_PORT = 56242
DIRECTORY = WORK_ROOT / "stock"
CONFIG_DIR_IN_CONTAINER = "/etc/auscat-bench"
DATA_DIR_IN_CONTAINER = "/var/lib/orthanc/db"
ORTHANC_UID = 4242


def stock_config(password: str) -> dict:
    return {
        "StorageDirectory": DATA_DIR_IN_CONTAINER,
        "IndexDirectory": DATA_DIR_IN_CONTAINER,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USERNAME: password},
    }


def container_logs(lines: int = 40) -> str:
    done = subprocess.run(
        ["docker", "logs", "--tail", str(lines), CONTAINER], capture_output=True, text=True, timeout=60, check=False
    )
    return (done.stdout + done.stderr).strip() or f"(no logs for container {CONTAINER})"


def start(image: str, password: str) -> Server:
    """Start the stock container from ``image`` (a leftover of an earlier run is replaced)."""
    stop()
    require_free_ports("stock Orthanc", [HTTP_PORT, DICOM_PORT])
    data, config = DIRECTORY / "db", DIRECTORY / "config"
    remove_tree(data)
    for directory, mode in ((data, 0o750), (config, 0o700)):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, ORTHANC_UID, ORTHANC_UID)
        directory.chmod(mode)
    config_file = config / "orthanc.json"
    descriptor = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(stock_config(password), stream, indent=2)
    os.chown(config_file, ORTHANC_UID, ORTHANC_UID)
    run(
        [
            "docker", "run", "--detach", "--name", CONTAINER, "--label", f"{LABEL}=stock",
            "--entrypoint", "Orthanc", "--user", f"{ORTHANC_UID}:{ORTHANC_UID}", "--no-healthcheck",
            "--volume", f"{data}:{DATA_DIR_IN_CONTAINER}",
            "--volume", f"{config}:{CONFIG_DIR_IN_CONTAINER}:ro",
            "--publish", f"{HOST}:{HTTP_PORT}:8042", "--publish", f"{HOST}:{DICOM_PORT}:4242",
            image, f"{CONFIG_DIR_IN_CONTAINER}/orthanc.json",
        ],
        f"starting the stock Orthanc container {CONTAINER} from {image}",
    )  # fmt: skip
    return Server(
        name="stock",
        http_port=HTTP_PORT,
        dicom_port=DICOM_PORT,
        password=password,
        logs=container_logs,
        description=f"container {CONTAINER}, {image} with Orthanc's defaults",
    )


def stop() -> None:
    """Remove the stock container if there is one (only ever the one carrying this benchmark's label)."""
    found = run(
        ["docker", "ps", "-aq", "--filter", f"name=^{CONTAINER}$", "--filter", f"label={LABEL}=stock"],
        "looking for the stock container",
    ).split()
    if found:
        run(["docker", "rm", "--force", *found], f"removing container {CONTAINER}")


def remove_data() -> None:
    remove_tree(DIRECTORY)
