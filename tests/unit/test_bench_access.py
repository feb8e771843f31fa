"""The access benchmark's arithmetic (paired on/off ratios, their median, the goal) and the filter cost variants."""

from __future__ import annotations

import pytest

from tests.bench import access, filter_cost


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


def test_the_audit_report_slope_is_the_exponent_of_time_against_size() -> None:
    from tests.bench import audit_report

    def result(megabytes: float, seconds: float) -> dict:
        return {"megabytes": megabytes, "who_accessed": {"seconds": seconds}}

    assert audit_report.slope([result(10, 1.0), result(100, 10.0), result(1000, 100.0)], "who_accessed") == (
        pytest.approx(1.0)
    )
    assert audit_report.slope([result(10, 2.0), result(100, 2.0)], "who_accessed") == pytest.approx(0.0)


def test_the_audit_report_bench_writes_a_trail_the_report_reads(tmp_path) -> None:
    from tests.bench import audit_report

    lines = audit_report.write_trail(tmp_path / "audit", megabytes=1, seed=1)
    read = list(audit_report.auscat_audit.read_lines(tmp_path / "audit"))
    assert len(read) == lines
    assert {line["kind"] for line in read} == {"http", "instance", "association"}


@pytest.mark.parametrize("variant", list(filter_cost.VARIANTS))
def test_each_variant_of_the_filter_cost_bench_is_made_from_the_layers_plugin(variant: str) -> None:
    """The variants are edits of the plugin as it is; each edit must still find its place, and compile."""
    plugin = filter_cost.PLUGIN.read_text(encoding="utf-8")
    text = filter_cost.variant_text(variant, plugin)
    compile(text, f"{variant}.py", "exec")
    assert (text == plugin) == (variant == "layer")


def test_a_plugin_without_the_place_of_an_edit_is_refused_naming_it() -> None:
    with pytest.raises(filter_cost.BenchError, match="keep_thread_state"):
        filter_cost.variant_text("layer-not-kept", "def on_http_request(uri: str, **request) -> bool:\n")
