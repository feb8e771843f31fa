"""Where the Orthanc under test is, read from the environment, and a small REST client for it.

The probes run against any deployed AusCAT Orthanc:

    ORTHANC_URL          REST base URL (default http://127.0.0.1:8042)
    ORTHANC_USERNAME     a registered user (default orthanc)
    ORTHANC_PASSWORD     its password (default orthanc)
    ORTHANC_CREDENTIALS_FILE  JSON {"username": ..., "password": ...}, read instead of the two above
    ORTHANC_CA_FILE      CA certificate that an https ORTHANC_URL must chain to (default: system CAs)
    ORTHANC_AET          Orthanc's AE title (default ORTHANC)
    ORTHANC_DICOM_HOST   host of the published DICOM port (default: the host of ORTHANC_URL)
    ORTHANC_DICOM_PORT   published DICOM port; unset when 4242 is not published on the host
    ORTHANC_STACK        Swarm stack name, for probes from the stack network (needs the Docker socket)
    ORTHANC_SENDER_IP    address on the stack network that probes send DICOM from (an allow-listed sender's)
    ORTHANC_SENDER_AET   AE title that probes send DICOM as (default AUSCAT-PROBE)
    ORTHANC_STACK_FILE   rendered stack file, for the redeploy probe (default /etc/auscat/<stack>.yml)
    ORTHANC_ALLOW_RESTART=1     allow the persistence probes to restart and redeploy the service
    AUSCAT_PROBES_REQUIRE_ALL=1 a probe whose setting is missing fails instead of being skipped
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from http.client import RemoteDisconnected
from pathlib import Path
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Target:
    url: str
    username: str
    password: str
    aet: str
    dicom_host: str
    dicom_port: int | None
    stack: str | None
    stack_file: str | None
    allow_restart: bool
    require_all: bool
    ca_file: str | None = None
    sender_ip: str | None = None
    sender_aet: str = "AUSCAT-PROBE"

    @classmethod
    def from_environment(cls, env: os._Environ[str] | dict[str, str] = os.environ) -> Target:
        url = env.get("ORTHANC_URL", "http://127.0.0.1:8042").rstrip("/")
        stack = env.get("ORTHANC_STACK") or None
        port = env.get("ORTHANC_DICOM_PORT") or None
        credentials = {"username": env.get("ORTHANC_USERNAME", "orthanc"), "password": env.get("ORTHANC_PASSWORD")}
        if env.get("ORTHANC_CREDENTIALS_FILE"):
            credentials = json.loads(Path(env["ORTHANC_CREDENTIALS_FILE"]).read_text(encoding="utf-8"))
        return cls(
            url=url,
            username=credentials["username"],
            password=credentials["password"] or "orthanc",
            aet=env.get("ORTHANC_AET", "ORTHANC"),
            dicom_host=env.get("ORTHANC_DICOM_HOST") or urlparse(url).hostname or "127.0.0.1",
            dicom_port=int(port) if port else None,
            stack=stack,
            stack_file=env.get("ORTHANC_STACK_FILE") or (f"/etc/auscat/{stack}.yml" if stack else None),
            allow_restart=env.get("ORTHANC_ALLOW_RESTART") == "1",
            require_all=env.get("AUSCAT_PROBES_REQUIRE_ALL") == "1",
            ca_file=env.get("ORTHANC_CA_FILE") or None,
            sender_ip=env.get("ORTHANC_SENDER_IP") or None,
            sender_aet=env.get("ORTHANC_SENDER_AET") or "AUSCAT-PROBE",
        )

    @property
    def verify(self) -> str | bool:
        """What requests verifies the server's certificate against."""
        return self.ca_file or True

    def ssl_context(self) -> ssl.SSLContext:
        """The same trust for clients that take an SSL context (httpx, pyorthanc)."""
        return ssl.create_default_context(cafile=self.ca_file)

    @property
    def service(self) -> str | None:
        return f"{self.stack}_orthanc" if self.stack else None

    @property
    def network(self) -> str | None:
        return f"{self.stack}_default" if self.stack else None


class ResendOnIdleClose(Retry):
    """Sends a request again, once, when Orthanc closed the kept-alive connection it was sent on.

    Orthanc closes an idle HTTP connection after ``KeepAliveTimeout`` (1 s). A request written to
    a pooled connection at that moment gets no answer at all ("Remote end closed connection without
    response"): Orthanc never read it, so sending it again on a new connection is safe. Every other
    failure (refused connection, reset mid-answer, timeout) is raised exactly as without this class.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"total": 1, "connect": 0, "read": 1, "redirect": 0, "status": 0, "other": 0,
                            "allowed_methods": None, "raise_on_status": False, **kwargs})  # fmt: skip

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if not (isinstance(error, ProtocolError) and any(isinstance(arg, RemoteDisconnected) for arg in error.args)):
            return Retry(0, read=False).increment(method, url, response, error, _pool, _stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class Orthanc:
    """Authenticated REST calls; every call raises on an HTTP error."""

    def __init__(self, url: str, username: str | None, password: str | None, verify: str | bool = True) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would override session.verify): only
        # ``verify``. The session talks to one Orthanc and needs no proxy or netrc from the environment.
        self.session.trust_env = False
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=ResendOnIdleClose()))
        self.session.verify = verify
        if username is not None:
            self.session.auth = (username, password or "")

    @classmethod
    def for_target(cls, target: Target) -> Orthanc:
        return cls(target.url, target.username, target.password, target.verify)

    def get(self, path: str, **kwargs) -> requests.Response:
        reply = self.session.get(self.url + path, timeout=TIMEOUT_SECONDS, **kwargs)
        reply.raise_for_status()
        return reply

    def post(self, path: str, **kwargs) -> requests.Response:
        reply = self.session.post(self.url + path, timeout=TIMEOUT_SECONDS, **kwargs)
        reply.raise_for_status()
        return reply

    def delete(self, path: str) -> None:
        self.session.delete(self.url + path, timeout=TIMEOUT_SECONDS).raise_for_status()

    def lookup(self, uid: str, level: str) -> str | None:
        """Orthanc's identifier of the resource with this DICOM UID, or None."""
        for match in self.post("/tools/lookup", data=uid).json():
            if match["Type"] == level:
                return match["ID"]
        return None

    def delete_patient(self, patient_id: str) -> None:
        """Delete the patient with this PatientID, if Orthanc has it."""
        resource = self.patient_id_of(patient_id)
        if resource:
            self.delete(f"/patients/{resource}")

    def patient_id_of(self, patient_id: str) -> str | None:
        found = self.post("/tools/find", json={"Level": "Patient", "Query": {"PatientID": patient_id}}).json()
        return found[0] if found else None
