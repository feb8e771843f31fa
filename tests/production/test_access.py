"""Only registered users get in, on every route family, and only over a verified TLS chain."""

from __future__ import annotations

import pytest
import requests

from tests.harness.orthanc import TIMEOUT_SECONDS, Orthanc, Target
from tests.harness.study import StoredStudy

# One route of each family Orthanc and its plugins serve, with the method that reaches it.
ROUTES = [
    ("GET", "/system"),
    ("GET", "/patients"),
    ("GET", "/studies"),
    ("GET", "/series"),
    ("GET", "/instances"),
    ("GET", "/changes"),
    ("GET", "/jobs"),
    ("GET", "/modalities"),
    ("POST", "/tools/find"),
    ("POST", "/tools/execute-script"),
    ("POST", "/tools/create-dicom"),
    ("GET", "/app/explorer.html"),
    ("GET", "/dicom-web/studies"),
    ("POST", "/dicom-web/studies"),
    ("GET", "/wado?requestType=WADO&studyUID=1&seriesUID=1&objectUID=1"),
    ("GET", "/plugins"),
    ("GET", "/plugins/dicom-web"),
    ("GET", "/instances/0/file"),
]
EXPORT_PATH = "/var/lib/orthanc/export.dcm"  # a path in the container; the export must be refused
DEFAULT_CREDENTIALS = [("admin", "admin"), ("orthanc", "orthanc")]


def call(target: Target, method: str, route: str, auth: tuple[str, str] | None, **kwargs) -> requests.Response:
    return requests.request(
        method, target.url + route, auth=auth, timeout=TIMEOUT_SECONDS, verify=target.verify, **kwargs
    )


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_unauthenticated_request_is_rejected(target: Target, method: str, route: str) -> None:
    assert call(target, method, route, None).status_code == 401


@pytest.mark.parametrize("credentials", DEFAULT_CREDENTIALS, ids=lambda c: "/".join(c))
@pytest.mark.parametrize(("method", "route"), ROUTES[:3])
def test_default_credentials_are_rejected(target: Target, method: str, route: str, credentials: tuple) -> None:
    assert call(target, method, route, credentials).status_code == 401


def test_lua_execution_is_refused(target: Target) -> None:
    reply = call(target, "POST", "/tools/execute-script", (target.username, target.password), data="print(1)")
    assert reply.status_code == 403, reply.text


def test_writing_to_the_servers_filesystem_is_refused(target: Target, stored_study: StoredStudy) -> None:
    orthanc = Orthanc.for_target(target)
    instance = orthanc.lookup(str(stored_study.study.ct[0].SOPInstanceUID), "Instance")
    assert instance is not None
    reply = call(
        target,
        "POST",
        f"/instances/{instance}/export",
        (target.username, target.password),
        data=EXPORT_PATH,
    )
    assert reply.status_code == 403, reply.text


def test_webdav_is_off(target: Target) -> None:
    reply = call(target, "PROPFIND", "/webdav/", (target.username, target.password), headers={"Depth": "1"})
    assert reply.status_code in (404, 405), reply.status_code


def test_system_reports_a_secure_http_server(target: Target) -> None:
    system = Orthanc.for_target(target).get("/system").json()
    assert system["IsHttpServerSecure"] is True


def need_tls(target: Target) -> None:
    if not target.url.startswith("https://"):
        pytest.skip("ORTHANC_URL is not https: this deployment does not serve TLS")


def test_tls_chain_is_verified_against_the_sites_ca(target: Target) -> None:
    need_tls(target)
    assert target.url.startswith("https://")
    assert target.ca_file
    assert call(target, "GET", "/system", (target.username, target.password)).status_code == 200
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(target.url + "/system", timeout=TIMEOUT_SECONDS)  # the system's CAs only


def test_plain_http_gets_no_answer(target: Target) -> None:
    need_tls(target)
    plain = target.url.replace("https://", "http://", 1)
    try:
        reply = requests.get(plain + "/system", auth=(target.username, target.password), timeout=TIMEOUT_SECONDS)
    except requests.exceptions.ConnectionError:
        return
    assert reply.status_code != 200
