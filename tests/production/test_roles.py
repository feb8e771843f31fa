"""Who may do what: the scenario's user of each role against a matrix of routes and methods on the real
server, the extraction path of pyorthanc as a researcher, and the audit line of each decision."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pyorthanc
import pytest
import requests
from pydicom import dcmread

from tests.harness import phantoms, stack
from tests.harness.audit import audit_file, audit_lines, instance_lines
from tests.harness.orthanc import TIMEOUT_SECONDS, Orthanc, Target
from tests.harness.playbook import run_playbook, unfolded_output
from tests.harness.study import StoredStudy

ALL = frozenset(("admin", "researcher", "uploader", "metrics"))
READERS = frozenset(("admin", "researcher"))
EXPORT_PATH = "/var/tmp/auscat-export"  # noqa: S108 - only ever refused: production forbids writing files


@dataclass(frozen=True)
class Ids:
    patient: str
    study: str
    series: str
    instance: str
    study_uid: str
    series_uid: str
    sop_uid: str
    instance_bytes: bytes


@dataclass(frozen=True)
class Case:
    """One route and method; the roles it is for answer ``allowed_status``, every other role 403."""

    method: str
    path: str
    allowed: frozenset[str]
    allowed_status: int = 200
    body: Callable[[Ids], dict] | None = None
    admin_runs: bool = True


def stow(ids: Ids) -> dict:
    return stow_body(ids.instance_bytes)


def stow_body(instance: bytes) -> dict:
    """The request arguments of a STOW-RS upload of one instance."""
    boundary = "auscat-roles"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance
    body += f"\r\n--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return {"data": body, "headers": {"Content-Type": content_type}}


CASES = [
    # The web UI and the server's description.
    Case("GET", "/", READERS, 307),
    Case("GET", "/app/explorer.html", READERS),
    Case("GET", "/app/explorer.js", READERS),
    Case("GET", "/plugins", READERS),
    Case("GET", "/plugins/explorer.js", READERS),
    Case("GET", "/system", ALL),
    Case("GET", "/statistics", READERS),
    Case("GET", "/changes", READERS),
    Case("GET", "/tools/now", READERS),
    # Browse, download, search.
    Case("GET", "/patients", READERS),
    Case("GET", "/patients/{patient}", READERS),
    Case("GET", "/patients/{patient}/studies", READERS),
    Case("GET", "/studies", READERS),
    Case("GET", "/studies/{study}", READERS),
    Case("GET", "/studies/{study}/series", READERS),
    Case("GET", "/studies/{study}/archive", READERS),
    Case("GET", "/series/{series}", READERS),
    Case("GET", "/series/{series}/instances", READERS),
    Case("GET", "/instances/{instance}", READERS),
    Case("GET", "/instances/{instance}/file", READERS),
    Case("GET", "/instances/{instance}/tags", READERS),
    Case("GET", "/instances/{instance}/simplified-tags", READERS),
    Case("GET", "/instances/{instance}/metadata", READERS),
    Case("GET", "/instances/{instance}/preview", READERS),
    Case("GET", "/instances/{instance}/frames/0/preview", READERS),
    Case("POST", "/tools/find", READERS, body=lambda ids: {"json": {"Level": "Study", "Query": {}}}),
    Case("POST", "/tools/lookup", READERS, body=lambda ids: {"data": ids.study_uid}),
    Case("POST", "/studies/{study}/archive", READERS, body=lambda ids: {"json": {}}),
    Case("POST", "/tools/create-archive", READERS, body=lambda ids: {"json": {"Resources": [ids.study]}}),
    Case("GET", "/dicom-web/studies", READERS),
    Case("GET", "/dicom-web/studies/{study_uid}/series", READERS),
    Case("GET", "/dicom-web/studies/{study_uid}/series/{series_uid}/metadata", READERS),
    Case("GET", "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", READERS),
    Case("GET", "/wado?requestType=WADO&studyUID={study_uid}&seriesUID={series_uid}&objectUID={sop_uid}", READERS),
    Case("GET", "/jobs", READERS),
    # Store.
    Case("POST", "/instances", frozenset(("admin", "uploader")), body=lambda ids: {"data": ids.instance_bytes}),
    Case("POST", "/dicom-web/studies", frozenset(("admin", "uploader")), body=stow),
    # Metrics.
    Case("GET", "/tools/metrics-prometheus", frozenset(("admin", "metrics"))),
    # The server's own settings, readable by the admin only.
    Case("GET", "/modalities", frozenset(("admin",))),
    Case("GET", "/peers", frozenset(("admin",))),
    Case("GET", "/tools/log-level", frozenset(("admin",))),
    Case("GET", "/dicom-web/servers", frozenset(("admin",))),
    Case("PUT", "/tools/log-level", frozenset(("admin",)), body=lambda ids: {"data": "default"}),
    # Deny by default: a route no role but the admin's catch-all lists, and a listed route with another method.
    Case("GET", "/tools/not-a-route", frozenset(("admin",)), 404),
    Case("GET", "/tools/find", frozenset(("admin",)), 405),
    # Changes and sends, never run as the admin.
    Case("DELETE", "/patients/{patient}", frozenset(("admin",)), admin_runs=False),
    Case("DELETE", "/studies/{study}", frozenset(("admin",)), admin_runs=False),
    Case("DELETE", "/series/{series}", frozenset(("admin",)), admin_runs=False),
    Case("DELETE", "/instances/{instance}", frozenset(("admin",)), admin_runs=False),
    Case("GET", "/patients/{patient}?_method=DELETE", frozenset(("admin",)), admin_runs=False),
    Case("PUT", "/patients/{patient}/protected", frozenset(("admin",)), body=lambda ids: {"data": "1"},
         admin_runs=False),
    Case("PUT", "/studies/{study}/labels/cohort", frozenset(("admin",)), admin_runs=False),
    Case("POST", "/studies/{study}/anonymize", frozenset(("admin",)), body=lambda ids: {"json": {}}, admin_runs=False),
    Case("POST", "/studies/{study}/modify", frozenset(("admin",)), body=lambda ids: {"json": {"Replace": {}}},
         admin_runs=False),
    Case("POST", "/modalities/ctp/store", frozenset(("admin",)), body=lambda ids: {"data": ids.study},
         admin_runs=False),
    Case("POST", "/instances/{instance}/export", frozenset(("admin",)), body=lambda ids: {"data": EXPORT_PATH},
         admin_runs=False),
    Case("POST", "/tools/execute-script", frozenset(("admin",)), body=lambda ids: {"data": "print(1)"},
         admin_runs=False),
    Case("POST", "/tools/reset", frozenset(("admin",)), admin_runs=False),
    Case("POST", "/tools/shutdown", frozenset(("admin",)), admin_runs=False),
]  # fmt: skip


def session(user: Target) -> requests.Session:
    client = requests.Session()
    client.trust_env = False
    client.verify = user.verify
    client.auth = (user.username, user.password)
    return client


def call(client: requests.Session, user: Target, case: Case, ids: Ids) -> int:
    path = case.path.format(**{key: value for key, value in vars(ids).items() if isinstance(value, str)})
    reply = client.request(
        case.method,
        user.url + path,
        timeout=TIMEOUT_SECONDS,
        allow_redirects=False,
        **(case.body(ids) if case.body else {}),
    )
    return reply.status_code


@pytest.fixture(scope="module")
def ids(orthanc: Orthanc, stored_study: StoredStudy) -> Ids:
    study = stored_study.study
    instance = orthanc.lookup(str(study.ct[0].SOPInstanceUID), "Instance")
    assert instance is not None
    return Ids(
        patient=orthanc.patient_id_of(study.patient_id),
        study=orthanc.lookup(study.study_uid, "Study"),
        series=orthanc.lookup(study.ct_series_uid, "Series"),
        instance=instance,
        study_uid=study.study_uid,
        series_uid=study.ct_series_uid,
        sop_uid=str(study.ct[0].SOPInstanceUID),
        instance_bytes=orthanc.get(f"/instances/{instance}/file").content,
    )


@pytest.fixture(scope="module")
def matrix(users: dict[str, Target], ids: Ids, orthanc: Orthanc) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(role, method, path) -> (expected, answered), for every case each role runs."""
    answers = {}
    for role, user in users.items():
        client = session(user)
        for case in CASES:
            if role == "admin" and not case.admin_runs:
                continue
            expected = case.allowed_status if role in case.allowed else 403
            answers[(role, case.method, case.path)] = (expected, call(client, user, case, ids))
    print("\n".join(f"{role:10} {method:6} {path:70} {answered}" for (role, method, path), (_, answered)
                    in answers.items()))  # fmt: skip
    return answers


