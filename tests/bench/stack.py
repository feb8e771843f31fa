"""The benchmark's own stacks, rolled out by the real site playbook with the inventories under tests/bench/inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.bench.servers import BenchError, Server, remove_tree, run

REPOSITORY = Path(__file__).resolve().parents[2]
INVENTORIES = Path(__file__).resolve().parent / "inventory"
PLAYBOOK_TIMEOUT_SECONDS = 1800  # the first rollout on a host may build the image
REMOVAL_TIMEOUT_SECONDS = 120
SECRET_LABEL = "org.auscat.stack"  # noqa: S105 - a label name, not a password
MERGED_CONFIG = "/run/auscat/orthanc.json"


def write_users_file(directory: Path, passwords: dict[str, str]) -> Path:
    """The playbook's -e @file with the users' passwords (orthanc_registered_users), readable by root only."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "users.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump({"orthanc_registered_users": passwords}, stream)
    return path


@dataclass(frozen=True)
class Stack:
    """A stack as its inventory describes it."""

    backend: str
    name: str
    stack_dir: Path
    data_dir: Path
    http_port: int
    dicom_port: int
    inventory: Path

    @classmethod
    def for_backend(cls, backend: str) -> Stack:
        inventory = INVENTORIES / backend / "hosts.yml"
        variables_file = INVENTORIES / backend / "group_vars" / "all" / "orthanc.yml"
        try:
            variables = yaml.safe_load(variables_file.read_text(encoding="utf-8"))
        except OSError as error:
            raise BenchError(f"no inventory for backend {backend!r}: cannot read {variables_file}: {error}") from None
        return cls(
            backend=backend,
            name=variables["orthanc_stack_name"],
            stack_dir=Path(variables["orthanc_stack_dir"]),
            data_dir=Path(variables["orthanc_data_dir"]),
            http_port=int(variables["orthanc_http_port"]),
            dicom_port=int(variables["orthanc_dicom_port"]),
            inventory=inventory,
        )

    @property
    def service(self) -> str:
        return f"{self.name}_orthanc"

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def server(self, name: str, password: str) -> Server:
        return Server(
            name=name,
            http_port=self.http_port,
            dicom_port=self.dicom_port,
            password=password,
            logs=lambda: service_logs(self.service),
            description=f"service {self.service}",
        )


def playbook_command(stack: Stack, vars_file: Path, playbook: str = "site.yml", extra: dict | None = None) -> list[str]:
    """ansible-playbook of this virtualenv, the stack's inventory, a playbook; secrets only via -e @file."""
    executable = Path(sys.executable).parent / "ansible-playbook"
    program = str(executable) if executable.exists() else "ansible-playbook"
    command = [program, "-i", str(stack.inventory), f"playbooks/{playbook}", "-e", f"@{vars_file}"]
    return command + (["-e", json.dumps(extra)] if extra else [])


def deploy(
    stack: Stack, vars_file: Path, log_path: Path, playbook: str = "site.yml", extra: dict | None = None
) -> None:
    """Run a playbook (the site playbook: roll the stack out) on the stack; its output goes to ``log_path``."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPOSITORY / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        try:
            done = subprocess.run(
                playbook_command(stack, vars_file, playbook, extra),
                cwd=REPOSITORY,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=PLAYBOOK_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{playbook} on {stack.name} did not finish within {PLAYBOOK_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-30:])
        raise BenchError(
            f"{playbook} on stack {stack.name} ({stack.backend}) with {stack.inventory} failed "
            f"(exit {done.returncode}); "
            f"full output in {log_path}:\n{tail}\n--- docker service logs {stack.service} ---\n"
            f"{service_logs(stack.service)}"
        )


def service_logs(service: str, lines: int = 40) -> str:
    """The last lines of a service's logs; never raises (it is used inside error messages)."""
    done = subprocess.run(
        ["docker", "service", "logs", "--tail", str(lines), "--no-task-ids", service],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return (done.stdout + done.stderr).strip() or f"(no logs for {service})"


def container_spec(stack: Stack) -> dict:
    """The service's ContainerSpec (Image, Env, User, ...)."""
    output = run(
        ["docker", "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}", stack.service],
        f"reading the service {stack.service}",
    )
    return json.loads(output)


def image_of(stack: Stack) -> str:
    """The image reference the service runs, without a digest."""
    return container_spec(stack)["Image"].split("@")[0]


def running_container(stack: Stack) -> str:
    output = run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={stack.service}"],
        f"finding the running container of {stack.service}",
    )
    containers = output.split()
    if not containers:
        raise BenchError(f"{stack.service} has no running container\n{service_logs(stack.service)}")
    return containers[0]


def gateway_address(stack: Stack) -> str:
    """The running container's address on docker_gwbridge, where its ports answer without docker-proxy."""
    container = running_container(stack)
    sandbox = run(
        ["docker", "inspect", "--format", "{{.NetworkSettings.SandboxID}}", container],
        f"inspecting the container of {stack.service}",
    ).strip()
    endpoints = json.loads(
        run(
            ["docker", "network", "inspect", "--format", "{{json .Containers}}", "docker_gwbridge"],
            "inspecting docker_gwbridge",
        )
    )
    for endpoint in endpoints.values():
        if endpoint.get("Name") == f"gateway_{sandbox[:12]}":
            return endpoint["IPv4Address"].split("/")[0]
    raise BenchError(f"the container of {stack.service} has no address on docker_gwbridge (sandbox {sandbox[:12]})")


def merged_config(stack: Stack) -> dict:
    """The configuration the service's Orthanc runs with (it holds the password: never print it)."""
    container = running_container(stack)
    output = run(["docker", "exec", container, "cat", MERGED_CONFIG], f"reading {MERGED_CONFIG} of {stack.service}")
    return json.loads(output)


def remove(stack: Stack) -> None:
    """Remove the stack, its secrets and its stack directory; the data directory is left to the caller."""
    stacks = run(["docker", "stack", "ls", "--format", "{{.Name}}"], "listing stacks").split()
    if stack.name in stacks:
        run(["docker", "stack", "rm", stack.name], f"removing stack {stack.name}")
    deadline = time.monotonic() + REMOVAL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        leftovers = run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack.name}"],
            f"listing the containers of {stack.name}",
        ).split()
        networks = run(
            ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack.name}"],
            f"listing the networks of {stack.name}",
        ).split()
        if not leftovers and not networks:
            break
        time.sleep(2)
    else:
        raise BenchError(
            f"stack {stack.name} still has containers or networks {REMOVAL_TIMEOUT_SECONDS} s after removal"
        )
    _remove_secrets(stack.name, deadline + REMOVAL_TIMEOUT_SECONDS)
    remove_tree(stack.stack_dir)


def _remove_secrets(stack_name: str, deadline: float) -> None:
    """Secrets labelled for the stack or named after it; a secret in use by a stopping task is retried."""
    while True:
        listing = run(
            ["docker", "secret", "ls", "--format", '{{.Name}}\t{{.Label "' + SECRET_LABEL + '"}}'],
            "listing secrets",
        )
        names = [
            name
            for name, _, label in (line.partition("\t") for line in listing.splitlines())
            if label == stack_name or name.startswith(f"{stack_name}_")
        ]
        if not names:
            return
        done = subprocess.run(["docker", "secret", "rm", *names], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"cannot remove the secrets of {stack_name}: {done.stderr.strip()}")
        time.sleep(2)
