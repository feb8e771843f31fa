"""Filters that match the image's Orthanc and plugin versions against the table of known vulnerabilities."""

from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.compat.version import LooseVersion


def orthanc_image_upstream_version(debian_version: str) -> str:
    """The upstream part of a Debian version: 1:1.24+dfsg-1+b1 -> 1.24."""
    without_epoch = re.sub(r"^[0-9]+:", "", str(debian_version))
    return re.split(r"[+~-]", without_epoch, maxsplit=1)[0]


def orthanc_image_affected(table: list[dict[str, Any]], versions: dict[str, str]) -> list[dict[str, Any]]:
    """The entries of `table` whose component runs at a version before the entry's first fixed one."""
    affected = []
    for entry in table:
        version = versions.get(entry["component"])
        if version and LooseVersion(str(version)) < LooseVersion(str(entry["fixed"])):
            affected.append({**entry, "version": str(version)})
    return affected


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "orthanc_image_upstream_version": orthanc_image_upstream_version,
            "orthanc_image_affected": orthanc_image_affected,
        }