def test_every_role_is_checked_on_at_least_40_routes_and_methods(matrix: dict) -> None:
    per_role = {role: sum(1 for key in matrix if key[0] == role) for role in ALL}
    assert min(per_role.values()) >= 40, per_role


@pytest.mark.parametrize("role", sorted(ALL))
def test_each_role_gets_exactly_the_answers_of_the_table(matrix: dict, role: str) -> None:
    wrong = {key[1:]: answer for key, answer in matrix.items() if key[0] == role and answer[0] != answer[1]}
    assert not wrong, f"{role}: (expected, answered) differ on {wrong}"


def test_the_researchers_refused_deletes_left_the_data_in_place(matrix: dict, orthanc: Orthanc, ids: Ids) -> None:
    assert matrix[("researcher", "DELETE", "/patients/{patient}")] == (403, 403)
    assert orthanc.get(f"/instances/{ids.instance}").status_code == 200
    assert orthanc.get(f"/patients/{ids.patient}").json()["Studies"] == [ids.study]


def test_a_wrong_password_gets_401_before_any_role_applies(users: dict[str, Target]) -> None:
    for role, user in users.items():
        for path in ("/system", "/patients", "/tools/reset"):
            reply = requests.get(user.url + path, auth=(user.username, user.password + "x"), verify=user.verify,
                                 timeout=TIMEOUT_SECONDS)  # fmt: skip
            assert reply.status_code == 401, (role, path)


