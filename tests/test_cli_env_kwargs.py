"""``--env-kwarg`` means the same in train.py and evaluate.py, for every FleetConfig field."""

from __future__ import annotations

import dataclasses
import math

import pytest

import evaluate
from agents.cli import UsageError, parse_env_kwargs
from agents.train_config import config_from_args
from envs.config import FleetConfig


def _as_text(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "()"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def _both(items: list[str]) -> tuple[dict, dict]:
    argv = [a for item in items for a in ("--env-kwarg", item)]
    cfg, _ = config_from_args(argv)
    args = evaluate.build_parser().parse_args(argv)
    return cfg.env_kwargs, parse_env_kwargs(args.env_kwarg)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(FleetConfig)])
def test_both_scripts_parse_every_field_to_its_typed_default(field):
    default = getattr(FleetConfig(), field)
    from_train, from_evaluate = _both([f"{field}={_as_text(default)}"])
    assert from_train == from_evaluate == {field: default}
    assert type(from_train[field]) is type(from_evaluate[field]) is type(default)
    if isinstance(default, tuple):
        assert all(type(a) is type(b) for a, b in zip(from_train[field], default))


@pytest.mark.parametrize("item, expected", [
    ("class_deadlines=0,2,6,12", (0, 2, 6, 12)),
    ("class_deadlines=(0, 2, 6, 12)", (0, 2, 6, 12)),
    ("harvest_months=[6, 7]", (6, 7)),
    ("storage_kwh=Infinity", math.inf),
    ("storage_kwh=0.05", 0.05),
    ("provisioning=1", 1.0),
    ("action_type=discrete", "discrete"),
])
def test_both_scripts_agree_on_the_written_forms(item, expected):
    from_train, from_evaluate = _both([item])
    key = item.split("=", 1)[0]
    assert from_train == from_evaluate == {key: expected}
    assert type(from_evaluate[key]) is type(expected)


@pytest.mark.parametrize("item, named", [
    ("nope=1", "nope"), ("horizon=abc", "horizon"), ("novalue", "KEY=VALUE"),
    ("class_deadlines=a,b", "class_deadlines"),
])
def test_bad_items_are_usage_errors_naming_the_field(item, named):
    with pytest.raises(UsageError, match=named):
        parse_env_kwargs([item])


def test_console_scripts_name_the_scripts_entry_points():
    import importlib
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    scripts = meta["project"]["scripts"]
    assert set(scripts) == {"lrm-train", "lrm-evaluate"}
    for target in scripts.values():
        module, func = target.split(":")
        assert module in meta["tool"]["setuptools"]["py-modules"]
        assert callable(getattr(importlib.import_module(module), func))
