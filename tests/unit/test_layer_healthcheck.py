"""The health check asks the database, as the first registered user, over loopback."""

from __future__ import annotations

import base64

import auscat_healthcheck


def test_request_reads_changes_with_first_user() -> None:
    request = auscat_healthcheck.probe_request({"RegisteredUsers": {"site": "pw", "other": "x"}})
    assert request.full_url == "http://127.0.0.1:8042/changes?last"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(b"site:pw").decode()


def test_request_uses_https_when_orthanc_serves_tls() -> None:
    request = auscat_healthcheck.probe_request({"SslEnabled": True, "RegisteredUsers": {"a": "b"}})
    assert request.full_url.startswith("https://127.0.0.1:8042/")


def test_no_credentials_when_authentication_is_off() -> None:
    request = auscat_healthcheck.probe_request({"AuthenticationEnabled": False, "RegisteredUsers": {"a": "b"}})
    assert request.get_header("Authorization") is None


def test_unreadable_config_is_unhealthy(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(auscat_healthcheck, "MERGED_CONFIG", tmp_path / "absent.json")
    assert auscat_healthcheck.main() == 1
