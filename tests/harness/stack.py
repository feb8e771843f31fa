"""Probes that need the Docker engine of the host running the stack.

A probe container joins the stack network and runs ``dicom.py`` there, addressing
``orthanc:4242`` exactly as CTP does. It uses the AusCAT image (which has Python)
with pydicom and pynetdicom copied in read-only from this environment: no
registry and no network beyond the stack network are needed.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import time
from pathlib import Path

import docker

HEALTH_TIMEOUT_SECONDS = 240
ATTACH_ATTEMPTS = 3
ATTACH_RETRY_SECONDS = 5


def _copy_distribution(name: str, target: Path) -> None:
    distribution = importlib.metadata.distribution(name)
    root = Path(str(distribution.locate_file("")))
    for entry in {Path(str(file)).parts[0] for file in distribution.files or []}:
        source = root / entry
        if source.is_dir():
            shutil.copytree(source, target / entry, dirs_exist_ok=True)


def prepare_probe_dir(directory: Path) -> Path:
    """pydicom, pynetdicom and the sender script, ready to mount into a container."""
    lib = directory / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    for name in ("pydicom", "pynetdicom"):
        _copy_distribution(name, lib)
    shutil.copy(Path(__file__).with_name("dicom.py"), lib / "auscat_dicom.py")
    return directory


def service_image(client: docker.DockerClient, service: str) -> str:
    spec = client.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    return spec["Image"].split("@")[0]


def run_on_stack_network(
    client: docker.DockerClient, service: str, network: str, probe_dir: Path, args: list[str], ip: str | None = None
) -> tuple[int, str]:
    """Run the sender in a throwaway container on the stack network, at address ``ip`` if given
    (an allow-listed sender's); returns (exit code, output).

    Attaching to a Swarm overlay network can time out in the engine ("attaching to network failed
    ... context deadline exceeded"), for instance while the previous holder of the same address is
    still being detached; the sender then never ran, so the attachment is tried again."""
    endpoint = client.api.create_endpoint_config(ipv4_address=ip) if ip else None
    for attempt in range(1, ATTACH_ATTEMPTS + 1):
        container = client.containers.create(
            service_image(client, service),
            entrypoint=["python3", "-m", "auscat_dicom", *args],
            environment={"PYTHONPATH": "/probe/lib"},
            network=network,
            networking_config={network: endpoint} if endpoint else None,
            volumes={str(probe_dir): {"bind": "/probe", "mode": "ro"}},
            labels={"org.auscat.probe": "true"},
        )
        try:
            try:
                container.start()
            except docker.errors.APIError as error:
                if "attaching to network failed" not in str(error) or attempt == ATTACH_ATTEMPTS:
                    raise
                time.sleep(ATTACH_RETRY_SECONDS)
                continue
            result = container.wait(timeout=300)
            return int(result["StatusCode"]), container.logs().decode()
        finally:
            container.remove(force=True)
    raise AssertionError("not reached: the last attempt returns or raises")


def healthy_task_container(client: docker.DockerClient, service: str):
    containers = client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={service}", "health": "healthy"}
    )
    return containers[0] if len(containers) == 1 else None


def task_logs(client: docker.DockerClient, service: str) -> bytes:
    """The logs of every task container of a service still on this host, oldest container first.

    Read per container: ``docker service logs`` can hang on a long log (moby/moby#38640).
    """
    containers = client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={service}"})
    containers.sort(key=lambda container: container.attrs["Created"])
    return b"".join(container.logs(stdout=True, stderr=True) for container in containers)


def wait_until_healthy(client: docker.DockerClient, service: str, not_container: str | None = None) -> str:
    """Wait for one healthy task container (other than ``not_container``); returns its id."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            container = healthy_task_container(client, service)
        except docker.errors.NotFound:
            container = None
        if container is not None and container.id != not_container:
            return container.id
        time.sleep(2)
    raise TimeoutError(f"service {service} had no healthy task within {HEALTH_TIMEOUT_SECONDS} s")


def docker_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=300)


def wait_until_gone(client: docker.DockerClient, service: str, network: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        remaining = client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={service}"})
        if not remaining and all(n.name != network for n in client.networks.list(names=[network])):
            return
        time.sleep(1)
    raise TimeoutError(f"stack of {service} still had containers or network {network} after removal")


def wait_until_stopped(client: docker.DockerClient, service: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"}):
            return
        time.sleep(1)
    raise TimeoutError(f"service {service} still had running tasks after scaling to 0")
