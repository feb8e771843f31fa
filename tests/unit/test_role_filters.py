"""The orthanc role's filters that check orthanc_users and render AusCAT.Roles."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "orthanc" / "filter_plugins" / "orthanc_config.py"
_spec = importlib.util.spec_from_file_location("orthanc_config_filters", _PLUGIN)
assert _spec
assert _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

REGISTERED = {"site-admin": "p1", "alice": "p2", "ctp-stow": "p3"}
USERS = [
    {"name": "site-admin", "role": "admin"},
    {"name": "alice", "role": "researcher"},
    {"name": "ctp-stow", "role": "uploader"},
]


def test_users_that_match_the_registered_ones_with_an_admin_pass() -> None:
    assert filters.orthanc_user_problems(USERS, REGISTERED) == []
    assert filters.orthanc_roles(USERS) == {"site-admin": "admin", "alice": "researcher", "ctp-stow": "uploader"}


def test_each_problem_names_the_user() -> None:
    users = [*USERS, {"name": "alice", "role": "admin"}, {"name": "bob", "role": "researcher"}]
    assert filters.orthanc_user_problems(users, {**REGISTERED, "carol": "p4"}) == [
        "user 'alice' is listed more than once",
        "user 'bob' has no password in orthanc_registered_users",
        "user 'carol' of orthanc_registered_users has no role",
    ]


def test_a_list_without_an_admin_is_refused() -> None:
    users = [{**user, "role": "researcher"} for user in USERS]
    assert filters.orthanc_user_problems(users, REGISTERED) == [
        "no user has the role 'admin': nobody could administer the server"
    ]