def test_a_researcher_extracts_a_series_with_pyorthanc(users: dict[str, Target], stored_study: StoredStudy) -> None:
    researcher = users["researcher"]
    client = pyorthanc.Orthanc(
        researcher.url, username=researcher.username, password=researcher.password, verify=researcher.ssl_context()
    )
    found = pyorthanc.find_series(client, query={"SeriesInstanceUID": stored_study.study.ct_series_uid})
    assert len(found) == 1
    archive = zipfile.ZipFile(io.BytesIO(found[0].get_zip()))
    sop_uids = {str(dcmread(io.BytesIO(archive.read(name))).SOPInstanceUID) for name in archive.namelist()
                if not name.endswith("/")}  # fmt: skip
    assert sop_uids == {str(ds.SOPInstanceUID) for ds in stored_study.study.ct}
    with pytest.raises(httpx.HTTPError, match="HTTP code: 403"):
        client.delete_series_id(found[0].identifier)


def test_a_denied_request_and_an_allowed_download_each_leave_an_audit_line(
    matrix: dict, users: dict[str, Target], ids: Ids, docker_client: docker.DockerClient
) -> None:
    lines = [line for line in audit_lines() if line["kind"] == "http"]
    alice = users["researcher"].username
    denied = [line for line in lines if line.get("user") == alice and line["method"] == "DELETE"
              and line["path"] == f"/patients/{ids.patient}"]  # fmt: skip
    assert denied, "no audit line for the researcher's refused DELETE"
    assert denied[-1]["decision"] == "denied"
    assert denied[-1]["role"] == "researcher"
    assert denied[-1]["resource"] == {"level": "patient", "id": ids.patient}
    downloaded = [line for line in lines
                  if line.get("user") == alice and line["path"] == f"/instances/{ids.instance}/file"]  # fmt: skip
    assert downloaded, "no audit line for the researcher's download"
    assert downloaded[-1]["decision"] == "allowed"
    assert downloaded[-1]["resource"] == {"level": "instance", "id": ids.instance}
    assert downloaded[-1]["client"]
    # Never a password, a query string (its values can be DICOM attribute values) or a body.
    text = audit_file().read_text()
    for user in users.values():
        assert user.password not in text
    assert "requestType" not in text
    assert ids.study_uid not in {line["path"] for line in lines if line["path"].startswith("/wado")}
    # The same line is in the container log.
    logs = stack.task_logs(docker_client, users["admin"].service).splitlines()
    assert any(f'"path":"/patients/{ids.patient}"'.encode() in line and b'"decision":"denied"' in line
               for line in logs)  # fmt: skip
    # The container log is rotated, so the copy cannot fill the disk.
    log_driver = docker_client.services.get(users["admin"].service).attrs["Spec"]["TaskTemplate"]["LogDriver"]
    assert log_driver == {"Name": "json-file", "Options": {"max-size": "50m", "max-file": "5"}}


def test_a_stored_instance_leaves_an_audit_line_naming_its_sender(users: dict[str, Target], ids: Ids) -> None:
    target = users["admin"]
    stored = [line for line in instance_lines(ids.sop_uid) if line["origin"] == "C-STORE"]
    assert stored, f"no audit line for the C-STORE of {ids.sop_uid}"
    assert stored[0]["decision"] == "stored"
    assert (stored[0]["calling_aet"], stored[0]["called_aet"]) == (target.sender_aet, target.aet)
    assert stored[0]["client"] == target.sender_ip
    assert stored[0]["resource"] == {"level": "instance", "id": ids.instance, "instance": ids.sop_uid}


