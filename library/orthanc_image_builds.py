#!/usr/bin/python
"""Ansible module orthanc_image_builds: the builds of one AusCAT image release on this host."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

try:
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # imported by the unit tests without Ansible's module runtime
    AnsibleModule = None

DOCUMENTATION = r"""
---
module: orthanc_image_builds
short_description: List the builds of an AusCAT image release and choose the one a rollout runs
description:
  - A release is a tag C(<Orthanc version>-<layer version>) such as C(1.13.0-7). Each build of it is an image
    tagged C(<release>.<UTC date>) (C(.<n>) appended for a second build on the same day) and labelled with its
    release, the time it was built, the fingerprint of its build inputs and the digest of its package list.
  - Reports every build of O(release) present on this host, newest first, the image the service O(service) runs,
    the build a rollout keeps (RV(reuse)) and the tag the next build gets (RV(next_tag)).
  - A rollout keeps the build the service runs when it is a build of O(release), so that a refreshed build is
    never rolled back by the next rollout; otherwise the newest build made from O(inputs).
  - Only reads; talks to the engine through the C(docker) CLI.
options:
  name:
    description: Repository of the image, for example C(auscat/orthanc).
    type: str
    required: true
  release:
    description: The release, C(<Orthanc version>-<layer version>).
    type: str
    required: true
  inputs:
    description: Fingerprint of the release's current build inputs; a build made from other inputs is not reused
      unless the service runs it.
    type: str
    default: ""
  service:
    description: Swarm service whose image is reported as RV(running); none when empty or not deployed.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - the docker CLI on the managed host
author:
  - AusCAT Orthanc maintainers
"""

EXAMPLES = r"""
- name: Find the builds of the release
  orthanc_image_builds:
    name: auscat/orthanc
    release: 1.13.0-7
    inputs: "{{ __orthanc_image_layer_inputs }}"
    service: auscat_orthanc
  register: __orthanc_image_builds
"""

RETURN = r"""
builds:
  description: Builds of the release on this host, newest first.
  returned: always
  type: list
  elements: dict
  sample: [{ref: "auscat/orthanc:1.13.0-7.20261202", tag: 1.13.0-7.20261202, id: "sha256:3f6c...", release: 1.13.0-7,
            built: "2026-12-02T10:40:00Z", inputs: 0f3a9c2e5b7d1e4a, packages: "9b2f...", age_days: 0.1}]
running:
  description: The image the service runs, as a build (keys as in RV(builds)), or an empty dict when the service is
    not deployed. An image that is not a build of any release has an empty release.
  returned: always
  type: dict
reuse:
  description: Reference of the build a rollout keeps, or an empty string when a build must be made.
  returned: always
  type: str
  sample: auscat/orthanc:1.13.0-7.20261202
next_tag:
  description: Tag of the next build of the release.
  returned: always
  type: str
  sample: 1.13.0-7.20261202.2
