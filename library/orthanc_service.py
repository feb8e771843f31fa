#!/usr/bin/python
"""Ansible module orthanc_service: wait for, stop or start one Swarm service of the Orthanc stack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

try:
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # imported as a library by the backup helpers on a host without Ansible
    AnsibleModule = None

DOCUMENTATION = r"""
---
module: orthanc_service
short_description: Wait until a Swarm service of the Orthanc stack is healthy, or stop or start it
description:
  - Waits until Docker Swarm has finished updating a service and exactly one task of it is healthy
    (O(state=healthy)), scales it to no task and waits until its containers are gone (O(state=stopped)),
    or scales it to one task and waits until that task is healthy (O(state=started)).
  - Scaling does not change the stack definition, so the next C(docker stack deploy) restores the
    replica count of the stack file.
  - Talks to the engine only through the C(docker) CLI, so the host needs no Python Docker SDK. Run it on a
    Swarm manager that also runs the service's task, as on the single-node hosts of this project.
  - All waiting of one task shares one O(timeout); the engine is polled once a second.
options:
  name:
    description:
      - Name of the Swarm service, for example C(auscat_orthanc) or C(auscat_postgresql).
    type: str
    required: true
  state:
    description:
      - V(healthy) waits and changes nothing.
      - V(stopped) scales the service to 0 replicas unless it is there already.
      - V(started) scales the service to 1 replica unless it is there already.
    type: str
    choices: [healthy, stopped, started]
    default: healthy
  image:
    description:
      - Image (C(repository:tag), no digest) the service and its healthy task must run.
      - With O(state=healthy) and no O(image), the healthy task may run any image; with O(state=started) and no
        O(image), it must run the image of the service spec.
      - Only with O(state=healthy) or O(state=started).
    type: str
  timeout:
    description:
      - Seconds to wait in all before failing.
    type: int
    default: 180
  max_ended_tasks:
    description:
      - With O(state=healthy) or O(state=started), fail as soon as this many tasks of the service (on O(image),
        when given) have ended while the module waited for a healthy one, instead of waiting out O(timeout).
      - Swarm replaces a task that fails its health check; an image that never becomes healthy is then found
        after a few health checks, not after O(timeout). V(0) waits out O(timeout).
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: O(state=healthy) only reads, so it waits as usual; the other states report what they would change.
  diff_mode:
    support: none
notes:
  - Fails when the service does not exist, when Swarm paused or rolled back its update, or when it runs another
    image than O(image); each message ends with the command that shows why.
requirements:
  - the docker CLI on the managed host
author:
  - AusCAT Orthanc maintainers
"""

EXAMPLES = r"""
- name: Wait until Orthanc is healthy on the image just deployed
  orthanc_service:
    name: auscat_orthanc
    image: "{{ orthanc_service_image }}"
  register: __orthanc_service

- name: Stop Orthanc before copying its data
  orthanc_service:
    name: auscat_orthanc
    state: stopped

- name: Start the PostgreSQL index again
  orthanc_service:
    name: auscat_postgresql
    state: started
    timeout: 120
"""

RETURN = r"""
name:
  description: Name of the service.
  returned: always
  type: str
  sample: auscat_orthanc
image:
  description: Image of the service spec, without digest.
  returned: always
  type: str
  sample: auscat/orthanc:1.12.4-1
replicas:
  description: Replicas of the service spec after the task (in check mode, what they would be).
  returned: always
  type: int
  sample: 1
container:
  description: Full ID of the healthy container, or an empty string with O(state=stopped) and in check mode
    when the task would scale.
  returned: always
  type: str
  sample: 3f6c0a1d9e2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5
"""

LABEL = "com.docker.swarm.service.name"
# Swarm omits UpdateStatus until a service is first updated; that counts as a finished update.
NO_UPDATE = "completed"
BUSY_UPDATE_STATES = ("updating", "rollback_started")
SETTLED_UPDATE_STATES = ("completed", "rollback_completed")

Runner = Callable[[list[str]], tuple[int, str, str]]
T = TypeVar("T")


class ServiceError(Exception):
    """A failure whose message says what is wrong and how to look closer."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    replicas: int | None  # None for a global service
    update_state: str
    update_message: str


@dataclass(frozen=True)
class Container:
    id: str
    image: str


@dataclass(frozen=True)
class Result:
    name: str
    image: str
    replicas: int | None
    container: str
    changed: bool


def strip_digest(image: str) -> str:
    return image.split("@", 1)[0]