def test_an_upload_leaves_an_audit_line_naming_the_uploader(users: dict[str, Target], phantom_cleanup: list) -> None:
    """A new instance over REST and another over STOW, as the uploader (an instance already stored is not stored
    again and leaves only its request's line)."""
    uploader = users["uploader"]
    study = phantoms.make_study(slices=2)
    phantom_cleanup.append(study.patient_id)
    client = session(uploader)
    over_rest, over_stow = (phantoms.part10(dataset) for dataset in study.ct)
    assert client.post(uploader.url + "/instances", data=over_rest, timeout=TIMEOUT_SECONDS).status_code == 200
    reply = client.post(uploader.url + "/dicom-web/studies", timeout=TIMEOUT_SECONDS, **stow_body(over_stow))
    assert reply.status_code == 200, reply.text
    origins = {}
    for dataset in study.ct:
        lines = instance_lines(str(dataset.SOPInstanceUID))
        assert [(line["decision"], line.get("user")) for line in lines] == [("stored", uploader.username)], lines
        assert lines[0]["client"], lines
        origins[lines[0]["origin"]] = str(dataset.SOPInstanceUID)
    assert set(origins) == {"REST", "plugin (DICOMweb STOW)"}, origins


def test_the_audit_playbook_says_who_accessed_a_study_and_what_a_user_downloaded(
    matrix: dict, users: dict[str, Target], ids: Ids
) -> None:
    alice = users["researcher"].username
    result = run_playbook("audit.yml", {"orthanc_lifecycle_audit_resource": ids.study_uid})
    output = unfolded_output(result)
    assert result.returncode == 0, output
    assert f"study {ids.study}:" in output, output
    assert re.search(rf"{re.escape(alice)}: [0-9]+ requests, [1-9][0-9]* downloads, [1-9][0-9]* denied", output), output
    result = run_playbook(
        "audit.yml", {"orthanc_lifecycle_audit_user": alice, "orthanc_lifecycle_audit_since": "2026-01-01"}
    )
    output = unfolded_output(result)
    assert result.returncode == 0, output
    assert f"GET /instances/{ids.instance}/file;" in output, output
    assert f"GET /studies/{ids.study}/archive;" in output, output
    assert f"DELETE /patients/{ids.patient}" not in output, output  # refused: not a download
    result = run_playbook("audit.yml")
    assert result.returncode != 0
    assert "Give either orthanc_lifecycle_audit_resource" in unfolded_output(result)


@pytest.mark.parametrize(
    ("users_override", "message"),
    [
        ([{"name": "site-admin", "role": "admin"}, {"name": "alice", "role": "superuser"},
          {"name": "ctp-stow", "role": "uploader"}, {"name": "prometheus", "role": "metrics"}],
         "user 'alice' has the unknown role 'superuser'"),
        ([{"name": "site-admin", "role": "admin"}, {"name": "bob", "role": "researcher"}],
         "orthanc_users: user 'bob' has no password in orthanc_registered_users"),
        ([{"name": "site-admin", "role": "admin"}, {"name": "site-admin", "role": "researcher"}],
         "orthanc_users: user 'site-admin' is listed more than once"),
        ([{"name": "site-admin", "role": "researcher"}, {"name": "alice", "role": "researcher"},
          {"name": "ctp-stow", "role": "uploader"}, {"name": "prometheus", "role": "metrics"}],
         "no user has the role 'admin'"),
    ],
    ids=["unknown role", "no password", "duplicate", "no admin"],
)  # fmt: skip
def test_bad_users_fail_the_rollout_naming_the_user_and_change_nothing(
    users_override: list, message: str, docker_client: docker.DockerClient, target: Target
) -> None:
    before = docker_client.services.get(target.service).attrs["Spec"]
    result = run_playbook("site.yml", {"orthanc_users": users_override}, tags="orthanc_image,orthanc_preflight")
    assert result.returncode != 0, unfolded_output(result)
    assert message in unfolded_output(result), unfolded_output(result)
    assert docker_client.services.get(target.service).attrs["Spec"] == before


def test_without_roles_the_researcher_could_delete(
    users: dict[str, Target], orthanc: Orthanc, docker_client: docker.DockerClient, target: Target, tmp_path: Path
) -> None:
    """The safeguard removed (no roles: every user an admin), the researcher's DELETE goes through; restored,
    it is refused again."""
    throwaway = phantoms.make_study(slices=1)
    stored = orthanc.post("/instances", data=phantoms.part10(throwaway.ct[0])).json()["ID"]
    researcher = session(users["researcher"])
    try:
        result = run_playbook("site.yml", {"orthanc_users": []})
        assert result.returncode == 0, unfolded_output(result)
        stack.wait_until_healthy(docker_client, target.service)
        assert researcher.delete(f"{target.url}/instances/{stored}", timeout=TIMEOUT_SECONDS).status_code == 200
    finally:
        result = run_playbook("site.yml")
        assert result.returncode == 0, unfolded_output(result)
        stack.wait_until_healthy(docker_client, target.service)
    again = orthanc.post("/instances", data=phantoms.part10(throwaway.ct[0])).json()["ID"]
    assert researcher.delete(f"{target.url}/instances/{again}", timeout=TIMEOUT_SECONDS).status_code == 403
    orthanc.delete(f"/instances/{again}")
