"""The orthanc_image_builds module against a scripted engine that answers the docker CLI as it prints."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import orthanc_image_builds  # library/, on sys.path through conftest.py
import pytest
from orthanc_image_builds import BuildsError, Engine, release_of, survey

NAME = "auscat/orthanc"
RELEASE = "1.13.0-7"
SERVICE = "auscat_orthanc"
INPUTS = "0f3a9c2e5b7d1e4a"
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC).timestamp()


@dataclass
class FakeEngine:
    """Images by reference and one service's image, answered as `docker image ls|inspect` and `service inspect`."""

    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_image: str | None = None  # None: no such service
    fail_ls: bool = False
    calls: list[list[str]] = field(default_factory=list)

    def add(self, tag: str, built: str, *, release: str = RELEASE, inputs: str = INPUTS, image_id: str = "") -> str:
        ref = f"{NAME}:{tag}"
        labels = {"org.auscat.release": release, "org.auscat.inputs": inputs, "org.auscat.packages.sha256": "9b" * 32}
        if built:
            labels["org.auscat.built"] = built
        self.images[ref] = {
            "Id": image_id or f"sha256:{len(self.images) + 1:064x}",
            "Created": "2026-11-01T00:00:00.123456789Z",
            "Config": {"Labels": labels},
        }
        return ref

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        assert argv[0] == "/usr/bin/docker"
        args = argv[1:]
        self.calls.append(args)
        if args[:2] == ["image", "ls"]:
            if self.fail_ls:
                return 1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
            wanted = args[args.index("--filter") + 1].removeprefix("label=org.auscat.release=")
            refs = [
                ref
                for ref, image in self.images.items()
                if ref.startswith(f"{args[-1]}:") and image["Config"]["Labels"].get("org.auscat.release") == wanted
            ]
            # docker prints an untagged image of the repository as <repository>:<none>
            return 0, "".join(f"{ref}\n" for ref in refs) + f"{NAME}:<none>\n", ""
        if args[:2] == ["image", "inspect"]:
            missing = [ref for ref in args[2:] if ref not in self.images]
            if missing:
                return 1, "[]", f"Error response from daemon: No such image: {missing[0]}"
            return 0, json.dumps([self.images[ref] for ref in args[2:]]), ""
        if args[:2] == ["service", "inspect"]:
            if self.service_image is None:
                return 1, "", f"Error response from daemon: service {args[-1]} not found"
            spec = {"ContainerSpec": {"Image": self.service_image}}
            return 0, json.dumps(spec) + "\n", ""
        raise AssertionError(f"unexpected docker call {args}")


def run(engine: FakeEngine, inputs: str = INPUTS, service: str = SERVICE) -> dict[str, Any]:
    return survey(Engine("/usr/bin/docker", engine), NAME, RELEASE, inputs, service, NOW)


def test_a_first_build_is_tagged_with_the_day() -> None:
    result = run(FakeEngine())
    assert result == {"builds": [], "running": {}, "reuse": "", "next_tag": "1.13.0-7.20261202"}


def test_a_second_build_on_the_same_day_gets_a_serial() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261202", "2026-12-02T08:00:00Z")
    engine.add("1.13.0-7.20261202.2", "2026-12-02T09:00:00Z")
    assert run(engine)["next_tag"] == "1.13.0-7.20261202.3"


def test_builds_are_listed_newest_first_with_their_age() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261101", "2026-11-01T12:00:00Z")
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z")
    engine.add("1.13.0-7.20261120", "2026-11-20T00:00:00Z")
    builds = run(engine)["builds"]
    assert [build["tag"] for build in builds] == ["1.13.0-7.20261201", "1.13.0-7.20261120", "1.13.0-7.20261101"]
    assert [build["age_days"] for build in builds] == [1.0, 12.5, 31.0]


def test_the_release_alias_and_other_tags_are_not_builds() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z", image_id="sha256:" + "aa" * 32)
    engine.add("1.13.0-7", "2026-12-01T12:00:00Z", image_id="sha256:" + "aa" * 32)  # the alias of the newest build
    engine.add("1.13.0-7.candidate", "2026-12-01T13:00:00Z")
    assert [build["tag"] for build in run(engine)["builds"]] == ["1.13.0-7.20261201"]


