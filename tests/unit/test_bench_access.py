"""The access benchmark's arithmetic: paired on/off ratios per round, their median and the 10 % goal."""

from __future__ import annotations

import pytest

from tests.bench import access


def rounds(*pairs: tuple[float, float]) -> list[dict]:
    return [
        {"access-on": dict.fromkeys(access.OPERATIONS, on), "access-off": dict.fromkeys(access.OPERATIONS, off)}
        for on, off in pairs
    ]


def test_ratios_are_paired_per_round_not_taken_of_the_medians() -> None:
    summary = access.summarise(rounds((90, 100), (200, 200), (45, 50)))["ingest"]
    assert summary["ratio_median"] == pytest.approx(0.9)
    assert (summary["ratio_min"], summary["ratio_max"]) == (pytest.approx(0.9), 1.0)
    assert (summary["on_per_second"], summary["off_per_second"]) == (90, 100)
    assert summary["goal_met"]


def test_more_than_ten_percent_slower_misses_the_goal_and_the_table_says_so() -> None:
    summary = access.summarise(rounds((80, 100), (85, 100)))
    assert not summary["file"]["goal_met"]
    assert "MISSED" in access.table(summary, 2)


def test_fewer_instances_than_connections_are_refused() -> None:
    with pytest.raises(SystemExit):
        access.parse_args(["--instances", "2", "--threads", "4"])
