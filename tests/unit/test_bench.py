"""The benchmark's pure helpers: payload stamping, statistics, ratios, goals, table and redaction."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread

from tests.bench import analysis, bare, cli, payload, report, stats
from tests.bench.stats import Goal, Sample


def sample(
    server: str, rate: float, measure: str = "cstore", client: str = "pynetdicom", concurrency: int = 1
) -> Sample:
    """A sample of 100 instances of 0.5 MB at ``rate`` instances/s."""
    return Sample(measure, server, client, concurrency, 1, 100, 50_000_000, 100 / rate)


# Payload


@pytest.fixture(scope="module")
def small() -> bytes:
    return payload.small_template()


def test_stamped_instance_carries_the_new_identity_in_dataset_and_file_meta(small: bytes) -> None:
    values = payload.identity(payload.new_token(), 7, 7, 3, 42)
    ds = dcmread(io.BytesIO(payload.stamp(small, values)))
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == values["instance"]
    assert ds.StudyInstanceUID == values["study"]
    assert ds.SeriesInstanceUID == values["series"]
    assert ds.FrameOfReferenceUID == values["frame"]
    assert ds.PatientID == values["patient"]
    assert str(ds.PatientName) == values["name"]


def test_stamping_keeps_the_size_and_the_pixel_data(small: bytes) -> None:
    stamped = payload.stamp(small, payload.identity(payload.new_token(), 1, 1, 1, 1))
    assert len(stamped) == len(small)
    assert dcmread(io.BytesIO(stamped)).pixel_array.shape == (payload.SMALL_SIZE, payload.SMALL_SIZE)


def test_stamping_refuses_a_value_of_another_length(small: bytes) -> None:
    values = payload.identity(payload.new_token(), 1, 1, 1, 1) | {"patient": "SHORT"}
    with pytest.raises(ValueError, match="patient"):
        payload.stamp(small, values)


def test_generated_uids_are_valid_and_of_fixed_length() -> None:
    token = payload.new_token()
    uids = [payload.uid(token, kind, number) for kind in payload.KINDS for number in (0, 1, 10**11)]
    assert len({len(uid) for uid in uids}) == 1
    assert all(len(uid) <= 64 for uid in uids)
    for uid in uids:
        assert all(part == "0" or not part.startswith("0") for part in uid.split("."))
    assert token != payload.PLACEHOLDER_TOKEN


def test_batches_never_repeat_an_instance_uid(small: bytes) -> None:
    stamper = payload.Stamper([small])
    seen = set()
    for parts in (1, 4, 8):
        batch = stamper.batch(16, parts)
        assert [len(part.instances) for part in batch.parts] == payload.split(16, parts)
        for data in batch.all():
            uid = dcmread(io.BytesIO(data)).SOPInstanceUID
            assert uid not in seen
            seen.add(uid)
    assert len(seen) == 48


def test_each_part_of_a_batch_is_a_patient_study_of_its_own(small: bytes) -> None:
    batch = payload.Stamper([small]).batch(6, 3)
    for part in batch.parts:
        datasets = [dcmread(io.BytesIO(data)) for data in part.instances]
        assert {ds.PatientID for ds in datasets} == {part.patient_id}
        assert {ds.StudyInstanceUID for ds in datasets} == {part.study_uid}
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len(set(batch.study_uids)) == 3
    assert batch.instances == 6
    assert batch.size == 6 * len(small)


def test_growth_spreads_instances_over_patients(small: bytes) -> None:
    growth = payload.Growth(small, payload.new_token(), per_patient=100)
    first, last = dcmread(io.BytesIO(growth.instance(0))), dcmread(io.BytesIO(growth.instance(250)))
    assert first.PatientID == growth.patient_id(0)
    assert last.PatientID == growth.patient_id(2)
    assert growth.patients(0) == 0
    assert growth.patients(250) == 3
    assert growth.patients(300) == 3


def test_growth_shares_give_each_sender_whole_patients(small: bytes) -> None:
    growth = payload.Growth(small, payload.new_token(), per_patient=10)
    shares = [[dcmread(io.BytesIO(data)) for data in growth.share(0, 60, index, 4)] for index in range(4)]
    assert sum(len(share) for share in shares) == 60
    patients = [{ds.PatientID for ds in share} for share in shares]
    assert all(len(ids) > 0 for ids in patients)
    assert sum(len(ids) for ids in patients) == len(set.union(*patients)) == 6
    assert {ds.SOPInstanceUID for share in shares for ds in share} == {
        dcmread(io.BytesIO(growth.instance(number))).SOPInstanceUID for number in range(60)
    }


def test_split_is_even_to_within_one() -> None:
    assert payload.split(10, 4) == [3, 3, 2, 2]
    assert payload.split(8, 8) == [1] * 8
    with pytest.raises(ValueError, match="cannot split"):
        payload.Stamper([b"x"]).batch(2, 4)


# Statistics


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert stats.percentile(values, 0.5) == pytest.approx(5.5)
    assert stats.percentile(values, 0.95) == pytest.approx(9.55)
    assert stats.percentile([3.0], 0.95) == 3.0
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 0.5)


def test_latency_summary_reports_median_and_p95() -> None:
    summary = stats.latency_summary([float(value) for value in range(1, 101)])
    assert summary["n"] == 100
    assert summary["median_ms"] == pytest.approx(50.5)
    assert summary["p95_ms"] == pytest.approx(95.05)


def test_sample_rates_are_instances_and_megabytes_per_second() -> None:
    item = Sample("cstore", "deployed", "pynetdicom", 1, 1, 200, 100_000_000, 4.0)
    assert item.rate == 50
    assert item.mbps == 25


def test_summary_is_the_median_over_rounds_per_server() -> None:
    samples = [sample("deployed", rate) for rate in (90, 100, 130)] + [sample("stock", 10), sample("stock", 14)]
    summaries = stats.summarise(samples)
    deployed = stats.find_summary(summaries, "cstore", "pynetdicom", 1, "deployed")
    stock = stats.find_summary(summaries, "cstore", "pynetdicom", 1, "stock")
    assert deployed is not None
    assert stock is not None
    assert (deployed.rate, deployed.rate_min, deployed.rate_max, deployed.n) == pytest.approx((100, 90, 130, 3))
    assert stock.rate == pytest.approx(12)


def test_drift_is_the_relative_change_from_first_to_last_window() -> None:
    windows = stats.window_rates([(0, 1000, 2.0), (1000, 10_000, 20.0), (10_000, 100_000, 225.0)])
    assert [window["rate"] for window in windows] == [500, 450, 400]
    assert stats.drift(windows[0]["rate"], windows[-1]["rate"]) == pytest.approx(-0.2)


def test_checkpoints_run_from_zero_to_the_growth_without_repeats() -> None:
    assert stats.checkpoints(100_000) == [0, 1000, 10_000, 25_000, 50_000, 100_000]
    assert stats.checkpoints(50) == [0, 5, 12, 25, 50]
    assert stats.checkpoints(1) == [0, 1]
    with pytest.raises(ValueError, match="at least 1"):
        stats.checkpoints(0)


# Ratios and goals


def test_ratios_compare_medians_side_by_side() -> None:
    samples = [
        sample("deployed", 80),
        sample("stock", 16),
        sample("bare", 84),
        sample("deployed", 100, measure="rest-ingest", client="rest"),
        Sample("disk-write", "disk", "fsync", 1, 1, 100, 50_000_000, 0.1),
    ]
    ratios = analysis.build_ratios(stats.summarise(samples), ["pynetdicom"], [1], ["deployed", "stock", "bare"])
    by_name = {item.name: item for item in ratios}
    assert by_name["deployed/stock C-STORE pynetdicom x1"].value == pytest.approx(5)
    assert by_name["C-STORE/REST deployed pynetdicom x1"].value == pytest.approx(0.8)
    assert by_name["stack/bare C-STORE pynetdicom x1"].value == pytest.approx(80 / 84)
    assert by_name["ingest/disk C-STORE pynetdicom x1"].value == pytest.approx(40 / 500)
    assert "stack/bare REST ingest x1" not in by_name  # bare's REST ingest was not measured


def test_docker_proxy_cost_is_the_published_port_against_the_container_address() -> None:
    samples = [sample("deployed", 90), sample("deployed-direct", 100), sample("bare", 100)]
    servers = ["deployed", "deployed-direct", "bare"]
    by_name = {
        item.name: item for item in analysis.build_ratios(stats.summarise(samples), ["pynetdicom"], [1], servers)
    }
    assert by_name["published/direct C-STORE pynetdicom x1"].value == pytest.approx(0.9)
    assert by_name["stack direct/bare C-STORE pynetdicom x1"].value == pytest.approx(1.0)


def test_goals_say_reached_missed_or_not_measured() -> None:
    samples = [sample("deployed", 80), sample("deployed-direct", 88), sample("stock", 16), sample("bare", 90)]
    servers = ["deployed", "deployed-direct", "stock", "bare"]
    ratios = analysis.build_ratios(stats.summarise(samples), ["pynetdicom"], [1], servers)
    growth = {
        "postgresql": {"drift": -0.2, "checkpoints": [{"instances": 100_000, "tools_find": {"median_ms": 1.5}}]},
    }
    goals = {goal.goal: goal for goal in analysis.build_goals(ratios, ["pynetdicom"], growth)}
    assert goals["C-STORE 1 association >= 4x stock Orthanc (pynetdicom)"].reached is True
    assert goals["stack >= 0.95 of bare Orthanc (C-STORE pynetdicom, 1 association, published port)"].reached is False
    assert goals["stack >= 0.95 of bare Orthanc (C-STORE pynetdicom, 1 association, container address)"].reached is True
    assert goals["C-STORE >= 0.8 of REST ingest (pynetdicom, 1 association)"].reached is None
    drift_goal = "PostgreSQL ingest drift from 0 to 100000 instances > -15 % (the rate falls by less than 15 %)"
    assert goals[drift_goal].reached is False
    assert goals["/tools/find by PatientID < 5 ms at 100000 instances (postgresql, median)"].reached is True
    assert goals["/tools/find by PatientID < 5 ms at N instances (sqlite, median)"].reached is None


def test_a_faster_end_of_growth_is_no_drift_problem() -> None:
    assert Goal("drift", measured=0.3, threshold=-0.15, comparison=">", unit="drift").reached is True
    assert Goal("drift", measured=-0.14, threshold=-0.15, comparison=">", unit="drift").reached is True
    assert Goal("drift", measured=-0.16, threshold=-0.15, comparison=">", unit="drift").reached is False


def test_goal_thresholds_are_inclusive_only_for_at_least() -> None:
    assert Goal("g", 4.0, 4.0, ">=", "x").reached is True
    assert Goal("g", 5.0, 5.0, "<", "ms").reached is False


# Report


def test_table_lists_measurements_ratios_and_goals() -> None:
    samples = [sample("deployed", 80), sample("stock", 16)]
    summaries = stats.summarise(samples)
    ratios = analysis.build_ratios(summaries, ["pynetdicom"], [1], ["deployed", "stock"])
    goals = analysis.build_goals(ratios, ["pynetdicom"], {})
    results = {
        "started": "2026-11-28T00:00:00+00:00",
        "duration_seconds": 120,
        "complete": True,
        "machine": {"nproc": 2, "memory_bytes": 24 << 30, "kernel": "6.1", "os": "Debian"},
        "settings": {"instances_per_run": 100, "instance_mb": 0.5, "rounds": 1},
        "summaries": [summary.to_json() for summary in summaries],
        "growth": {
            "sqlite": {
                "threads": 4,
                "instance_size": 9500,
                "drift": -0.05,
                "windows": [{"start": 0, "end": 1000, "seconds": 2.0, "rate": 500.0}],
                "checkpoints": [
                    {
                        "instances": 1000,
                        "tools_find": {"median_ms": 0.9, "p95_ms": 1.2},
                        "cfind": {"median_ms": 2.8, "p95_ms": 3.5},
                    }
                ],
            }
        },
        "ratios": [item.to_json() for item in ratios],
        "goals": [goal.to_json() for goal in goals],
    }
    table = report.format_table(results)
    assert "C-STORE       pynetdicom    1  deployed            80.0" in table
    assert "deployed/stock C-STORE pynetdicom x1" in table
    assert "5.000" in table
    assert "reached  C-STORE 1 association >= 4x stock Orthanc (pynetdicom): 5.000x" in table
    assert "n/a      PostgreSQL ingest drift" in table
    assert "   0.90 /   1.20" in table
    assert "500 inst/s" in table
    assert "INCOMPLETE" not in table


def test_table_of_a_failed_run_says_so() -> None:
    table = report.format_table({"complete": False, "error": "deployed never became healthy"})
    assert "INCOMPLETE" in table
    assert "ERROR: deployed never became healthy" in table


def test_goal_values_are_formatted_with_their_unit() -> None:
    assert report.format_goal_value(None, "x") == "not measured"
    assert report.format_goal_value(0.949, "x") == "0.949x"
    assert report.format_goal_value(2.5, "ms") == "2.50 ms"
    assert report.format_goal_value(-0.042, "drift") == "-4.2 %"
    assert report.format_threshold(">", -0.15, "drift") == "> -15 %"


# Configuration handling


def test_redaction_removes_users_and_passwords_at_any_depth() -> None:
    config = {
        "RegisteredUsers": {"bench": "s3cret-password-value"},
        "PostgreSQL": {"Host": "postgresql", "Password": "another-secret"},
        "DicomModalities": {"bench": {"AET": "AUSCAT-BENCH"}},
        "HttpPort": 8042,
    }
    redacted = cli.redact(config)
    assert "s3cret-password-value" not in str(redacted)
    assert "another-secret" not in str(redacted)
    assert redacted["PostgreSQL"]["Host"] == "postgresql"
    assert redacted["DicomModalities"] == config["DicomModalities"]
    assert redacted["HttpPort"] == 8042


def test_bare_server_keeps_the_stack_configuration_but_its_ports() -> None:
    merged = {
        "HttpPort": 8042,
        "DicomPort": 4242,
        "MaximumPduLength": 131072,
        "StorageDirectory": "/var/lib/orthanc/db",
    }
    config = bare.bare_config(merged)
    assert (config["HttpPort"], config["DicomPort"]) == (bare.HTTP_PORT, bare.DICOM_PORT)
    assert config["MaximumPduLength"] == 131072
    assert config["StorageDirectory"] == "/var/lib/orthanc/db"


def test_bare_environment_is_the_image_one_with_the_service_one_over_it() -> None:
    env = bare.environment(["PATH=/usr/bin", "LD_LIBRARY_PATH=/opt/lib"], ["TCP_NODELAY=1", "PATH=/bin"])
    assert env == ["PATH=/bin", "LD_LIBRARY_PATH=/opt/lib", "TCP_NODELAY=1"]


def test_quick_defaults_apply_only_where_no_option_was_given() -> None:
    args = cli.parse_args(["--quick", "--growth", "500"])
    assert args.growth == 500
    assert args.rounds == cli.QUICK["rounds"]
    assert args.backends == ["sqlite", "postgresql"]
    assert cli.parse_args(["--backends", "sqlite"]).backends == ["sqlite"]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--backends", "mysql"])


def test_growth_threads_default_per_backend_and_can_be_overridden() -> None:
    assert cli.parse_args([]).growth_threads == cli.GROWTH_THREADS
    assert cli.parse_args(["--growth-threads", "2"]).growth_threads == {"sqlite": 2, "postgresql": 2}
    assert cli.parse_args(["--growth-threads", "postgresql=3"]).growth_threads == {
        "sqlite": cli.GROWTH_THREADS["sqlite"],
        "postgresql": 3,
    }
    with pytest.raises(SystemExit):
        cli.parse_args(["--growth-threads", "mysql=2"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--growth-threads", "0"])


def test_resends_are_summed_over_rounds() -> None:
    samples = [
        Sample("rest-ingest", "postgresql", "rest", 4, 1, 100, 1_000_000, 1.0, retries=2),
        Sample("rest-ingest", "postgresql", "rest", 4, 2, 100, 1_000_000, 1.0, retries=3),
    ]
    assert stats.summarise(samples)[0].retries == 5
