"""Load, merge and validate the Orthanc configuration of the AusCAT layer.

The image bakes a default (simulation) configuration. A site's production
configuration arrives as the Swarm secret /run/secrets/orthanc.json. Every
top-level key of the secret *replaces* the default's key of the same name, so a
secret's RegisteredUsers is the complete list of users: the simulation users can
never survive next to production ones. The layer's own plugin is always loaded,
whatever list of Plugins a secret gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Settings that the image and the stack are built around; a different value
# would put data outside the volume or move ports away from the published ones.
FIXED_SETTINGS: dict[str, Any] = {
    "StorageDirectory": "/var/lib/orthanc/db",
    "IndexDirectory": "/var/lib/orthanc/db",
    "HttpPort": 8042,
    "DicomPort": 4242,
    "PythonScript": "/usr/local/lib/auscat/auscat_plugin.py",
}

# Orthanc's Python plugin runs the layer's checks (auscat_plugin.py) on every upload route.
PYTHON_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPython.so"
# The PostgreSQL index: loaded when a "PostgreSQL" section enables it. DICOM files always stay on
# the volume, so the plugin's storage area is refused.
POSTGRESQL_SECTION = "PostgreSQL"
POSTGRESQL_INDEX_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"
POSTGRESQL_REQUIRED = {"Host": str, "Port": int, "Database": str, "Username": str, "Password": str}
LAYER_SECTION = "AusCAT"
LAYER_BOOLEAN_SETTINGS = ("IntegrityCheck", "AnonymisationGate", "AccessControl")
PROFILES = ("simulation", "production")

# The production profile: settings of the Orthanc Book's "Securing Orthanc" that must hold,
# with Orthanc's own default for a setting that is absent.
PRODUCTION_SETTINGS: dict[str, tuple[Any, Any]] = {
    # key: (required value, Orthanc's default)
    "AuthenticationEnabled": (True, True),
    "ExecuteLuaEnabled": (False, False),
    "RestApiWriteToFileSystemEnabled": (False, False),
    "WebDavEnabled": (False, True),
    "DicomAlwaysAllowEcho": (False, True),
    "DicomAlwaysAllowStore": (False, True),
    "DicomCheckCalledAet": (True, False),
    "DicomCheckModalityHost": (True, False),
}
PRODUCTION_LIMITS = ("LimitFindResults", "LimitFindInstances")
MIN_PASSWORD_LENGTH = 16
# Passwords from Orthanc's and AusCAT's samples and the usual defaults; compared case-insensitively.
KNOWN_PASSWORDS = frozenset(
    ("admin", "orthanc", "password", "a-very-secure-password", "changeme", "secret", "research", "auscat")
)
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me")

BOOLEAN_SETTINGS = (
    "AuthenticationEnabled",
    "RemoteAccessAllowed",
    "DicomServerEnabled",
    "HttpServerEnabled",
    "SslEnabled",
    "DicomAlwaysAllowEcho",
    "DicomAlwaysAllowStore",
    "DicomCheckCalledAet",
    "ExecuteLuaEnabled",
    "StorageCompression",
    "RestApiWriteToFileSystemEnabled",
    "WebDavEnabled",
    "DicomCheckModalityHost",
)

MAX_AET_LENGTH = 16

# A string literal, a // comment or a /* */ comment: Orthanc's own parser
# accepts comments, so operators may copy commented samples from its book.
_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


class ConfigError(Exception):
    """A configuration problem, with the file it was found in."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside strings, keeping line numbers."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith('"'):
            return token
        return re.sub(r"[^\n]", " ", token)

    return _TOKEN.sub(replace, text)


