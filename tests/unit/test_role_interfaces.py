"""Every role variable is documented in the role's argument spec, and every documented one has a default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists()))
def test_defaults_and_argument_spec_name_the_same_variables(role: str) -> None:
    defaults = set(load(ROLES / role / "defaults" / "main.yml"))
    spec = set(load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"])
    assert defaults - spec == set(), "defaults missing from meta/argument_specs.yml"
    assert spec - defaults == set(), "argument spec options without a default"
    assert all(name.startswith(f"{role}_") for name in defaults), "variables carry the role prefix"
