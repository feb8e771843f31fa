"""Merge and validation of the AusCAT layer's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import auscat_config
import auscat_entrypoint
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT = REPOSITORY / "files" / "orthanc.json"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_default_is_valid() -> None:
    auscat_config.validate(auscat_config.load(DEFAULT), str(DEFAULT))


def test_secret_users_replace_default_users_entirely(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.json", json.dumps({"RegisteredUsers": {"site": "s3cret-site-password"}}))
    merged = auscat_config.build(DEFAULT, secret)
    assert merged["RegisteredUsers"] == {"site": "s3cret-site-password"}


def test_keys_absent_from_secret_keep_their_default(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.json", json.dumps({"Name": "Site A"}))
    merged = auscat_config.build(DEFAULT, secret)
    assert merged["Name"] == "Site A"
    assert merged["RegisteredUsers"] == auscat_config.load(DEFAULT)["RegisteredUsers"]


def test_nested_objects_are_replaced_not_merged() -> None:
    merged = auscat_config.merge({"DicomModalities": {"a": ["A", "h", 1]}}, {"DicomModalities": {"b": ["B", "h", 2]}})
    assert merged["DicomModalities"] == {"b": ["B", "h", 2]}


def test_missing_secret_leaves_the_default(tmp_path: Path) -> None:
    assert auscat_config.build(DEFAULT, tmp_path / "absent.json") == auscat_config.load(DEFAULT)


def test_layer_plugin_is_loaded_whatever_plugins_a_secret_lists(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.json", json.dumps({"Plugins": ["/usr/share/orthanc/plugins/libOrthancGdcm.so"]}))
    merged = auscat_config.build(DEFAULT, secret)
    assert merged["Plugins"] == ["/usr/share/orthanc/plugins/libOrthancGdcm.so", auscat_config.PYTHON_PLUGIN]
    assert merged["PythonScript"] == "/usr/local/lib/auscat/auscat_plugin.py"


def test_comments_are_accepted_like_orthanc_does(tmp_path: Path) -> None:
    text = '{\n  // site name\n  "Name": "A // not a comment", /* block\n comment */ "DicomAet": "SITE"\n}\n'
    config = auscat_config.load(write(tmp_path / "c.json", text))
    assert config == {"Name": "A // not a comment", "DicomAet": "SITE"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{\n  "Name": "x",\n}\n', 3),
        ('{\n  "RegisteredUsers": {"a": "b"\n', 3),
        ('{\n  /* comment */\n  "Name" "x"\n}\n', 3),
    ],
)
def test_malformed_json_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "broken.json", text)
    with pytest.raises(auscat_config.ConfigError) as error:
        auscat_config.load(path)
    assert str(path) in str(error.value)
    assert f"line {line}" in str(error.value)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(auscat_config.ConfigError, match="top level must be a JSON object"):
        auscat_config.load(write(tmp_path / "list.json", "[1, 2]"))


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(auscat_config.ConfigError, match="cannot read"):
        auscat_config.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"StorageDirectory": "/srv/db"}, "StorageDirectory"),
        ({"IndexDirectory": "/srv"}, "IndexDirectory"),
        ({"HttpPort": 80}, "HttpPort"),
        ({"DicomPort": 104}, "DicomPort"),
        ({"AuthenticationEnabled": "yes"}, "AuthenticationEnabled must be true or false"),
        ({"RegisteredUsers": {}}, "RegisteredUsers is empty"),
        ({"RegisteredUsers": ["admin"]}, "RegisteredUsers must be an object"),
        ({"RegisteredUsers": {"admin": ""}}, "RegisteredUsers must be an object"),
        ({"DicomAet": "A-VERY-LONG-AE-TITLE"}, "DicomAet"),
        ({"PythonScript": "/srv/mine.py"}, "PythonScript"),
        ({"MaximumStorageSize": 1000}, "MaximumStorageSize set without"),
        ({"MaximumPatientCount": 10, "MaximumStorageMode": "Recycle"}, "would delete the oldest patients"),
        ({"Plugins": "/usr/share/orthanc/plugins"}, "Plugins must be a list"),
        ({"AusCAT": {"IntegrityCheck": "no"}}, "AusCAT.IntegrityCheck must be true or false"),
        ({"AusCAT": {"AnonymisationGate": 1}}, "AusCAT.AnonymisationGate must be true or false"),
        ({"AusCAT": {"Profile": "prod"}}, "AusCAT.Profile must be one of simulation, production"),
        ({"AusCAT": {"IdentifyingAttributes": "PatientAddress"}}, "must be a list of DICOM keywords"),
        ({"AusCAT": {"IdentifyingAttributes": ["PatientAdress"]}}, "not DICOM keywords: 'PatientAdress'"),
        ({"AuthenticationEnabled": False, "RemoteAccessAllowed": True}, "anyone could read the archive"),
    ],
)
def test_invalid_settings_are_refused(override: dict, message: str) -> None:
    merged = auscat_config.merge(auscat_config.load(DEFAULT), override)
    with pytest.raises(auscat_config.ConfigError, match=message):
        auscat_config.validate(merged, "secret")


def test_a_storage_limit_that_refuses_new_data_is_allowed() -> None:
    merged = auscat_config.merge(
        auscat_config.load(DEFAULT), {"MaximumStorageSize": 1000, "MaximumStorageMode": "Reject"}
    )
    auscat_config.validate(merged, "secret")


def test_no_users_is_allowed_when_authentication_is_off() -> None:
    auscat_config.validate({"AuthenticationEnabled": False, "RegisteredUsers": {}}, "secret")


def test_entrypoint_writes_a_private_merged_config_and_execs_orthanc(tmp_path: Path, monkeypatch) -> None:
    secret = write(tmp_path / "secret.json", json.dumps({"RegisteredUsers": {"site": "pw-1234567890abcd"}}))
    merged = tmp_path / "run" / "orthanc.json"
    monkeypatch.setattr(auscat_entrypoint, "DEFAULT_CONFIG", DEFAULT)
    monkeypatch.setattr(auscat_entrypoint, "SECRET_CONFIG", secret)
    monkeypatch.setattr(auscat_entrypoint, "MERGED_CONFIG", merged)
    calls = []
    monkeypatch.setattr(auscat_entrypoint.os, "execvp", lambda binary, argv: calls.append(argv))
    monkeypatch.setattr(auscat_entrypoint, "forbid_new_privileges", lambda: calls.append("no_new_privs"))
    monkeypatch.setattr(auscat_entrypoint, "start_log_reader", lambda config, args: calls.append(args) or [])
    auscat_entrypoint.main(["--verbose"])
    assert calls == ["no_new_privs", ["--verbose"], ["Orthanc", "--verbose", str(merged)]]
    assert json.loads(merged.read_text())["RegisteredUsers"] == {"site": "pw-1234567890abcd"}
    assert merged.stat().st_mode & 0o777 == 0o600


def test_entrypoint_exits_non_zero_without_starting_orthanc_on_bad_secret(tmp_path: Path, monkeypatch, capsys) -> None:
    secret = write(tmp_path / "secret.json", "{ not json")
    monkeypatch.setattr(auscat_entrypoint, "DEFAULT_CONFIG", DEFAULT)
    monkeypatch.setattr(auscat_entrypoint, "SECRET_CONFIG", secret)
    monkeypatch.setattr(auscat_entrypoint, "MERGED_CONFIG", tmp_path / "merged.json")
    monkeypatch.setattr(auscat_entrypoint.os, "execvp", lambda *_: pytest.fail("Orthanc must not start"))
    assert auscat_entrypoint.main([]) == 2
    assert f"{secret}: invalid JSON at line 1" in capsys.readouterr().err
    assert not (tmp_path / "merged.json").exists()


def test_check_config_reads_standard_input(monkeypatch, capsys) -> None:
    monkeypatch.setattr(auscat_entrypoint, "DEFAULT_CONFIG", DEFAULT)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO('{"Name": "Site"}'))
    assert auscat_entrypoint.main(["--check-config", "-"]) == 0
    assert "valid" in capsys.readouterr().out


# A configuration meeting the production profile; each test below breaks one guarantee.
PRODUCTION = {
    "AusCAT": {"Profile": "production", "AnonymisationGate": True},
    "RegisteredUsers": {"researcher": "Tq8-vL2p-Xw4n-Rb7s"},
    "RemoteAccessAllowed": True,
    "AuthenticationEnabled": True,
    "ExecuteLuaEnabled": False,
    "RestApiWriteToFileSystemEnabled": False,
    "WebDavEnabled": False,
    "DicomAlwaysAllowEcho": False,
    "DicomAlwaysAllowStore": False,
    "DicomCheckCalledAet": True,
    "DicomCheckModalityHost": True,
    "LimitFindResults": 1000,
    "LimitFindInstances": 10000,
    "DicomModalities": {"ctp": {"AET": "CTP", "Host": "10.0.0.5", "Port": 104}},
}


def test_production_configuration_is_valid() -> None:
    auscat_config.validate(auscat_config.merge(auscat_config.load(DEFAULT), PRODUCTION), "secret")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"RegisteredUsers": {"site": "admin"}}, "password of user 'site' is a known default"),
        ({"RegisteredUsers": {"pacs": "Orthanc"}}, "password of user 'pacs' is a known default"),
        ({"RegisteredUsers": {"a": "a-very-secure-password"}}, "password of user 'a' is a known default"),
        ({"RegisteredUsers": {"r": "CHANGE-ME-to-a-long-random-password"}}, "still the example's placeholder"),
        ({"RegisteredUsers": {"r": "Short-but-random"[:15]}}, "shorter than 16 characters"),
        ({"AuthenticationEnabled": False}, "AuthenticationEnabled must be true in production"),
        ({"ExecuteLuaEnabled": True}, "ExecuteLuaEnabled must be false"),
        ({"RestApiWriteToFileSystemEnabled": True}, "RestApiWriteToFileSystemEnabled must be false"),
        ({"WebDavEnabled": True}, "WebDavEnabled must be false"),
        ({"DicomAlwaysAllowEcho": True}, "DicomAlwaysAllowEcho must be false"),
        ({"DicomAlwaysAllowStore": True}, "DicomAlwaysAllowStore must be false"),
        ({"DicomCheckCalledAet": False}, "DicomCheckCalledAet must be true"),
        ({"DicomCheckModalityHost": False}, "DicomCheckModalityHost must be true"),
        ({"LimitFindResults": 0}, "LimitFindResults must be a positive number"),
        ({"LimitFindInstances": None}, "LimitFindInstances must be a positive number"),
        ({"DicomModalities": {}}, "DicomModalities is empty"),
        ({"AusCAT": {"Profile": "production", "AccessControl": False}}, "AusCAT.AccessControl must be true"),
    ],
)
def test_production_refuses_weak_settings(override: dict, message: str) -> None:
    config = {key: value for key, value in {**PRODUCTION, **override}.items() if value is not None}
    with pytest.raises(auscat_config.ConfigError, match=message) as refused:
        auscat_config.validate(auscat_config.merge(auscat_config.load(DEFAULT), config), "secret")
    for password in config["RegisteredUsers"].values():
        assert password not in str(refused.value)


def test_simulation_profile_keeps_its_sample_password() -> None:
    auscat_config.validate(auscat_config.load(DEFAULT), "default")


def test_check_config_requires_the_profile_asked_for(monkeypatch, capsys) -> None:
    monkeypatch.setattr(auscat_entrypoint, "DEFAULT_CONFIG", DEFAULT)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO('{"Name": "Site"}'))
    assert auscat_entrypoint.main(["--check-config", "-", "--profile", "production"]) == 2
    assert "declares profile 'simulation', not 'production'" in capsys.readouterr().err


def test_tls_without_its_certificate_file_is_refused(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.json", json.dumps({"SslEnabled": True, "SslCertificate": "/absent.pem"}))
    with pytest.raises(auscat_config.ConfigError, match=r"SslCertificate '/absent\.pem' is not a file"):
        auscat_config.build(DEFAULT, secret)
