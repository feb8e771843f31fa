"""Only registered users get in: the REST API, the web UI and DICOMweb all demand credentials."""

from __future__ import annotations

import pytest
import requests

from tests.harness.orthanc import TIMEOUT_SECONDS, Target

ROUTES = ["/system", "/patients", "/instances", "/app/explorer.html", "/dicom-web/studies", "/tools/find"]


def status_of(target: Target, route: str, auth: tuple[str, str] | None) -> int:
    method = "POST" if route == "/tools/find" else "GET"
    body = {"Level": "Patient", "Query": {}} if method == "POST" else None
    reply = requests.request(
        method, target.url + route, auth=auth, json=body, timeout=TIMEOUT_SECONDS, verify=target.verify
    )
    return reply.status_code


@pytest.mark.parametrize("route", ROUTES)
def test_unauthenticated_request_is_rejected(target: Target, route: str) -> None:
    assert status_of(target, route, None) == 401


@pytest.mark.parametrize("route", ROUTES)
def test_wrong_password_is_rejected(target: Target, route: str) -> None:
    assert status_of(target, route, (target.username, target.password + "-wrong")) == 401


@pytest.mark.parametrize("route", ROUTES)
def test_registered_user_is_let_in(target: Target, route: str) -> None:
    assert status_of(target, route, (target.username, target.password)) == 200
