"""Talk to the Orthanc in this container over loopback, as its first registered admin.

Credentials come from the merged configuration written by the entrypoint, never
from the stack file or the environment, so they do not show in ``docker inspect``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from auscat_access import ADMIN, Access

MERGED_CONFIG = Path(os.environ.get("AUSCAT_MERGED_CONFIG", "/run/auscat/orthanc.json"))
TIMEOUT_SECONDS = 30


def pinned_context(config: dict[str, Any]) -> ssl.SSLContext:
    """TLS that accepts exactly this server's own certificate (SslCertificate).

    The client talks to its own server over loopback, where the certificate's host names do
    not apply; the chain is still verified, anchored at the server's certificate itself."""
    context = ssl.create_default_context(cafile=str(config["SslCertificate"]))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


class Client:
    def __init__(self, config: dict[str, Any], timeout: float = TIMEOUT_SECONDS) -> None:
        scheme = "https" if config.get("SslEnabled", False) else "http"
        self.base = f"{scheme}://127.0.0.1:{config.get('HttpPort', 8042)}"
        self.timeout = timeout
        self.authorization: str | None = None
        users = config.get("RegisteredUsers") or {}
        admins = [user for user in users if Access.from_config(config).role_of(user) == ADMIN]
        if config.get("AuthenticationEnabled", True) and admins:
            user = admins[0]
            self.authorization = "Basic " + base64.b64encode(f"{user}:{users[user]}".encode()).decode()
        self.context = pinned_context(config) if scheme == "https" else None

    @classmethod
    def from_merged_config(cls, path: Path = MERGED_CONFIG, timeout: float = TIMEOUT_SECONDS) -> Client:
        return cls(json.loads(path.read_text(encoding="utf-8")), timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> urllib.request.Request:
        request = urllib.request.Request(self.base + path, data=body, method=method)  # noqa: S310 - fixed http(s)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        return request

    def call(self, method: str, path: str, body: Any = None) -> bytes:
        return self.send(method, path, None if body is None else json.dumps(body).encode())

    def send(self, method: str, path: str, data: bytes | None = None) -> bytes:
        """One request with ``data`` as its body, as it is; the answer's body."""
        with urllib.request.urlopen(  # noqa: S310 - fixed http(s) URL
            self.request(method, path, data), timeout=self.timeout, context=self.context
        ) as reply:
            return reply.read()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self.call(method, path, body) or b"null")