class Swarm:
    """The few docker CLI calls the module needs; `run` executes one argv and returns (rc, stdout, stderr)."""

    def __init__(self, docker: str, run: Runner) -> None:
        self.docker = docker
        self.run = run

    def _docker(self, *args: str) -> tuple[int, str, str]:
        return self.run([self.docker, *args])

    def _checked(self, *args: str) -> str:
        rc, out, err = self._docker(*args)
        if rc != 0:
            raise ServiceError(f"`docker {' '.join(args)}` failed with rc {rc}: {(err or out).strip()}")
        return out

    def inspect(self, name: str) -> ServiceSpec:
        rc, out, err = self._docker("service", "inspect", name)
        if rc != 0:
            # The CLI prints [] and "no such service" for a missing one; anything else is the engine's fault.
            if "no such service" in err.lower() or out.strip() == "[]":
                raise ServiceError(f"No service {name} on this host: roll the stack out first with playbooks/site.yml")
            raise ServiceError(f"`docker service inspect {name}` failed with rc {rc}: {(err or out).strip()}")
        try:
            service = json.loads(out)[0]
            spec = service["Spec"]
            image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        except (ValueError, LookupError, TypeError) as exc:
            raise ServiceError(f"`docker service inspect {name}` printed no service spec: {exc!r}") from exc
        replicated = spec.get("Mode", {}).get("Replicated")
        update = service.get("UpdateStatus") or {}
        return ServiceSpec(
            name=name,
            image=strip_digest(image),
            replicas=None if replicated is None else int(replicated.get("Replicas", 0)),
            update_state=update.get("State") or NO_UPDATE,
            update_message=update.get("Message", ""),
        )

    def containers(self, name: str, healthy: bool) -> list[Container]:
        filters = ["--filter", f"label={LABEL}={name}"]
        if healthy:
            filters += ["--filter", "health=healthy"]
        out = self._checked("ps", "--no-trunc", *filters, "--format", "{{.ID}} {{.Image}}")
        found = []
        for line in out.splitlines():
            if line.strip():
                container_id, _, image = line.strip().partition(" ")
                found.append(Container(id=container_id, image=strip_digest(image.strip())))
        return found

    def scale(self, name: str, replicas: int) -> None:
        self._checked("service", "scale", "--detach", f"{name}={replicas}")

    def ended_tasks(self, name: str, image: str | None) -> set[str]:
        """IDs of the service's tasks Swarm has shut down (on ``image``, when given)."""
        out = self._checked("service", "ps", "--no-trunc", name, "--format", "{{.ID}} {{.Image}} {{.DesiredState}}")
        ended = set()
        for line in out.splitlines():
            task_id, task_image, desired = [*line.split(), "", "", ""][:3]
            if desired == "Shutdown" and (image is None or strip_digest(task_image) == image):
                ended.add(task_id)
        return ended


