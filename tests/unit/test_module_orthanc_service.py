"""The orthanc_service module against a scripted Swarm that answers the docker CLI like a single-node engine."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import orthanc_service  # library/, on sys.path through conftest.py
import pytest

SERVICE = "auscat_orthanc"
OLD = "auscat/orthanc:1.12.3-1"
NEW = "auscat/orthanc:1.12.4-1"
DIGEST = "@sha256:" + "ab" * 32
LABEL = "com.docker.swarm.service.name"


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Task:
    id: str
    image: str
    started_at: float
    healthy_at: float
    gone_at: float = float("inf")

    def running(self, now: float) -> bool:
        return self.started_at <= now < self.gone_at

    def healthy(self, now: float) -> bool:
        return self.running(now) and now >= self.healthy_at


@dataclass
class FakeSwarm:
    """Answers `docker service inspect|scale` and `docker ps` for one replicated service, as the CLI prints them."""

    clock: Clock
    image: str = NEW + DIGEST  # Swarm pins the digest in the spec when it resolves the image
    replicas: int = 1
    update_state: str | None = None  # None: the service was never updated, so Swarm omits UpdateStatus
    update_message: str = ""
    update_until: float = float("inf")  # while update_state is busy, when Swarm marks the update completed
    health_delay: float = 4.0  # seconds from a task's start to its first passing healthcheck
    stop_delay: float = 3.0  # seconds a task takes to shut down
    exists: bool = True
    tasks: list[Task] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def add_task(self, image: str, started_at: float = -60.0, healthy_at: float = -30.0) -> Task:
        task = Task(id=f"{len(self.tasks) + 1:064x}", image=image, started_at=started_at, healthy_at=healthy_at)
        self.tasks.append(task)
        return task

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        assert argv[0] == "/usr/bin/docker"
        args = argv[1:]
        self.calls.append(args)
        if args[:2] == ["service", "inspect"]:
            return self.inspect(args[2])
        if args[:3] == ["service", "scale", "--detach"]:
            name, _, replicas = args[3].partition("=")
            return self.scale(name, int(replicas))
        if args[0] == "ps":
            return self.ps(args[1:])
        if args[:2] == ["service", "ps"]:
            return self.service_ps(args[2:])
        raise AssertionError(f"unexpected docker call {args}")

    def inspect(self, name: str) -> tuple[int, str, str]:
        if name != SERVICE or not self.exists:
            return 1, "[]\n", f"Status: Error: no such service: {name}, Code: 1\n"
        state = self.update_state
        if state in ("updating", "rollback_started") and self.clock() >= self.update_until:
            state = "completed" if state == "updating" else "rollback_completed"
        service: dict = {
            "ID": "kq3x",
            "Spec": {
                "Name": SERVICE,
                "TaskTemplate": {"ContainerSpec": {"Image": self.image}},
                "Mode": {"Replicated": {"Replicas": self.replicas}},
            },
        }
        if state is not None:
            service["UpdateStatus"] = {"State": state, "Message": self.update_message}
        return 0, json.dumps([service], indent=4), ""

    def scale(self, name: str, replicas: int) -> tuple[int, str, str]:
        if name != SERVICE:
            return 1, "", f"Error: No such service: {name}\n"
        now = self.clock()
        self.replicas = replicas
        running = [task for task in self.tasks if task.running(now)]
        for task in running[replicas:]:
            task.gone_at = now + self.stop_delay
        if replicas and not running:
            self.add_task(self.image, started_at=now, healthy_at=now + self.health_delay)
        return 0, f"{name} scaled to {replicas}\n", ""

    def ps(self, args: list[str]) -> tuple[int, str, str]:
        filters = [args[i + 1] for i, arg in enumerate(args) if arg == "--filter"]
        assert "--no-trunc" in args, "full container IDs are returned"
        now = self.clock()
        tasks = [task for task in self.tasks if task.running(now)]
        for value in filters:
            if value == "health=healthy":
                tasks = [task for task in tasks if task.healthy(now)]
            elif value.startswith(f"label={LABEL}="):
                tasks = [task for task in tasks if value == f"label={LABEL}={SERVICE}"]
            else:
                raise AssertionError(f"unexpected filter {value}")
        if "-q" in args:
            return 0, "".join(f"{task.id}\n" for task in tasks), ""
        assert args[args.index("--format") + 1] == "{{.ID}} {{.Image}}"
        return 0, "".join(f"{task.id} {task.image}\n" for task in tasks), ""

    def service_ps(self, args: list[str]) -> tuple[int, str, str]:
        assert args[:2] == ["--no-trunc", SERVICE]
        assert args[args.index("--format") + 1] == "{{.ID}} {{.Image}} {{.DesiredState}}"
        now = self.clock()
        lines = [f"{task.id} {task.image} {'Running' if task.gone_at > now else 'Shutdown'}\n" for task in self.tasks]
        return 0, "".join(lines), ""

    def fail_health(self, image: str, period: float) -> None:
        """Swarm's handling of an image that never becomes healthy: each task is replaced after ``period``."""
        for number in range(1, 50):
            task = self.add_task(image, started_at=period * (number - 1), healthy_at=float("inf"))
            task.gone_at = period * number

    def scaled(self) -> list[str]:
        return [call[3] for call in self.calls if call[:2] == ["service", "scale"]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def swarm(clock: Clock) -> FakeSwarm:
    swarm = FakeSwarm(clock)
    swarm.add_task(NEW + DIGEST)
    return swarm


def run(
    swarm: FakeSwarm,
    state: str,
    image: str | None = None,
    timeout: int = 180,
    check_mode: bool = False,
    max_ended_tasks: int = 0,
):
    task = orthanc_service.ServiceTask(
        orthanc_service.Swarm("/usr/bin/docker", swarm),
        SERVICE,
        timeout,
        check_mode=check_mode,
        sleep=swarm.clock.sleep,
        clock=swarm.clock,
        max_ended_tasks=max_ended_tasks,
    )
    return task.run(state, image)


def test_a_missing_service_asks_for_the_stack_to_be_rolled_out(swarm: FakeSwarm) -> None:
    swarm.exists = False
    message = f"No service {SERVICE} on this host: roll the stack out first with playbooks/site.yml"
    for state in ("healthy", "stopped", "started"):
        with pytest.raises(orthanc_service.ServiceError, match=f"^{re.escape(message)}$"):
            run(swarm, state)


def test_healthy_returns_the_full_container_id_and_the_spec_image_without_digest(swarm: FakeSwarm) -> None:
    result = run(swarm, "healthy", image=NEW)
    assert result == orthanc_service.Result(SERVICE, NEW, 1, swarm.tasks[0].id, changed=False)
    assert len(result.container) == 64
    assert swarm.scaled() == []


def test_healthy_waits_for_the_update_to_finish_and_the_new_task_to_pass_its_healthcheck(
    swarm: FakeSwarm, clock: Clock
) -> None:
    swarm.tasks[0].gone_at = 6.0  # start-first: the old task stays healthy beside the new one until 6 s
    swarm.tasks[0].image = OLD
    new = swarm.add_task(NEW, started_at=2.0, healthy_at=5.0)
    swarm.update_state, swarm.update_until = "updating", 8.0
    result = run(swarm, "healthy", image=NEW)
    assert result.container == new.id
    assert clock.now == 8.0


def test_healthy_waits_until_only_one_task_is_healthy(swarm: FakeSwarm, clock: Clock) -> None:
    swarm.tasks[0].gone_at = 7.0
    new = swarm.add_task(NEW, started_at=-5.0, healthy_at=-1.0)  # start-first overlap
    assert run(swarm, "healthy").container == new.id
    assert clock.now == 7.0


def test_healthy_fails_naming_both_images_when_swarm_rolled_back(swarm: FakeSwarm, clock: Clock) -> None:
    swarm.image = OLD + DIGEST
    swarm.update_state = "rollback_completed"
    swarm.update_message = "rollback completed"
    expected = (
        f"Swarm reports the update of {SERVICE} as 'rollback_completed' (rollback completed) and the service runs "
        f"{OLD} instead of {NEW}. Inspect with: docker service ps --no-trunc {SERVICE}"
    )
    with pytest.raises(orthanc_service.ServiceError, match=f"^{re.escape(expected)}$"):
        run(swarm, "healthy", image=NEW)
    assert clock.now == 0.0, "a settled update is judged at once"


def test_a_paused_update_fails_even_on_the_intended_image(swarm: FakeSwarm) -> None:
    swarm.update_state, swarm.update_message = "paused", "update paused due to failure or early termination"
    with pytest.raises(orthanc_service.ServiceError, match=r"as 'paused' \(update paused .*runs auscat/orthanc"):
        run(swarm, "healthy", image=NEW)


def test_an_update_stuck_updating_times_out_with_the_hint(swarm: FakeSwarm, clock: Clock) -> None:
    swarm.update_state, swarm.update_message = "updating", "update in progress"
    with pytest.raises(orthanc_service.ServiceError) as failure:
        run(swarm, "healthy", image=NEW, timeout=30)
    assert str(failure.value) == (
        f"Timed out after 30 s waiting for Swarm to finish updating {SERVICE} "
        f"(update state 'updating': update in progress). Inspect with: docker service ps --no-trunc {SERVICE}"
    )
    assert clock.now == 30.0


def test_a_task_that_never_becomes_healthy_times_out_naming_what_was_awaited(swarm: FakeSwarm) -> None:
    swarm.tasks[0].healthy_at = float("inf")
    expected = (
        f"Timed out after 20 s waiting for exactly one healthy task of {SERVICE} running {NEW} "
        f"(0 healthy container(s)). Inspect with: docker service ps --no-trunc {SERVICE}"
    )
    with pytest.raises(orthanc_service.ServiceError, match=f"^{re.escape(expected)}$"):
        run(swarm, "healthy", image=NEW, timeout=20)


def test_an_image_whose_tasks_keep_failing_their_health_check_fails_before_the_timeout(
    swarm: FakeSwarm, clock: Clock
) -> None:
    swarm.tasks.clear()
    swarm.fail_health(NEW + DIGEST, period=15.0)
    with pytest.raises(orthanc_service.ServiceError, match=f"^2 tasks of {SERVICE} on {re.escape(NEW)} ended"):
        run(swarm, "healthy", image=NEW, timeout=180, max_ended_tasks=2)
    assert clock.now == pytest.approx(30.0, abs=1.5)


def test_tasks_that_ended_before_the_wait_do_not_count(swarm: FakeSwarm, clock: Clock) -> None:
    old = swarm.add_task(NEW + DIGEST, started_at=-90.0, healthy_at=float("inf"))
    old.gone_at = -61.0
    assert run(swarm, "healthy", image=NEW, max_ended_tasks=1).container == swarm.tasks[0].id


def test_a_healthy_task_on_another_image_is_not_accepted(swarm: FakeSwarm) -> None:
    swarm.tasks[0].image = OLD
    with pytest.raises(orthanc_service.ServiceError, match=re.escape(f"(the healthy container runs {OLD})")):
        run(swarm, "healthy", image=NEW, timeout=5)


def test_healthy_of_a_service_scaled_to_zero_fails_at_once(swarm: FakeSwarm, clock: Clock) -> None:
    swarm.replicas = 0
    with pytest.raises(orthanc_service.ServiceError, match=r"scaled to 0 replicas.*start it with state=started"):
        run(swarm, "healthy")
    assert clock.now == 0.0


def test_stopped_scales_to_zero_and_waits_until_the_containers_are_gone(swarm: FakeSwarm, clock: Clock) -> None:
    result = run(swarm, "stopped")
    assert result == orthanc_service.Result(SERVICE, NEW, 0, "", changed=True)
    assert swarm.scaled() == [f"{SERVICE}=0"]
    assert clock.now == swarm.stop_delay
    assert not any(task.running(clock.now) for task in swarm.tasks)


def test_stopped_is_unchanged_when_the_service_is_already_stopped(swarm: FakeSwarm) -> None:
    swarm.replicas, swarm.tasks[0].gone_at = 0, -1.0
    assert run(swarm, "stopped") == orthanc_service.Result(SERVICE, NEW, 0, "", changed=False)
    assert swarm.scaled() == []


def test_stopped_times_out_when_a_container_does_not_go(swarm: FakeSwarm) -> None:
    swarm.stop_delay = float("inf")
    expected = (
        f"Timed out after 10 s waiting for every task of {SERVICE} to stop (1 container(s) still running). "
        f"Inspect with: docker service ps --no-trunc {SERVICE}"
    )
    with pytest.raises(orthanc_service.ServiceError, match=f"^{re.escape(expected)}$"):
        run(swarm, "stopped", timeout=10)


def test_started_scales_to_one_and_waits_until_the_task_is_healthy(swarm: FakeSwarm, clock: Clock) -> None:
    swarm.replicas, swarm.tasks[0].gone_at = 0, -1.0
    result = run(swarm, "started")
    assert swarm.scaled() == [f"{SERVICE}=1"]
    assert result == orthanc_service.Result(SERVICE, NEW, 1, swarm.tasks[1].id, changed=True)
    assert clock.now == swarm.health_delay


def test_started_is_unchanged_when_one_task_is_already_healthy(swarm: FakeSwarm) -> None:
    result = run(swarm, "started", image=NEW)
    assert result == orthanc_service.Result(SERVICE, NEW, 1, swarm.tasks[0].id, changed=False)
    assert swarm.scaled() == []


def test_started_does_not_start_a_service_on_another_image(swarm: FakeSwarm) -> None:
    swarm.replicas, swarm.tasks[0].gone_at = 0, -1.0
    with pytest.raises(orthanc_service.ServiceError, match=f"runs {re.escape(NEW)} instead of {re.escape(OLD)}"):
        run(swarm, "started", image=OLD)
    assert swarm.scaled() == []


def test_check_mode_reports_the_scale_without_running_it(swarm: FakeSwarm, clock: Clock) -> None:
    assert run(swarm, "stopped", check_mode=True).changed
    swarm.replicas, swarm.tasks[0].gone_at = 0, -1.0
    assert run(swarm, "started", check_mode=True) == orthanc_service.Result(SERVICE, NEW, 1, "", changed=True)
    assert swarm.scaled() == []
    assert clock.now == 0.0


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], swarm: FakeSwarm, args: dict
) -> tuple[int, dict]:
    """Runs the module's main() as Ansible would, with run_command answered by the fake Swarm."""
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args

    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False: f"/usr/bin/{name}")
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kwargs: swarm(argv))
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        orthanc_service.main()
    return int(exited.value.code or 0), json.loads(capsys.readouterr().out)


def test_main_exits_with_the_healthy_container(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], swarm: FakeSwarm
) -> None:
    code, output = run_main(monkeypatch, capsys, swarm, {"name": SERVICE, "image": NEW})
    assert code == 0
    assert output["changed"] is False
    assert {key: output[key] for key in ("name", "image", "replicas", "container")} == {
        "name": SERVICE,
        "image": NEW,
        "replicas": 1,
        "container": swarm.tasks[0].id,
    }


def test_main_fails_with_the_message_of_the_missing_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], swarm: FakeSwarm
) -> None:
    swarm.exists = False
    code, output = run_main(monkeypatch, capsys, swarm, {"name": SERVICE, "state": "started"})
    assert code == 1
    assert output["failed"] is True
    assert output["msg"].startswith(f"No service {SERVICE} on this host")


def test_main_rejects_an_image_for_state_stopped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], swarm: FakeSwarm
) -> None:
    code, output = run_main(monkeypatch, capsys, swarm, {"name": SERVICE, "state": "stopped", "image": NEW})
    assert code == 1
    assert "image applies only to state=healthy or started" in output["msg"]
    assert swarm.calls == []
