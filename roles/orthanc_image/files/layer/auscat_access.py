"""Who may do what over HTTP, and the audit line of each decision.

Each user in RegisteredUsers has one role ("AusCAT": {"Roles": {"<user>": "<role>"}}); a role lists the
methods and paths it may use and anything else is denied. Without a Roles section every registered user is an
admin, as in stock Orthanc. ROLES is the one table of what each role may do: the configuration check reads its
names, the plugin enforces it and `python3 auscat_access.py --markdown` prints it for the documentation.

Orthanc calls the filter only once the Basic login has matched RegisteredUsers (a wrong one gets 401 first), so
the user named in the Authorization header is the authenticated one. The filter sees the effective method
(HEAD and OPTIONS as GET, X-HTTP-Method-Override applied) and the decoded path without its query string; it never
sees the body. The audit line records the path and never the query string, whose values (a QIDO PatientName,
say) are DICOM attribute values.

The filter runs on every request, under Python's lock, in Orthanc's process; so it keeps its own work small. Each
role's rules for a method are one compiled pattern, the user of an Authorization header is remembered, and under
the entrypoint the plugin sends the log reader a short record of the decision (``http_record``), from which the
reader, in its own process, makes the JSON line (``line_of_record``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import auscat_audit

ADMIN = "admin"
ANONYMOUS = "(anonymous)"
# Orthanc's HttpMethod enumeration, as the Python plugin passes it.
METHODS = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}

_LEVEL = r"(?:patients|studies|series|instances)"
_ID = r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}"
_UID = r"[0-9.]+"


@dataclass(frozen=True)
class Rule:
    """Methods on paths matching ``pattern`` (the whole path)."""

    methods: tuple[str, ...]
    pattern: str
    why: str


READ = ("GET",)

# What each role may do. Anything a role does not list is denied.
ROLES: dict[str, tuple[Rule, ...]] = {
    ADMIN: (Rule(("GET", "POST", "PUT", "DELETE"), r"/.*", "everything Orthanc allows in the profile"),),
    "researcher": (
        Rule(READ, r"/|/app/.*|/plugins(?:/[^/]+)*|/favicon\.ico", "the web UI (Orthanc Explorer)"),
        Rule(READ, r"/system|/statistics|/changes|/tools/now(?:-local)?", "the server's description and changes"),
        Rule(READ, rf"/{_LEVEL}(?:/{_ID}(?:/[^/]+)*)?/?", "browse, tags, previews, files and archives"),
        Rule(("POST",), r"/tools/(?:find|lookup)", "search the archive"),
        Rule(("POST",), r"/tools/create-(?:archive|media|media-extended)", "download several resources as one ZIP"),
        Rule(("POST",), rf"/(?:patients|studies|series)/{_ID}/(?:archive|media)", "download one resource as a ZIP"),
        Rule(READ, r"/jobs(?:/[0-9a-f-]+(?:/archive)?)?", "follow and collect an asynchronous download"),
        Rule(READ, rf"/dicom-web/(?:studies|series|instances)(?:/{_UID}|/[a-z]+)*", "DICOMweb QIDO-RS and WADO-RS"),
        Rule(READ, r"/wado", "WADO-URI"),
    ),
    "uploader": (
        Rule(("POST",), r"/instances", "store DICOM files"),
        Rule(("POST",), rf"/dicom-web/studies(?:/{_UID})?", "DICOMweb STOW-RS"),
        Rule(READ, r"/system", "check that the server answers"),
    ),
    "metrics": (
        Rule(READ, r"/tools/metrics-prometheus", "Prometheus metrics"),
        Rule(READ, r"/system", "check that the server answers"),
    ),
}


def _compiled(rules: tuple[Rule, ...]) -> dict[str, tuple[re.Pattern[str], tuple[Rule, ...]]]:
    """Per method: one pattern of the rules that list it (group rN is the rule's index), and those rules."""
    compiled = {}
    for method in ("GET", "POST", "PUT", "DELETE"):
        listed = tuple(rule for rule in rules if method in rule.methods)
        if listed:
            pattern = "|".join(f"(?P<r{index}>{rule.pattern})" for index, rule in enumerate(listed))
            compiled[method] = (re.compile(pattern), listed)
    return compiled


_COMPILED = {role: _compiled(rules) for role, rules in ROLES.items()}
_USERS_KEPT = 1024  # Authorization headers whose user is remembered; past that the memory starts again

_RESOURCE = re.compile(rf"^/(?P<level>{_LEVEL})/(?P<id>{_ID})(?:/|$)")
_DICOMWEB = re.compile(
    rf"^/dicom-web/studies/(?P<study>{_UID})(?:/series/(?P<series>{_UID}))?"
    rf"(?:/instances/(?P<instance>{_UID}))?(?:/|$)"
)
LEVELS = {"patients": "patient", "studies": "study", "series": "series", "instances": "instance"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    user: str
    role: str
    why: str


def user_of(headers: dict[str, str]) -> str:
    """The user of a Basic Authorization header, or ANONYMOUS."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ANONYMOUS
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ANONYMOUS
    user, separator, _ = decoded.partition(":")
    return user if separator and user else ANONYMOUS


def resource_of(path: str) -> dict[str, str] | None:
    """The Orthanc resource (level and Orthanc ID) or DICOMweb UIDs a path names, if any."""
    match = _RESOURCE.match(path)
    if match:
        return {"level": LEVELS[match["level"]], "id": match["id"]}
    match = _DICOMWEB.match(path)
    if match:
        return {key: value for key, value in match.groupdict().items() if value}
    return None


def safe_path(path: str) -> bool:
    """Only plain absolute paths are matched against the rules: no dot segment, empty segment or escape left."""
    if not path.startswith("/") or "%" in path or "\\" in path or "//" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


class Access:
    """The role of each user and the decision on each request."""

    def __init__(self, roles: dict[str, str] | None, enforced: bool = True) -> None:
        # No Roles section: every registered user is an admin, as in stock Orthanc.
        self.roles = roles
        self.users: dict[str, str] = {}  # Authorization header -> its user
        # "AccessControl": false (simulation only, for measuring the filter's cost): no filter, no HTTP audit.
        self.enforced = enforced

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Access:
        section = config.get("AusCAT", {})
        section = section if isinstance(section, dict) else {}
        roles = section.get("Roles")
        return cls(dict(roles) if isinstance(roles, dict) else None, section.get("AccessControl", True) is not False)

    def role_of(self, user: str) -> str | None:
        if self.roles is None:
            return ADMIN
        return self.roles.get(user)

    def user_of(self, headers: dict[str, str]) -> str:
        """``user_of(headers)``, remembered per Authorization header (a client sends the same one each time)."""
        header = headers.get("authorization", "")
        user = self.users.get(header)
        if user is None:
            if len(self.users) >= _USERS_KEPT:
                self.users.clear()
            user = self.users[header] = user_of(headers)
        return user

    def decide(self, method: str, path: str, headers: dict[str, str]) -> Decision:
        user = self.user_of(headers)
        role = self.role_of(user) if user != ANONYMOUS else (ADMIN if self.roles is None else None)
        if role is None:
            return Decision(False, user, "", "no role")
        if not safe_path(path):
            return Decision(False, user, role, "path not in canonical form")
        pattern, rules = _COMPILED.get(role, {}).get(method, (None, ()))
        found = pattern.fullmatch(path) if pattern is not None else None
        if found is not None:
            return Decision(True, user, role, rules[int(found.lastgroup[1:])].why)
        return Decision(False, user, role, "not listed for the role")

    def describe(self) -> str:
        if not self.enforced:
            return "access control off (AccessControl false: no HTTP filter, HTTP requests not audited)"
        if self.roles is None:
            return "roles off (every user is an admin)"
        counts = {role: sum(1 for value in self.roles.values() if value == role) for role in ROLES}
        return "roles " + ", ".join(f"{role} x{count}" for role, count in counts.items() if count)


def http_line(decision: Decision, method: str, path: str, ip: str, now: datetime.datetime | None = None) -> str:
    """The audit line of one HTTP decision: JSON, no query string, no header value, no body."""
    record = {
        "time": auscat_audit.timestamp(now),
        "kind": "http",
        "user": decision.user,
        "role": decision.role,
        "client": ip,
        "method": method,
        "path": path,
        "resource": resource_of(path),
        "decision": "allowed" if decision.allowed else "denied",
        "why": decision.why,
    }
    return json.dumps(record, separators=(",", ":"))


# A record of one HTTP decision for the log reader: the mark, then the time and seven fields apart by SEPARATOR.
RECORD_MARK = "\x1eH"
SEPARATOR = "\x1f"
_RECORD_FIELDS = 8


def http_record(decision: Decision, method: str, path: str, ip: str) -> str:
    """What the plugin sends the log reader for one decision; the JSON line itself when a field holds a separator
    or a line break (which a decoded path or a user name may)."""
    fields = (f"{time.time():.3f}", decision.user, decision.role, ip, method, "1" if decision.allowed else "0",
              decision.why, path)  # fmt: skip
    record = SEPARATOR.join(fields)
    if "\n" in record or record.count(SEPARATOR) != _RECORD_FIELDS - 1:
        return http_line(decision, method, path, ip)
    return RECORD_MARK + record


def line_of_record(record: str) -> str:
    """The audit line of an ``http_record`` (the reader's side); a line that is not a record is returned as it is."""
    if not record.startswith(RECORD_MARK):
        return record
    fields = record[len(RECORD_MARK) :].split(SEPARATOR)
    if len(fields) != _RECORD_FIELDS:
        raise ValueError(f"an HTTP audit record with {len(fields)} fields, not {_RECORD_FIELDS}")
    moment, user, role, ip, method, allowed, why, path = fields
    when = datetime.datetime.fromtimestamp(float(moment), datetime.UTC)
    return http_line(Decision(allowed == "1", user, role, why), method, path, ip, when)


def markdown() -> str:
    """The role table as Markdown, for the README."""
    rows = ["| role | methods | paths | for |", "| --- | --- | --- | --- |"]
    for role, rules in ROLES.items():
        for rule in rules:
            pattern = rule.pattern.replace(_ID, "<id>").replace(_LEVEL, "<level>").replace(_UID, "<uid>")
            pattern = pattern.replace("|", "\\|")
            rows.append(f"| {role} | {', '.join(rule.methods)} | `{pattern}` | {rule.why} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown())
    else:
        print("usage: auscat_access.py --markdown", file=sys.stderr)
        raise SystemExit(2)