class ServiceTask:
    """One run of the module: every wait shares the deadline set when `run` starts."""

    def __init__(
        self,
        swarm: Swarm,
        name: str,
        timeout: int,
        check_mode: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_seconds: float = 1.0,
        max_ended_tasks: int = 0,
    ) -> None:
        self.max_ended_tasks = max_ended_tasks
        self.swarm = swarm
        self.name = name
        self.timeout = timeout
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.started_at = clock()

    def run(self, state: str, image: str | None = None) -> Result:
        self.started_at = self.clock()
        if state == "healthy":
            return self.healthy(image)
        if state == "stopped":
            return self.stopped()
        if state == "started":
            return self.started(image)
        raise ServiceError(f"state {state!r} is none of healthy, stopped, started")

    def healthy(self, image: str | None) -> Result:
        spec = self._settled(image)
        if spec.replicas == 0:
            raise ServiceError(
                f"Service {self.name} is scaled to 0 replicas, so no task of it can become healthy: "
                "start it with state=started"
            )
        container = self._await_healthy(image)
        return Result(self.name, spec.image, spec.replicas, container.id, changed=False)

    def stopped(self) -> Result:
        spec = self._replicated(self.swarm.inspect(self.name))
        scale = spec.replicas != 0
        if not scale and not self.swarm.containers(self.name, healthy=False):
            return Result(self.name, spec.image, 0, "", changed=False)
        if self.check_mode:
            return Result(self.name, spec.image, 0, "", changed=scale)
        if scale:
            self.swarm.scale(self.name, 0)

        def gone() -> tuple[bool | None, str]:
            running = self.swarm.containers(self.name, healthy=False)
            return (True if not running else None), f"{len(running)} container(s) still running"

        self._wait(f"every task of {self.name} to stop", gone)
        return Result(self.name, spec.image, 0, "", changed=scale)

    def started(self, image: str | None) -> Result:
        spec = self._replicated(self._settled(image))
        scale = spec.replicas != 1
        if scale:
            if self.check_mode:
                return Result(self.name, spec.image, 1, "", changed=True)
            self.swarm.scale(self.name, 1)
            spec = self._settled(image)  # scaling is a service update of its own
        container = self._await_healthy(image or spec.image)
        return Result(self.name, spec.image, spec.replicas, container.id, changed=scale)

    def _replicated(self, spec: ServiceSpec) -> ServiceSpec:
        if spec.replicas is None:
            raise ServiceError(f"Service {self.name} runs in global mode, so it cannot be scaled to 0 or 1 replicas")
        return spec

    def _settled(self, image: str | None) -> ServiceSpec:
        """Waits until Swarm no longer updates the service, then insists it kept the intended image."""

        def probe() -> tuple[ServiceSpec | None, str]:
            spec = self.swarm.inspect(self.name)
            done = spec.update_state not in BUSY_UPDATE_STATES
            return (spec if done else None), f"update state '{spec.update_state}': {spec.update_message}"

        spec = self._wait(f"Swarm to finish updating {self.name}", probe)
        wrong_image = image is not None and spec.image != image
        if wrong_image or spec.update_state not in SETTLED_UPDATE_STATES:
            instead = f" instead of {image}" if image is not None else ""
            raise ServiceError(
                f"Swarm reports the update of {self.name} as '{spec.update_state}' ({spec.update_message}) "
                f"and the service runs {spec.image}{instead}. Inspect with: docker service ps --no-trunc {self.name}"
            )
        return spec

    def _await_healthy(self, image: str | None) -> Container:
        ended_before = self.swarm.ended_tasks(self.name, image) if self.max_ended_tasks else set()

        def probe() -> tuple[Container | None, str]:
            if self.max_ended_tasks:
                ended = self.swarm.ended_tasks(self.name, image) - ended_before
                if len(ended) >= self.max_ended_tasks:
                    raise ServiceError(
                        f"{len(ended)} tasks of {self.name}{' on ' + image if image else ''} ended without one "
                        f"becoming healthy. Inspect with: docker service ps --no-trunc {self.name}"
                    )
            healthy = self.swarm.containers(self.name, healthy=True)
            if len(healthy) != 1:
                return None, f"{len(healthy)} healthy container(s)"
            if image is not None and healthy[0].image != image:
                return None, f"the healthy container runs {healthy[0].image}"
            return healthy[0], ""

        running = f" running {image}" if image else ""
        return self._wait(f"exactly one healthy task of {self.name}{running}", probe)

    def _wait(self, awaited: str, probe: Callable[[], tuple[T | None, str]]) -> T:
        """Polls until `probe` returns a value; the string it returns beside says what it saw last."""
        deadline = self.started_at + self.timeout
        while True:
            value, seen = probe()
            if value is not None:
                return value
            if self.clock() >= deadline:
                waited = self.clock() - self.started_at
                raise ServiceError(
                    f"Timed out after {waited:.0f} s waiting for {awaited} ({seen}). "
                    f"Inspect with: docker service ps --no-trunc {self.name}"
                )
            self.sleep(self.poll_seconds)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["healthy", "stopped", "started"], "default": "healthy"},
            "image": {"type": "str"},
            "timeout": {"type": "int", "default": 180},
            "max_ended_tasks": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    params: dict[str, Any] = module.params
    if params["state"] == "stopped" and params["image"]:
        module.fail_json(msg=f"orthanc_service {params['name']}: image applies only to state=healthy or started")
    if params["image"] and "@" in params["image"]:
        module.fail_json(msg=f"orthanc_service {params['name']}: image {params['image']} must name no digest")
    docker = module.get_bin_path("docker", required=True)

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return rc, out, err

    task = ServiceTask(
        Swarm(docker, run),
        params["name"],
        params["timeout"],
        check_mode=module.check_mode,
        max_ended_tasks=params["max_ended_tasks"],
    )
    try:
        result = task.run(params["state"], params["image"])
    except ServiceError as exc:
        module.fail_json(msg=str(exc), name=params["name"])
    module.exit_json(**asdict(result))


if __name__ == "__main__":
    main()
