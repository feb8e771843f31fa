"""The health check and the lifecycle tools ask Orthanc over loopback as the first registered user."""

from __future__ import annotations

import base64
import http.server
import ssl
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import auscat_client
import auscat_healthcheck
import pytest

from tests.harness import tls


def test_request_carries_the_first_users_credentials() -> None:
    client = auscat_client.Client({"RegisteredUsers": {"site": "pw", "other": "x"}})
    request = client.request("GET", "/changes?last")
    assert request.full_url == "http://127.0.0.1:8042/changes?last"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(b"site:pw").decode()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on loopback answering {} to everything, with a certificate from a throwaway CA."""
    bundle = tls.write(tmp_path / "server", ["orthanc.site.example"])["bundle"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(bundle)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], bundle
    server.shutdown()


def test_tls_client_accepts_its_own_servers_certificate(tls_server: tuple[int, Path]) -> None:
    port, bundle = tls_server
    client = auscat_client.Client({"SslEnabled": True, "SslCertificate": str(bundle), "HttpPort": port})
    assert client.request("GET", "/system").full_url.startswith(f"https://127.0.0.1:{port}/")
    assert client.json("GET", "/system") == {}


def test_tls_client_refuses_another_certificate(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = tls_server
    other = tls.write(tmp_path / "other", ["orthanc.site.example"])["bundle"]
    client = auscat_client.Client({"SslEnabled": True, "SslCertificate": str(other), "HttpPort": port})
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.json("GET", "/system")


def test_no_credentials_when_authentication_is_off() -> None:
    client = auscat_client.Client({"AuthenticationEnabled": False, "RegisteredUsers": {"a": "b"}})
    assert client.request("GET", "/system").get_header("Authorization") is None


def test_unreadable_config_is_unhealthy(tmp_path) -> None:
    assert auscat_healthcheck.main(tmp_path / "absent.json") == 1


def test_unreachable_orthanc_is_unhealthy(tmp_path) -> None:
    config = tmp_path / "orthanc.json"
    config.write_text('{"HttpPort": 1, "RegisteredUsers": {"a": "b"}}')
    assert auscat_healthcheck.main(config) == 1
