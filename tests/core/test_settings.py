"""Given IOTSCHED_* variables, settings read each field by one rule and refuse bad values."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.errors import ConfigError
from scheduler.settings import Settings


def test_no_variables_give_the_documented_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_field_is_read_from_iotsched_and_its_upper_case_name() -> None:
    env = {
        "IOTSCHED_REGIONS": "eu-central, sa-east",
        "IOTSCHED_SCREENING": "off",
        "IOTSCHED_DRAIN_TARGET_S": "3.5",
        "IOTSCHED_REGION_BUDGET_SLOTS": "12",
        "IOTSCHED_KEY_PREFIX": "prod",
        "IOTSCHED_BROKER_URL_SA_EAST": "redis://sa:6379/0",
    }
    s = Settings.from_env(env)
    assert s.regions == ("eu-central", "sa-east")
    assert (s.screening, s.drain_target_s, s.region_budget_slots) == (False, 3.5, 12)
    assert s.key_prefix == "prod"
    assert s.region_broker_urls == {"sa-east": "redis://sa:6379/0"}
    names = {f.name for f in dataclasses.fields(Settings)} - {"region_broker_urls"}
    for name in names:  # a variable exists for every field, so none is unreachable
        default = getattr(Settings(), name)
        raw = ",".join(default) if isinstance(default, tuple) else str(default)
        assert getattr(Settings.from_env({f"IOTSCHED_{name.upper()}": raw}), name) == default


@pytest.mark.parametrize(
    ("var", "value"),
    [("IOTSCHED_VISIBILITY_TIMEOUT_S", "soon"), ("IOTSCHED_SCREENING", "maybe")],
)
def test_a_bad_value_is_refused_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: value})
