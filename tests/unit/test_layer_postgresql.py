"""The PostgreSQL index in the image layer: its configuration, its plugin, and the wait for the database."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import auscat_config
import auscat_entrypoint
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT = auscat_config.load(REPOSITORY / "files" / "orthanc.json")
INDEX = {
    "EnableIndex": True,
    "EnableStorage": False,
    "Host": "postgresql",
    "Port": 5432,
    "Database": "orthanc",
    "Username": "orthanc",
    "Password": "Generated-Database-Password-0042",
}


def with_index(**changes: object) -> dict:
    section = {key: value for key, value in {**INDEX, **changes}.items() if value is not None}
    return auscat_config.merge(DEFAULT, {"PostgreSQL": section})


def test_an_enabled_index_loads_the_postgresql_plugin_after_the_layers_own() -> None:
    config = with_index()
    auscat_config.validate(config, "secret")
    plugins = auscat_config.with_layer_plugin(config)["Plugins"]
    assert plugins[-2:] == [auscat_config.PYTHON_PLUGIN, auscat_config.POSTGRESQL_INDEX_PLUGIN]


def test_without_the_section_the_postgresql_plugin_stays_unloaded() -> None:
    assert auscat_config.POSTGRESQL_INDEX_PLUGIN not in auscat_config.with_layer_plugin(DEFAULT)["Plugins"]
    assert (
        auscat_config.POSTGRESQL_INDEX_PLUGIN
        not in auscat_config.with_layer_plugin(with_index(EnableIndex=False))["Plugins"]
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"EnableStorage": True}, "EnableStorage is true: DICOM files must stay on the data volume"),
        ({"Host": None}, r"PostgreSQL.Host must be set \(str\)"),
        ({"Port": "5432"}, r"PostgreSQL.Port must be set \(int\)"),
        ({"Password": ""}, r"PostgreSQL.Password must be set \(str\)"),
        ({"EnableIndex": "true"}, "PostgreSQL.EnableIndex must be true or false"),
    ],
)
def test_an_unusable_postgresql_section_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(auscat_config.ConfigError, match=message):
        auscat_config.validate(with_index(**changes), "secret")


def test_production_refuses_a_weak_database_password() -> None:
    config = with_index(Password="orthanc")  # noqa: S106 - the known default the check refuses
    config["AusCAT"] = {**config["AusCAT"], "Profile": "production"}
    with pytest.raises(
        auscat_config.ConfigError, match="PostgreSQL: the password of database user 'orthanc'"
    ) as refused:
        auscat_config.validate(config, "secret")
    assert "Generated-Database" not in str(refused.value)


def test_index_wait_must_be_a_number_of_seconds() -> None:
    config = auscat_config.merge(DEFAULT, {"AusCAT": {"IndexWaitSeconds": "soon"}})
    with pytest.raises(auscat_config.ConfigError, match="IndexWaitSeconds must be a number of seconds"):
        auscat_config.validate(config, "secret")


def test_orthanc_starts_at_once_once_the_database_accepts_connections() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert auscat_entrypoint.wait_for_index(with_index(Host="127.0.0.1", Port=port), sleep=pytest.fail)


def test_orthanc_waits_for_the_database_then_gives_up_with_a_message(capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    now = [0.0]
    config = with_index(Host="127.0.0.1", Port=port)
    config["AusCAT"] = {**config["AusCAT"], "IndexWaitSeconds": 5}
    assert not auscat_entrypoint.wait_for_index(
        config, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    output = capsys.readouterr().out
    assert f"waiting for the PostgreSQL index at 127.0.0.1:{port}" in output
    assert "still unreachable" in output
    assert now[0] == 5


def test_sqlite_configurations_never_wait() -> None:
    assert auscat_entrypoint.wait_for_index(DEFAULT, sleep=pytest.fail)


def load_database_entrypoint():
    path = REPOSITORY / "roles" / "orthanc_image" / "files" / "postgresql" / "auscat_postgresql.py"
    spec = importlib.util.spec_from_file_location("auscat_postgresql", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_database_password_is_quoted_as_an_sql_literal() -> None:
    module = load_database_entrypoint()
    assert module.sql_literal("it's") == "'it''s'"


def test_database_entrypoint_refuses_an_empty_password_secret(tmp_path: Path) -> None:
    module = load_database_entrypoint()
    secret = tmp_path / "postgresql-password"
    secret.write_text("\n", encoding="utf-8")
    with pytest.raises(module.SetupError, match="postgresql-password: the password secret is empty"):
        module.read_password(secret)
    with pytest.raises(module.SetupError, match="cannot read the password secret"):
        module.read_password(tmp_path / "absent")