def test_only_builds_of_the_release_are_listed() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z")
    engine.add("1.12.7-7.20261201", "2026-12-01T12:00:00Z", release="1.12.7-7")
    assert [build["release"] for build in run(engine)["builds"]] == [RELEASE]


def test_the_build_the_service_runs_is_kept_even_when_the_inputs_changed() -> None:
    """A refreshed build, made from the same inputs as an older one, is not rolled back by the next rollout."""
    engine = FakeEngine()
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z", inputs="old-inputs")
    engine.add("1.13.0-7.20261202", "2026-12-02T08:00:00Z")
    engine.service_image = f"{NAME}:1.13.0-7.20261201@sha256:" + "cd" * 32
    result = run(engine)
    assert result["reuse"] == f"{NAME}:1.13.0-7.20261201"
    assert result["running"]["tag"] == "1.13.0-7.20261201"
    assert result["running"]["release"] == RELEASE


def test_a_service_on_another_release_gets_the_newest_build_of_the_current_inputs() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261120", "2026-11-20T12:00:00Z")
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z")
    engine.add("1.13.0-7.20261202", "2026-12-02T08:00:00Z", inputs="other-inputs")
    engine.add("1.12.7-7.20261101", "2026-11-01T12:00:00Z", release="1.12.7-7")
    engine.service_image = f"{NAME}:1.12.7-7.20261101"
    result = run(engine)
    assert result["reuse"] == f"{NAME}:1.13.0-7.20261201"
    assert result["running"]["release"] == "1.12.7-7"


def test_no_build_of_the_current_inputs_means_a_new_build() -> None:
    engine = FakeEngine()
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z", inputs="other-inputs")
    assert run(engine)["reuse"] == ""
    assert run(engine, inputs="")["reuse"] == ""  # no fingerprint matches nothing, not every build


def test_a_service_on_the_release_alias_is_not_a_build_to_keep() -> None:
    """A stack deployed before builds were tagged runs `<release>`; the rollout moves it to a dated build."""
    engine = FakeEngine()
    engine.add("1.13.0-7.20261201", "2026-12-01T12:00:00Z")
    engine.add("1.13.0-7", "")
    engine.service_image = f"{NAME}:1.13.0-7"
    result = run(engine)
    assert result["reuse"] == f"{NAME}:1.13.0-7.20261201"
    assert result["running"]["built"] == "2026-11-01T00:00:00Z"  # unlabelled: as old as its creation


def test_a_service_whose_image_is_gone_is_reported_without_labels() -> None:
    engine = FakeEngine()
    engine.service_image = "registry.example/orthanc:site"
    result = run(engine)
    assert result["running"]["ref"] == "registry.example/orthanc:site"
    assert result["running"]["release"] == ""
    assert result["running"]["age_days"] is None


def test_without_a_service_name_the_engine_is_not_asked_about_services() -> None:
    engine = FakeEngine()
    engine.service_image = f"{NAME}:1.13.0-7.20261201"
    assert run(engine, service="")["running"] == {}
    assert not any(call[:2] == ["service", "inspect"] for call in engine.calls)


def test_an_unreachable_engine_is_an_error_naming_the_call() -> None:
    expected = r"`docker image ls .*` failed with rc 1: Cannot connect to the Docker daemon"
    with pytest.raises(BuildsError, match=expected):
        run(FakeEngine(fail_ls=True))


@pytest.mark.parametrize(
    ("tag", "release"),
    [
        ("1.13.0-7.20261202", "1.13.0-7"),
        ("1.13.0-7.20261202.3", "1.13.0-7"),
        ("1.13.0-7", "1.13.0-7"),
        ("1.13.0-7.candidate", "1.13.0-7.candidate"),
        ("17.12-1.20261202", "17.12-1"),
    ],
)
def test_release_of_a_tag(tag: str, release: str) -> None:
    assert release_of(tag) == release


def test_the_documentation_is_valid_yaml_naming_every_option() -> None:
    yaml = pytest.importorskip("yaml")
    documentation = yaml.safe_load(orthanc_image_builds.DOCUMENTATION)
    assert set(documentation["options"]) == {"name", "release", "inputs", "service"}
    assert set(yaml.safe_load(orthanc_image_builds.RETURN)) == {"builds", "running", "reuse", "next_tag"}
