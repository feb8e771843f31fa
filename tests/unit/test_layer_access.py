"""The layer's roles (auscat_access), its audit trail (auscat_audit) and their configuration checks."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import threading
from pathlib import Path

import auscat_access
import auscat_audit
import auscat_config
import pytest
from auscat_access import ANONYMOUS, Access, http_line, http_record, line_of_record, resource_of, user_of
from auscat_audit import AuditPipe, AuditTrail

PATIENT = "0946fcb6-cf12ab43-bad958c1-bf057ad5-0fc6f54c"
STUDY = "27f7126f-4f66fb14-03f4081b-f9341db2-53925988"
INSTANCE = "f0b1c2d3-00112233-44556677-8899aabb-ccddeeff"
ROLES = {"site-admin": "admin", "alice": "researcher", "ctp-stow": "uploader", "prometheus": "metrics"}
ACCESS = Access(ROLES)


PASSWORD = "a-long-enough-password"  # noqa: S105 - a test password


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def allowed(user: str, method: str, path: str) -> bool:
    return ACCESS.decide(method, path, basic(user)).allowed


# (method, path) -> the roles that may do it. Every pair not listed for a role is denied to it.
MATRIX: list[tuple[str, str, set[str]]] = [
    ("GET", "/app/explorer.html", {"admin", "researcher"}),
    ("GET", "/", {"admin", "researcher"}),
    ("GET", "/system", {"admin", "researcher", "uploader", "metrics"}),
    ("GET", "/statistics", {"admin", "researcher"}),
    ("GET", "/patients", {"admin", "researcher"}),
    ("GET", f"/patients/{PATIENT}", {"admin", "researcher"}),
    ("GET", f"/studies/{STUDY}/series", {"admin", "researcher"}),
    ("GET", f"/studies/{STUDY}/archive", {"admin", "researcher"}),
    ("GET", f"/instances/{INSTANCE}/file", {"admin", "researcher"}),
    ("GET", f"/instances/{INSTANCE}/preview", {"admin", "researcher"}),
    ("GET", f"/instances/{INSTANCE}/frames/0/preview", {"admin", "researcher"}),
    ("POST", "/tools/find", {"admin", "researcher"}),
    ("POST", "/tools/create-archive", {"admin", "researcher"}),
    ("POST", f"/studies/{STUDY}/archive", {"admin", "researcher"}),
    ("GET", "/dicom-web/studies", {"admin", "researcher"}),
    ("GET", "/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1", {"admin", "researcher"}),
    ("GET", "/wado", {"admin", "researcher"}),
    ("POST", "/instances", {"admin", "uploader"}),
    ("POST", "/dicom-web/studies", {"admin", "uploader"}),
    ("POST", "/dicom-web/studies/1.2.3", {"admin", "uploader"}),
    ("GET", "/tools/metrics-prometheus", {"admin", "metrics"}),
    ("DELETE", f"/patients/{PATIENT}", {"admin"}),
    ("DELETE", f"/instances/{INSTANCE}", {"admin"}),
    ("PUT", f"/patients/{PATIENT}/protected", {"admin"}),
    ("PUT", f"/studies/{STUDY}/labels/cohort", {"admin"}),
    ("POST", f"/studies/{STUDY}/anonymize", {"admin"}),
    ("POST", f"/studies/{STUDY}/modify", {"admin"}),
    ("POST", "/modalities/ctp/store", {"admin"}),
    ("POST", "/peers/other/store", {"admin"}),
    ("POST", "/tools/shutdown", {"admin"}),
    ("POST", "/tools/reset", {"admin"}),
    ("PUT", "/tools/log-level", {"admin"}),
    ("POST", "/tools/execute-script", {"admin"}),
    ("POST", f"/instances/{INSTANCE}/export", {"admin"}),
    ("POST", "/jobs/1234/cancel", {"admin"}),
    ("GET", "/modalities", {"admin"}),
    ("GET", "/dicom-web/servers", {"admin"}),
    ("GET", "/not-a-route-anyone-lists", {"admin"}),
]


@pytest.mark.parametrize(("method", "path", "roles"), MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX])
def test_each_role_may_do_only_what_the_table_lists(method: str, path: str, roles: set[str]) -> None:
    for user, role in ROLES.items():
        assert allowed(user, method, path) == (role in roles), (user, role, method, path)


def test_a_user_without_a_role_and_an_anonymous_request_are_denied() -> None:
    decision = ACCESS.decide("GET", "/system", basic("mallory"))
    assert (decision.allowed, decision.why) == (False, "no role")
    assert not ACCESS.decide("GET", "/system", {}).allowed


def test_without_roles_every_user_is_an_admin_as_in_stock_orthanc() -> None:
    access = Access.from_config({"AusCAT": {}})
    assert access.decide("DELETE", f"/patients/{PATIENT}", basic("orthanc")).allowed
    assert access.decide("GET", "/system", {}).allowed  # authentication off: Orthanc's own rules apply
    assert access.describe() == "roles off (every user is an admin)"


@pytest.mark.parametrize(
    "path",
    [f"/patients/{PATIENT}/../../tools/reset", "//tools/reset", f"/patients/{PATIENT}/%2e%2e", "/app\\..\\tools"],
)
def test_paths_not_in_canonical_form_are_denied_to_every_role_admin_included(path: str) -> None:
    for user in ROLES:
        assert not allowed(user, "GET", path), (user, path)


def test_the_user_comes_from_the_basic_header_and_anything_else_is_anonymous() -> None:
    assert user_of(basic("alice", "pass:with:colons")) == "alice"
    assert user_of({"authorization": "Bearer abc"}) == ANONYMOUS
    assert user_of({"authorization": "Basic not-base64!"}) == ANONYMOUS
    assert user_of({"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}) == ANONYMOUS
    assert user_of({}) == ANONYMOUS


def test_the_resource_a_path_names() -> None:
    assert resource_of(f"/studies/{STUDY}/archive") == {"level": "study", "id": STUDY}
    assert resource_of(f"/instances/{INSTANCE}") == {"level": "instance", "id": INSTANCE}
    assert resource_of("/dicom-web/studies/1.2.3/series/1.2.3.4") == {"study": "1.2.3", "series": "1.2.3.4"}
    assert resource_of("/tools/find") is None


def test_an_audit_line_has_the_decision_and_never_the_query_or_a_header_value() -> None:
    headers = {**basic("alice", "a-secret-password"), "cookie": "session=xyz"}
    decision = ACCESS.decide("DELETE", f"/studies/{STUDY}", headers)
    moment = datetime.datetime(2026, 12, 2, 10, 0, 0, 123000, tzinfo=datetime.UTC)
    line = http_line(decision, "DELETE", f"/studies/{STUDY}", "10.242.42.7", moment)
    assert json.loads(line) == {
        "time": "2026-12-02T10:00:00.123Z",
        "kind": "http",
        "user": "alice",
        "role": "researcher",
        "client": "10.242.42.7",
        "method": "DELETE",
        "path": f"/studies/{STUDY}",
        "resource": {"level": "study", "id": STUDY},
        "decision": "denied",
        "why": "not listed for the role",
    }
    assert "a-secret-password" not in line
    assert "xyz" not in line


@pytest.mark.parametrize(("method", "path"), [(method, path) for method, path, _ in MATRIX])
def test_a_role_allows_by_the_first_of_its_rules_that_lists_the_request(method: str, path: str) -> None:
    """The compiled patterns decide as the role table reads: the first listed rule that matches gives the reason."""
    for user, role in ROLES.items():
        first = next(
            (rule for rule in auscat_access.ROLES[role] if method in rule.methods and re.fullmatch(rule.pattern, path)),
            None,
        )
        decision = ACCESS.decide(method, path, basic(user))
        assert (decision.allowed, decision.why) == (
            (True, first.why) if first else (False, "not listed for the role")
        ), (user, method, path)


def test_the_user_of_each_authorization_header_is_remembered_within_a_bound() -> None:
    access = Access(ROLES)
    assert access.decide("GET", "/system", basic("alice")).user == "alice"
    assert access.decide("GET", "/system", basic("prometheus")).user == "prometheus"
    assert access.decide("GET", "/system", {}).user == ANONYMOUS
    for number in range(auscat_access._USERS_KEPT + 10):
        access.user_of(basic(f"user-{number}"))
    assert len(access.users) <= auscat_access._USERS_KEPT
    assert access.decide("GET", "/system", basic("alice")).role == "researcher"


def test_the_plugins_record_of_a_decision_becomes_the_same_line_as_the_trail_writes() -> None:
    decision = ACCESS.decide("GET", f"/studies/{STUDY}/archive", basic("alice"))
    record = http_record(decision, "GET", f"/studies/{STUDY}/archive", "10.242.42.7")
    assert record.startswith(auscat_access.RECORD_MARK)
    assert "\n" not in record
    line = json.loads(line_of_record(record))
    moment = datetime.datetime.fromisoformat(line.pop("time").replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) < 5
    expected = json.loads(http_line(decision, "GET", f"/studies/{STUDY}/archive", "10.242.42.7"))
    del expected["time"]
    assert line == expected
    assert line_of_record('{"kind":"instance"}') == '{"kind":"instance"}'


@pytest.mark.parametrize("path", ["/patients/a\nb", "/patients/a\x1fb"], ids=["line-break", "separator"])
def test_a_decision_whose_fields_hold_a_separator_goes_as_the_json_line(path: str) -> None:
    decision = ACCESS.decide("GET", path, basic("alice"))
    record = http_record(decision, "GET", path, "10.242.42.7")
    assert json.loads(record)["path"] == path
    assert line_of_record(record) == record


def test_a_record_with_the_wrong_number_of_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match="fields"):
        line_of_record(auscat_access.RECORD_MARK + "1.0\x1falice")


def test_the_markdown_table_lists_every_rule_of_every_role() -> None:
    table = auscat_access.markdown()
    assert len(table.splitlines()) == 2 + sum(len(rules) for rules in auscat_access.ROLES.values())
    for role in auscat_access.ROLES:
        assert f"| {role} |" in table


def test_the_audit_trail_rotates_and_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit", max_megabytes=0.001, files=3, stream_fd=None)  # 1048 bytes per file
    for number in range(200):
        trail.write(json.dumps({"n": number, "padding": "x" * 40}))
    trail.close()
    files = sorted(path.name for path in (tmp_path / "audit").iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all((tmp_path / "audit" / name).stat().st_size <= 1048 + 100 for name in files)
    last = (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["n"] == 199
    assert (tmp_path / "audit").stat().st_mode & 0o777 == 0o700


def concurrently(function, writers: int) -> None:
    """Run function(0) ... function(writers - 1) in as many threads, and wait for all."""
    threads = [threading.Thread(target=function, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_until_closed(fd: int):
    while chunk := os.read(fd, 65536):
        yield from chunk


def test_the_plugins_pipe_writes_each_line_whole_under_concurrent_writers(tmp_path: Path) -> None:
    read, write = os.pipe()
    pipe = AuditPipe(write, tmp_path)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(read_until_closed(read)))
    reader.start()

    def lines(writer: int) -> None:
        for number in range(300):
            pipe.write(json.dumps({"writer": writer, "n": number, "pad": "p" * (number * 20)}))  # up to 6 kB a line

    concurrently(lines, 6)
    pipe.close()
    reader.join()
    os.close(read)
    parsed = [json.loads(line) for line in received.decode().splitlines()]
    assert {(line["writer"], line["n"]) for line in parsed} == {(w, n) for w in range(6) for n in range(300)}


def test_the_audit_trail_keeps_every_line_whole_under_concurrent_writers(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit", max_megabytes=100, files=2, stream_fd=None)

    def write(writer: int) -> None:
        for number in range(500):
            trail.write(json.dumps({"writer": writer, "n": number}))

    concurrently(write, 8)
    trail.close()
    lines = [json.loads(line) for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * 500
    assert {(line["writer"], line["n"]) for line in lines} == {(w, n) for w in range(8) for n in range(500)}


@pytest.mark.parametrize("directory_blocked", [False, True], ids=["file-and-stream", "directory-blocked"])
def test_the_audit_trail_also_writes_each_line_to_the_given_stream(
    tmp_path: Path, capfd, directory_blocked: bool
) -> None:
    """Also when the directory cannot be made (a file in its way): reported, and the stream still gets the line."""
    if directory_blocked:
        (tmp_path / "db").write_text("a file where the audit directory should be")
    directory = tmp_path / "db" / "audit"
    log = tmp_path / "container.log"
    with log.open("w") as stream:
        trail = AuditTrail(directory, max_megabytes=1, files=1, stream_fd=stream.fileno())
        trail.write('{"kind":"http"}')
        trail.close()
    assert log.read_text() == '{"kind":"http"}\n'
    reported = f"the audit file {directory / 'audit.jsonl'} cannot be opened" in capfd.readouterr().err
    assert reported == directory_blocked
    assert (directory / "audit.jsonl").exists() != directory_blocked


def roles_config(roles: object, users: dict[str, str] | None = None, **extra: object) -> dict:
    registered = users if users is not None else {name: "a-long-enough-password" for name in ROLES}
    return {"RegisteredUsers": registered, "AusCAT": {"Roles": roles}, **extra}


def problems_of(config: dict) -> str:
    with pytest.raises(auscat_config.ConfigError) as error:
        auscat_config.validate(config, "orthanc.json")
    return str(error.value)


def test_a_configuration_with_valid_roles_passes() -> None:
    auscat_config.validate(roles_config(ROLES), "orthanc.json")


@pytest.mark.parametrize(
    ("roles", "users", "message"),
    [
        ({**ROLES, "bob": "superuser"}, {**dict.fromkeys(ROLES, "p"), "bob": "p"},
         "user 'bob' has the unknown role 'superuser' (known: admin, researcher, uploader, metrics)"),
        ({**ROLES, "carol": "researcher"}, None, "user 'carol' has no password in RegisteredUsers"),
        ({"alice": "researcher", "site-admin": "admin"}, None, "user 'ctp-stow' of RegisteredUsers has no role"),
        ({name: "researcher" for name in ROLES}, None, "gives no user the role 'admin'"),
        (["alice"], None, "AusCAT.Roles must be an object of user names to roles"),
    ],
)  # fmt: skip
def test_bad_roles_are_refused_naming_the_user_or_role(roles: object, users: dict | None, message: str) -> None:
    assert message in problems_of(roles_config(roles, users))


def test_roles_without_authentication_are_refused() -> None:
    message = problems_of(roles_config(ROLES, AuthenticationEnabled=False))
    assert "AusCAT.Roles needs AuthenticationEnabled" in message


def test_roles_without_access_control_are_refused() -> None:
    config = roles_config(ROLES)
    config["AusCAT"]["AccessControl"] = False
    assert "AusCAT.Roles needs AccessControl" in problems_of(config)


def test_access_control_can_be_off_only_without_roles_and_then_no_filter_is_registered() -> None:
    config = {"RegisteredUsers": {"bench": "a-long-enough-password"}, "AusCAT": {"AccessControl": False}}
    auscat_config.validate(config, "orthanc.json")
    assert not Access.from_config(config).enforced
    assert Access.from_config({}).enforced
    assert "AccessControl must be true or false" in problems_of({"AusCAT": {"AccessControl": "no"}})


@pytest.mark.parametrize(("key", "value"), [("AuditMaxMegabytes", 0), ("AuditFiles", "ten"), ("AuditFiles", True)])
def test_bad_audit_settings_are_refused(key: str, value: object) -> None:
    assert f"AusCAT.{key} must be a positive number" in problems_of({"AusCAT": {key: value}})


def test_the_readme_shows_the_role_table_as_the_layer_prints_it() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert auscat_access.markdown() in readme, "README.md: rerun auscat_access.py --markdown into section 5"


class FullDisk:
    """A file whose every write fails as on a full filesystem."""

    def write(self, _text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def seek(self, *_args: int) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_an_unwritable_audit_file_is_reported_once_and_the_stream_still_gets_every_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "container.log"
    with log.open("w") as stream:
        trail = AuditTrail(tmp_path / "audit", max_megabytes=1, files=1, stream_fd=stream.fileno())
        trail.logger.handlers[0].stream = FullDisk()
        for number in range(3):
            trail.write(f'{{"n":{number}}}')
        trail.close()
    assert log.read_text().splitlines() == ['{"n":0}', '{"n":1}', '{"n":2}']
    reports = [line for line in capfd.readouterr().err.splitlines() if "cannot be written" in line]
    assert len(reports) == 1, reports
    assert "No space left on device" in reports[0]


def line(user: str, method: str, path: str, decision: str = "allowed", time: str = "2026-12-02T10:00:00.000Z") -> dict:
    return {"time": time, "kind": "http", "user": user, "role": "researcher", "client": "10.0.0.7", "method": method,
            "path": path, "resource": resource_of(path), "decision": decision, "why": ""}  # fmt: skip


def test_the_audit_files_are_read_oldest_first_skipping_a_cut_line(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    (directory / "audit.jsonl.2").write_text('{"n": 1}\n')
    (directory / "audit.jsonl.10").write_text('{"n": 0}\n')
    (directory / "audit.jsonl.1").write_text('{"n": 2}\n{"n": 3, "cut')
    (directory / "audit.jsonl").write_text('{"n": 4}\n')
    assert [entry["n"] for entry in auscat_audit.read_lines(directory)] == [0, 1, 2, 4]


def test_who_accessed_a_study_through_its_parts_and_dicomweb() -> None:
    lines = [
        line("alice", "GET", f"/instances/{INSTANCE}/file"),
        line("alice", "DELETE", f"/studies/{STUDY}", "denied"),
        line("bob", "GET", "/dicom-web/studies/1.2.3/series"),
        line("carol", "GET", f"/patients/{PATIENT}"),
        line("dave", "GET", "/tools/now"),
    ]
    report = auscat_audit.who_accessed(lines, {STUDY, INSTANCE}, {"1.2.3"})
    assert [entry["user"] for entry in report["requests"]] == ["alice", "alice", "bob"]
    assert report["users"]["alice"] == {
        "requests": 2, "downloads": 1, "denied": 1, "stored": 0, "refused": 0, "associations": 0,
        "associations_refused": 0, "first": "2026-12-02T10:00:00.000Z", "last": "2026-12-02T10:00:00.000Z",
    }  # fmt: skip


def test_the_summary_counts_the_associations_of_each_calling_ae() -> None:
    lines = [
        json.loads(auscat_audit.association_line(decision, aet, "10.42.42.250"))
        for decision, aet in (("accepted", "CTP"), ("accepted", "CTP"), ("refused", "CTP"), ("refused", "X"))
    ]
    users = auscat_audit.summarise(lines)
    assert (users["AE CTP"]["associations"], users["AE CTP"]["associations_refused"]) == (2, 1)
    assert (users["AE X"]["associations"], users["AE X"]["associations_refused"]) == (0, 1)


def test_an_instance_line_holds_the_sender_and_the_uid_and_leaves_empty_fields_out() -> None:
    moment = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.UTC)
    stored = json.loads(auscat_audit.instance_line(
        "stored", "C-STORE", "1.2.3.4", instance_id=INSTANCE, calling_aet="CTP", called_aet="ORTHANC",
        client="10.0.0.9", now=moment,
    ))  # fmt: skip
    assert stored == {
        "time": "2026-12-02T10:00:00.000Z", "kind": "instance", "origin": "C-STORE", "calling_aet": "CTP",
        "called_aet": "ORTHANC", "client": "10.0.0.9",
        "resource": {"level": "instance", "id": INSTANCE, "instance": "1.2.3.4"}, "decision": "stored",
    }  # fmt: skip
    refused = json.loads(auscat_audit.instance_line("refused", "REST", "", user="ctp-stow", why="no DICM prefix"))
    assert (refused["user"], refused["resource"], refused["why"]) == (
        "ctp-stow",
        {"level": "instance"},
        "no DICM prefix",
    )


def test_who_accessed_counts_stores_and_refusals_per_user_or_calling_ae() -> None:
    lines = [
        json.loads(auscat_audit.instance_line("stored", "C-STORE", "1.2.3.4", instance_id=INSTANCE, calling_aet="CTP")),
        json.loads(auscat_audit.instance_line("refused", "C-STORE", "1.2.3.4", why="PatientName is not empty")),
        json.loads(auscat_audit.instance_line("stored", "REST", "1.2.3.4", user="ctp-stow")),
        line("alice", "GET", f"/instances/{INSTANCE}/file"),
    ]
    users = auscat_audit.who_accessed(lines, {INSTANCE}, {"1.2.3.4"})["users"]
    assert {user: (entry["stored"], entry["refused"], entry["downloads"]) for user, entry in users.items()} == {
        "AE CTP": (1, 0, 0), "?": (0, 1, 0), "ctp-stow": (1, 0, 0), "alice": (0, 0, 1),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "download"),
    [
        ("GET", f"/instances/{INSTANCE}/file", True),
        ("GET", f"/studies/{STUDY}/archive", True),
        ("POST", "/tools/create-archive", True),
        ("GET", "/wado", True),
        ("GET", "/dicom-web/studies/1.2.3/series/1.2.3.4", True),
        ("GET", "/dicom-web/studies/1.2.3/series/1.2.3.4/metadata", False),
        ("GET", "/dicom-web/studies", False),
        ("GET", f"/studies/{STUDY}", False),
        ("POST", "/tools/find", False),
    ],
)
def test_what_counts_as_a_download(method: str, path: str, download: bool) -> None:
    assert auscat_audit.is_download(line("alice", method, path)) == download
    assert not auscat_audit.is_download(line("alice", method, path, "denied"))


def test_what_a_user_downloaded_between_two_times() -> None:
    lines = [
        line("alice", "GET", f"/instances/{INSTANCE}/file", time="2026-11-30T23:59:59.999Z"),
        line("alice", "GET", f"/studies/{STUDY}/archive", time="2026-12-01T08:00:00.000Z"),
        line("alice", "GET", f"/studies/{STUDY}", time="2026-12-01T09:00:00.000Z"),
        line("bob", "GET", f"/studies/{STUDY}/archive", time="2026-12-01T10:00:00.000Z"),
        line("alice", "GET", f"/series/{STUDY}/archive", time="2026-12-02T00:00:00.000Z"),
    ]
    report = auscat_audit.downloads_of(lines, "alice", "2026-12-01", "2026-12-02")
    assert [entry["path"] for entry in report["downloads"]] == [f"/studies/{STUDY}/archive"]


class FakeIndex:
    """Answers the GETs and the lookup `related` makes, for one patient with one study, series and instance."""

    SERIES = "5a5a5a5a-5a5a5a5a-5a5a5a5a-5a5a5a5a-5a5a5a5a"

    def json(self, method: str, path: str, body: object = None) -> object:
        import urllib.error

        study = {"ID": STUDY, "ParentPatient": PATIENT, "MainDicomTags": {"StudyInstanceUID": "1.2.3"}}
        answers = {
            f"/studies/{STUDY}": study,
            f"/studies/{STUDY}/series": [{"ID": self.SERIES, "MainDicomTags": {"SeriesInstanceUID": "1.2.3.4"}}],
            f"/studies/{STUDY}/instances": [{"ID": INSTANCE, "MainDicomTags": {"SOPInstanceUID": "1.2.3.4.5"}}],
        }
        if path not in answers:
            raise urllib.error.HTTPError(path, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return answers[path]

    def send(self, method: str, path: str, data: bytes | None = None) -> bytes:
        assert (method, path) == ("POST", "/tools/lookup")
        return json.dumps([{"ID": STUDY, "Type": "Study"}] if data == b"1.2.3" else []).encode()


def test_a_study_is_related_to_its_parts_its_patient_and_their_uids() -> None:
    import auscat_tool

    described, ids, uids = auscat_tool.related(FakeIndex(), STUDY)
    assert described == {"level": "study", "id": STUDY}
    assert ids == {STUDY, PATIENT, FakeIndex.SERIES, INSTANCE}
    assert uids == {STUDY, "1.2.3", "1.2.3.4", "1.2.3.4.5"}
    described, ids, _ = auscat_tool.related(FakeIndex(), "1.2.3")  # by its StudyInstanceUID
    assert described == {"level": "study", "id": STUDY}
    assert STUDY in ids


def test_a_resource_no_longer_in_the_index_is_matched_by_its_name_alone() -> None:
    import auscat_tool

    described, ids, uids = auscat_tool.related(FakeIndex(), PATIENT)
    assert described == {"level": "not in the index", "id": PATIENT}
    assert ids == uids == {PATIENT}