"""

RELEASE_LABEL = "org.auscat.release"
BUILT_LABEL = "org.auscat.built"
INPUTS_LABEL = "org.auscat.inputs"
PACKAGES_LABEL = "org.auscat.packages.sha256"
BUILD_TAG = re.compile(r"^(?P<release>[A-Za-z0-9_.]+-[A-Za-z0-9_]+)\.(?P<date>[0-9]{8})(?:\.(?P<serial>[0-9]+))?$")
SECONDS_PER_DAY = 86400

Runner = Callable[[list[str]], tuple[int, str, str]]


class BuildsError(Exception):
    """A failure whose message says which docker call failed and why."""


@dataclass(frozen=True)
class Build:
    ref: str
    tag: str
    id: str
    release: str
    built: str
    inputs: str
    packages: str
    age_days: float | None


def release_of(tag: str) -> str:
    """The release a tag names: a build tag without its date and serial, any other tag as it is."""
    match = BUILD_TAG.match(tag)
    return match.group("release") if match else tag


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC time, or None when it is not one."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def build_from(ref: str, image: dict[str, Any], now: float) -> Build:
    labels = (image.get("Config") or {}).get("Labels") or {}
    # An image made before builds were labelled is as old as its creation.
    built = labels.get(BUILT_LABEL) or re.sub(r"\.[0-9]+Z$", "Z", image.get("Created", ""))
    moment = parse_time(built) if built else None
    return Build(
        ref=ref,
        tag=ref.rsplit(":", 1)[-1],
        id=image.get("Id", ""),
        release=labels.get(RELEASE_LABEL, ""),
        built=built,
        inputs=labels.get(INPUTS_LABEL, ""),
        packages=labels.get(PACKAGES_LABEL, ""),
        age_days=None if moment is None else round((now - moment) / SECONDS_PER_DAY, 3),
    )


def next_tag(release: str, taken: set[str], now: float) -> str:
    """<release>.<UTC date of now>, with .2, .3... when builds of that day exist."""
    day = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y%m%d")
    tag = f"{release}.{day}"
    serial = 1
    while tag in taken:
        serial += 1
        tag = f"{release}.{day}.{serial}"
    return tag


class Engine:
    """The docker CLI calls the module needs; `run` executes one argv and returns (rc, stdout, stderr)."""

    def __init__(self, docker: str, run: Runner) -> None:
        self.docker = docker
        self.run = run

    def _checked(self, *args: str) -> str:
        rc, out, err = self.run([self.docker, *args])
        if rc != 0:
            raise BuildsError(f"`docker {' '.join(args)}` failed with rc {rc}: {(err or out).strip()}")
        return out

    def refs_of_release(self, name: str, release: str) -> list[str]:
        out = self._checked(
            "image", "ls", "--filter", f"label={RELEASE_LABEL}={release}", "--format", "{{.Repository}}:{{.Tag}}", name
        )
        return sorted({line.strip() for line in out.splitlines() if line.strip() and not line.endswith(":<none>")})

    def inspect_images(self, refs: list[str]) -> list[dict[str, Any]]:
        if not refs:
            return []
        try:
            return json.loads(self._checked("image", "inspect", *refs))
        except ValueError as exc:
            raise BuildsError(f"`docker image inspect` printed no JSON: {exc}") from exc

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """One image's inspection, or an empty dict when the host does not have it (pruned, or pulled elsewhere)."""
        rc, out, err = self.run([self.docker, "image", "inspect", ref])
        if rc != 0:
            if "no such image" in (err + out).lower():
                return {}
            raise BuildsError(f"`docker image inspect {ref}` failed with rc {rc}: {(err or out).strip()}")
        try:
            return json.loads(out)[0]
        except (ValueError, LookupError) as exc:
            raise BuildsError(f"`docker image inspect {ref}` printed no image: {exc!r}") from exc

    def service_image(self, service: str) -> str:
        """The image (no digest) of the service's spec, or '' when there is no such service."""
        rc, out, _ = self.run([self.docker, "service", "inspect", "--format", "{{json .Spec.TaskTemplate}}", service])
        if rc != 0:
            return ""
        try:
            image = json.loads(out.strip().splitlines()[0])["ContainerSpec"]["Image"]
        except (ValueError, LookupError, TypeError) as exc:
            raise BuildsError(f"`docker service inspect {service}` printed no image: {exc!r}") from exc
        return image.split("@", 1)[0]


def survey(engine: Engine, name: str, release: str, inputs: str, service: str, now: float) -> dict[str, Any]:
    refs = engine.refs_of_release(name, release)
    builds = [
        build_from(ref, image, now)
        for ref, image in zip(refs, engine.inspect_images(refs), strict=True)
        if BUILD_TAG.match(ref.rsplit(":", 1)[-1])
    ]
    builds.sort(key=lambda build: (parse_time(build.built) or 0.0, build.tag), reverse=True)

    running: Build | None = None
    image = engine.service_image(service) if service else ""
    if image:
        running = build_from(image, engine.inspect_image(image), now)

    if running is not None and running.release == release and BUILD_TAG.match(running.tag):
        reuse = running.ref
    else:
        reuse = next((build.ref for build in builds if inputs and build.inputs == inputs), "")
    return {
        "builds": [asdict(build) for build in builds],
        "running": asdict(running) if running else {},
        "reuse": reuse,
        "next_tag": next_tag(release, {build.tag for build in builds}, now),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "release": {"type": "str", "required": True},
            "inputs": {"type": "str", "default": ""},
            "service": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params: dict[str, Any] = module.params
    docker = module.get_bin_path("docker", required=True)

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return rc, out, err

    try:
        result = survey(
            Engine(docker, run), params["name"], params["release"], params["inputs"], params["service"], time.time()
        )
    except BuildsError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
