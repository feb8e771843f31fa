"""auscat_tool reads the index a page at a time, within the configuration's find limits, and misses nothing."""

from __future__ import annotations

import hashlib
from typing import Any

import auscat_tool
import pytest


class FakeOrthanc:
    """Answers /tools/find (Since, Limit, attachments) and /statistics like Orthanc, for ``count`` instances."""

    def __init__(self, count: int, cap: int = 0) -> None:
        self.instances = [f"instance-{number:06d}" for number in range(count)]
        self.cap = cap  # Orthanc refuses a Limit above its LimitFind* setting
        self.limits: list[int] = []

    def json(self, method: str, path: str, body: Any = None) -> Any:
        if path == "/statistics":
            count = len(self.instances)
            return {"CountPatients": 1, "CountStudies": 1, "CountSeries": 1, "CountInstances": count}
        assert (method, path) == ("POST", "/tools/find")
        limit, since = body["Limit"], body["Since"]
        assert limit > 0
        assert self.cap == 0 or limit <= self.cap, f"Limit {limit} above the cap {self.cap}"
        self.limits.append(limit)
        if body["Level"] != "Instance":
            return []
        return [{"ID": name, "Attachments": [attachment(name)]} for name in self.instances[since : since + limit]]


def attachment(name: str) -> dict[str, Any]:
    md5 = hashlib.md5(name.encode()).hexdigest()  # noqa: S324 - a stand-in for the file's MD5
    return {
        "Uuid": f"uuid-{name}",
        "ContentType": 1,
        "UncompressedMD5": md5,
        "CompressedMD5": md5,
        "UncompressedSize": 10,
        "CompressedSize": 10,
    }


@pytest.mark.parametrize("count", [0, 1, 9_999, 10_000, 10_001, 25_000])
def test_inventory_lists_every_instance_whatever_the_count(count: int) -> None:
    orthanc = FakeOrthanc(count)
    result = auscat_tool.inventory(orthanc, {}, with_list=True)
    assert result["listed"] == result["instances"] == count
    assert sorted(result["md5"]) == orthanc.instances
    lines = "".join(f"{name} {attachment(name)['UncompressedMD5']}\n" for name in orthanc.instances)
    assert result["digest"] == hashlib.sha256(lines.encode()).hexdigest()


def test_pages_are_large_so_that_few_requests_step_over_the_index() -> None:
    orthanc = FakeOrthanc(25_000)
    auscat_tool.inventory(orthanc, {}, with_list=False)
    assert len(orthanc.limits) == 3


@pytest.mark.parametrize("cap", [500, 1000])
def test_pages_stay_within_the_configured_find_limit(cap: int) -> None:
    orthanc = FakeOrthanc(2_345, cap=cap)
    result = auscat_tool.inventory(orthanc, {"LimitFindInstances": cap, "LimitFindResults": cap}, with_list=False)
    assert result["listed"] == 2_345
    assert set(orthanc.limits) == {cap}


def test_attachments_are_read_at_every_level_within_their_own_limit() -> None:
    orthanc = FakeOrthanc(3)
    assert auscat_tool.attachments(orthanc, {"LimitFindResults": 1000, "LimitFindInstances": 0}) == 3
    assert orthanc.limits == [1000, 1000, 1000, auscat_tool.PAGE]
