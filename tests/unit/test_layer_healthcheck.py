"""The health check and the lifecycle tools ask Orthanc over loopback as the first registered user."""

from __future__ import annotations

import base64

import auscat_client
import auscat_healthcheck


def test_request_carries_the_first_users_credentials() -> None:
    client = auscat_client.Client({"RegisteredUsers": {"site": "pw", "other": "x"}})
    request = client.request("GET", "/changes?last")
    assert request.full_url == "http://127.0.0.1:8042/changes?last"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(b"site:pw").decode()


def test_request_uses_https_when_orthanc_serves_tls() -> None:
    client = auscat_client.Client({"SslEnabled": True, "RegisteredUsers": {"a": "b"}})
    assert client.request("GET", "/system").full_url.startswith("https://127.0.0.1:8042/")


def test_no_credentials_when_authentication_is_off() -> None:
    client = auscat_client.Client({"AuthenticationEnabled": False, "RegisteredUsers": {"a": "b"}})
    assert client.request("GET", "/system").get_header("Authorization") is None


def test_unreadable_config_is_unhealthy(tmp_path) -> None:
    assert auscat_healthcheck.main(tmp_path / "absent.json") == 1


def test_unreachable_orthanc_is_unhealthy(tmp_path) -> None:
    config = tmp_path / "orthanc.json"
    config.write_text('{"HttpPort": 1, "RegisteredUsers": {"a": "b"}}')
    assert auscat_healthcheck.main(config) == 1