def parse(text: str, source: str) -> dict[str, Any]:
    """Parse configuration text; errors name the source, line and column."""
    try:
        value = json.loads(strip_comments(text))
    except json.JSONDecodeError as error:
        raise ConfigError(source, f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(source, f"top level must be a JSON object, not {type(value).__name__}")
    return value


def load(path: Path) -> dict[str, Any]:
    """Read and parse one configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not UTF-8 text") from None
    return parse(text, str(path))


def merge(default: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys of ``override`` replace those of ``default``; nothing is deep-merged."""
    return {**default, **override}


def validate(config: dict[str, Any], source: str) -> None:
    """Refuse settings that would give a broken or unreachable server."""
    problems: list[str] = []
    for key, expected in FIXED_SETTINGS.items():
        if key in config and config[key] != expected:
            problems.append(
                f"{key} is {config[key]!r} but the image requires {expected!r}"
                " (publish other host ports through the deployment instead)"
            )
    for key in BOOLEAN_SETTINGS:
        if key in config and not isinstance(config[key], bool):
            problems.append(f"{key} must be true or false, not {config[key]!r}")

    # Research data is never deleted to make room: a storage or patient limit must refuse new data.
    limited = [key for key in ("MaximumStorageSize", "MaximumPatientCount") if config.get(key, 0) not in (0, None)]
    if limited and config.get("MaximumStorageMode", "Recycle") != "Reject":
        problems.append(
            f'{" and ".join(limited)} set without "MaximumStorageMode": "Reject": Orthanc would delete'
            " the oldest patients to make room"
        )

    plugins = config.get("Plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(plugin, str) for plugin in plugins):
        problems.append("Plugins must be a list of paths")

    problems.extend(layer_section_problems(config.get(LAYER_SECTION, {})))
    problems.extend(postgresql_problems(config.get(POSTGRESQL_SECTION, {})))

    users = config.get("RegisteredUsers", {})
    if not isinstance(users, dict) or not all(
        isinstance(name, str) and isinstance(password, str) and name and password for name, password in users.items()
    ):
        problems.append("RegisteredUsers must be an object of non-empty user names to password strings")
        users = {}
    elif config.get("AuthenticationEnabled", True) and not users:
        problems.append("AuthenticationEnabled is true but RegisteredUsers is empty: nobody could log in")
    if config.get("RemoteAccessAllowed", False) and not config.get("AuthenticationEnabled", True):
        problems.append("RemoteAccessAllowed is true but AuthenticationEnabled is false: anyone could read the archive")
    problems.extend(roles_problems(config, users))
    if profile(config) == "production":
        problems.extend(production_problems(config, users))

    aet = config.get("DicomAet", "ORTHANC")
    if not isinstance(aet, str) or not 0 < len(aet) <= MAX_AET_LENGTH:
        problems.append(f"DicomAet must be a string of 1 to {MAX_AET_LENGTH} characters, not {aet!r}")

    if problems:
        raise ConfigError(source, "; ".join(problems))


def profile(config: dict[str, Any]) -> str:
    section = config.get(LAYER_SECTION, {})
    return section.get("Profile", "simulation") if isinstance(section, dict) else "simulation"


def layer_section_problems(section: Any) -> list[str]:
    """Problems of the "AusCAT" section, read by the layer's plugin."""
    if not isinstance(section, dict):
        return [f"{LAYER_SECTION} must be an object"]
    problems = [
        f"{LAYER_SECTION}.{key} must be true or false, not {section[key]!r}"
        for key in LAYER_BOOLEAN_SETTINGS
        if key in section and not isinstance(section[key], bool)
    ]
    wait = section.get("IndexWaitSeconds", 0)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
        problems.append(f"{LAYER_SECTION}.IndexWaitSeconds must be a number of seconds, not {wait!r}")
    for key, kind in (("AuditMaxMegabytes", (int, float)), ("AuditFiles", (int,))):
        value = section.get(key, 1)
        if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
            problems.append(f"{LAYER_SECTION}.{key} must be a positive number, not {value!r}")
    if section.get("Profile", "simulation") not in PROFILES:
        problems.append(f"{LAYER_SECTION}.Profile must be one of {', '.join(PROFILES)}, not {section['Profile']!r}")
    if "IdentifyingAttributes" in section:
        import auscat_anonymity

        keywords = section["IdentifyingAttributes"]
        if not isinstance(keywords, list):
            problems.append(f"{LAYER_SECTION}.IdentifyingAttributes must be a list of DICOM keywords")
        else:
            try:
                auscat_anonymity.identifying_tags(keywords)
            except ValueError as error:
                problems.append(f"{LAYER_SECTION}.IdentifyingAttributes: {error}")
    return problems


def roles_problems(config: dict[str, Any], users: dict[str, str]) -> list[str]:
    """Problems of "AusCAT": {"Roles": {user: role}} against RegisteredUsers and auscat_access.ROLES."""
    import auscat_access

    section = config.get(LAYER_SECTION, {})
    if not isinstance(section, dict) or "Roles" not in section:
        return []
    roles = section["Roles"]
    if section.get("AccessControl", True) is False:
        return [f"{LAYER_SECTION}.Roles needs AccessControl: with AccessControl false no role would be enforced"]
    known = ", ".join(auscat_access.ROLES)
    if not isinstance(roles, dict) or not all(isinstance(role, str) for role in roles.values()):
        return [f"{LAYER_SECTION}.Roles must be an object of user names to roles ({known})"]
    problems = [
        f"{LAYER_SECTION}.Roles: user {user!r} has the unknown role {role!r} (known: {known})"
        for user, role in roles.items()
        if role not in auscat_access.ROLES
    ]
    where = f"{LAYER_SECTION}.Roles"
    problems += [f"{where}: user {user!r} has no password in RegisteredUsers" for user in roles if user not in users]
    problems += [f"{where}: user {user!r} of RegisteredUsers has no role" for user in users if user not in roles]
    if auscat_access.ADMIN not in roles.values():
        problems.append(f"{where} gives no user the role {auscat_access.ADMIN!r}: nobody could administer")
    if not config.get("AuthenticationEnabled", True):
        problems.append(
            f"{LAYER_SECTION}.Roles needs AuthenticationEnabled: without it the user of a request is not checked"
        )
    return problems


def postgresql_index(config: dict[str, Any]) -> dict[str, Any] | None:
    """The PostgreSQL section when it enables the index, else None."""
    section = config.get(POSTGRESQL_SECTION, {})
    return section if isinstance(section, dict) and section.get("EnableIndex") is True else None


def postgresql_problems(section: Any) -> list[str]:
    """Problems of the "PostgreSQL" section (Orthanc's PostgreSQL index plugin)."""
    if not isinstance(section, dict):
        return [f"{POSTGRESQL_SECTION} must be an object"]
    problems = [
        f"{POSTGRESQL_SECTION}.{key} must be true or false, not {section[key]!r}"
        for key in ("EnableIndex", "EnableStorage", "EnableSsl", "Lock")
        if key in section and not isinstance(section[key], bool)
    ]
    if section.get("EnableStorage") is True:
        problems.append(
            f"{POSTGRESQL_SECTION}.EnableStorage is true: DICOM files must stay on the data volume"
            " (/var/lib/orthanc/db), only the index may move to PostgreSQL"
        )
    if section.get("EnableIndex") is True and "ConnectionUri" not in section:
        for key, kind in POSTGRESQL_REQUIRED.items():
            value = section.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or value in ("", 0):
                problems.append(f"{POSTGRESQL_SECTION}.{key} must be set ({kind.__name__}) when EnableIndex is true")
    return problems


def password_problem(user: str, password: str) -> str | None:
    """Why a password is unfit for production, naming the user and never the password."""
    lowered = password.lower()
    if lowered in KNOWN_PASSWORDS or lowered == user.lower():
        return f"the password of user {user!r} is a known default or equals the user name"
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return f"the password of user {user!r} is still the example's placeholder"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password of user {user!r} is shorter than {MIN_PASSWORD_LENGTH} characters"
    return None


def production_problems(config: dict[str, Any], users: dict[str, str]) -> list[str]:
    """What keeps a configuration from the production profile's guarantees."""
    problems = [
        f"{key} must be {json.dumps(required)} in production"
        for key, (required, default) in PRODUCTION_SETTINGS.items()
        if config.get(key, default) != required
    ]
    for key in PRODUCTION_LIMITS:
        value = config.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"{key} must be a positive number in production (0 means unlimited)")
    problems.extend(
        f"RegisteredUsers: {problem}"
        for user, password in users.items()
        if (problem := password_problem(user, password)) is not None
    )
    index = postgresql_index(config)
    if index is not None and isinstance(index.get("Password"), str):
        problem = password_problem(str(index.get("Username", "")), index["Password"])
        if problem is not None:
            problems.append(f"{POSTGRESQL_SECTION}: {problem.replace('user', 'database user', 1)}")
    layer = config.get(LAYER_SECTION, {})
    if isinstance(layer, dict) and layer.get("AccessControl", True) is False:
        problems.append(f"{LAYER_SECTION}.AccessControl must be true in production: HTTP requests are audited")
    modalities = config.get("DicomModalities", {})
    if not isinstance(modalities, dict) or not modalities:
        problems.append("DicomModalities is empty: in production only listed senders (CTP) may store")
    return problems


def with_layer_plugin(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration with the layer's plugin and script loaded (validated configurations only),
    and the PostgreSQL index plugin when the configuration enables that index."""
    plugins = list(config.get("Plugins", []))
    required = [PYTHON_PLUGIN, *([POSTGRESQL_INDEX_PLUGIN] if postgresql_index(config) is not None else [])]
    plugins.extend(plugin for plugin in required if plugin not in plugins)
    return {**config, "Plugins": plugins, "PythonScript": FIXED_SETTINGS["PythonScript"]}


def build(default_path: Path, secret_path: Path) -> dict[str, Any]:
    """The effective configuration: the default, replaced key by key by the secret if present."""
    config = load(default_path)
    source = str(default_path)
    if secret_path.exists():
        config = merge(config, load(secret_path))
        source = f"{default_path} + {secret_path}"
    validate(config, source)
    if config.get("SslEnabled", False):
        certificate = Path(str(config.get("SslCertificate", "")))
        if not certificate.is_file():
            raise ConfigError(source, f"SslEnabled is true but SslCertificate {str(certificate)!r} is not a file")
    return with_layer_plugin(config)
