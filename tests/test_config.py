"""FleetConfig: frozen, validated with errors naming the field and its allowed range, presets,
JSON forms, and the ways ``gym.make`` accepts a config."""

from __future__ import annotations

import dataclasses
import json
import math

import gymnasium as gym
import numpy as np
import pytest

from envs import ENV_IDS, PRESETS, FleetConfig, resolve_config

NAN, INF = float("nan"), math.inf

#: (field, bad value, text the message must contain besides the field name: the allowed range).
BAD_VALUES = [
    ("horizon", 0, "[1, 10000000]"),
    ("horizon", -5, "[1, 10000000]"),
    ("horizon", 2.5, "integer"),
    ("horizon", True, "integer"),
    ("horizon", "288", "integer"),
    ("slot_minutes", 0.0, "(0, "),
    ("slot_minutes", NAN, "(0, "),
    ("slot_minutes", INF, "finite"),
    ("arrival_rate", 0.0, "(0, "),
    ("arrival_rate", -1.0, "(0, "),
    ("arrival_rate", NAN, "(0, "),
    ("arrival_rate", INF, "finite"),
    ("class_names", ("a", ""), "non-empty string"),
    ("class_names", (), "non-empty tuple"),
    ("class_shares", (0.5, 0.5), "3 entries"),
    ("class_shares", (0.6, 0.3, 0.2), "sum to 1"),
    ("class_shares", (1.2, -0.1, -0.1), "[0, 1]"),
    ("class_shares", (NAN, 0.5, 0.5), "[0, 1]"),
    ("class_skills", (0, 40, 160), "[1, 100000]"),
    ("class_skills", (10.5, 40, 160), "integer"),
    ("class_skills", (10, 40), "3 entries"),
    ("class_values", (1.0, -1.0, 1.0), "[0, "),
    ("class_values", (1.0, 1.0, INF), "[0, "),
    ("model_names", ("a", "b", 3), "non-empty string"),
    ("model_params_b", (8.0, -32.0, 70.0), "(0, "),
    ("model_j_per_token", (0.0, 0.2, 0.5), "(0, "),
    ("model_j_per_token", (0.1, 0.2), "3 entries"),
    ("model_j_per_token", (0.1, 0.2, INF), "(0, "),
    ("model_step_success", (0.0, 0.6, 0.75), "(0, 1]"),
    ("model_step_success", (0.45, 1.2, 0.75), "(0, 1]"),
    ("model_skill_coverage", (0.99, 1.1, 0.99), "[0, 1]"),
    ("model_skill_coverage", (0.99, NAN, 0.99), "[0, 1]"),
    ("token_budgets", (4096, 1024, 16384), "strictly increasing"),
    ("token_budgets", (1024, 1024, 4096), "strictly increasing"),
    ("token_budgets", (10, 1024, 4096), "[25, "),
    ("token_budgets", (), "non-empty tuple"),
    ("token_budgets", [1024.5, 4096], "integer"),
    ("step_tokens", 0, "[1, 1000000]"),
    ("provisioning", -0.1, "[0, "),
    ("provisioning", NAN, "[0, "),
    ("provisioning", INF, "finite"),
    ("harvest_cv", -0.1, "[0, 100]"),
    ("harvest_cv", NAN, "[0, 100]"),
    ("harvest_cv", INF, "finite"),
    ("storage_kwh", -1.0, "[0, inf]"),
    ("storage_kwh", NAN, "[0, inf]"),
    ("initial_storage_kwh", -0.1, "[0, "),
    ("initial_storage_kwh", INF, "finite"),
    ("charge_efficiency", 0.0, "(0, 1]"),
    ("charge_efficiency", 1.1, "(0, 1]"),
    ("discharge_efficiency", -0.5, "(0, 1]"),
    ("discharge_efficiency", NAN, "(0, 1]"),
    ("idle_power_kw", -1.0, "[0, "),
    ("w_correct", -1.0, "[0, "),
    ("w_aux", NAN, "[0, "),
    ("w_waste", INF, "finite"),
    ("w_leftover", -0.5, "[0, "),
    ("action_type", "box", "continuous"),
    ("action_type", None, "discrete"),
    ("harvest_process", "solar-typo", "iid_gamma"),
    ("arrival_process", "hawkes", "poisson"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_VALUES,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_bad_value_names_field_and_range(field, value, allowed):
    with pytest.raises(ValueError) as exc:
        FleetConfig(**{field: value})
    msg = str(exc.value)
    assert field in msg, msg
    assert allowed in msg, msg
    # The same error comes through every front door.
    with pytest.raises(ValueError, match=field):
        resolve_config("critical", **{field: value})


def test_initial_storage_above_capacity_names_both_fields():
    with pytest.raises(ValueError, match=r"initial_storage_kwh.*storage_kwh=0\.5"):
        FleetConfig(storage_kwh=0.5, initial_storage_kwh=1.0)


def test_bad_value_through_gym_make_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"FleetConfig\.harvest_cv must be in \[0, 100\]"):
        gym.make("lrm/Critical-v0", harvest_cv=-1.0)


def test_allowed_edge_values_are_accepted():
    cfg = FleetConfig(storage_kwh=INF, harvest_cv=0.0, provisioning=0.0, idle_power_kw=0.0,
                      charge_efficiency=1.0, model_skill_coverage=(1.0, 1.0, 1.0),
                      class_shares=(1.0, 0.0, 0.0), horizon=1)
    assert cfg.storage_kwh == INF and cfg.horizon == 1


@pytest.mark.parametrize("front_door", ["FleetConfig", "resolve", "resolve_dict", "make"])
def test_unknown_override_raises_type_error_naming_it(front_door):
    with pytest.raises(TypeError, match="horizn"):
        if front_door == "FleetConfig":
            FleetConfig(horizn=5)
        elif front_door == "resolve":
            resolve_config("critical", horizn=5)
        elif front_door == "resolve_dict":
            resolve_config({"horizn": 5})
        else:
            gym.make("lrm/Critical-v0", horizn=5)


def test_config_of_wrong_type_and_unknown_preset():
    with pytest.raises(TypeError, match="preset name"):
        resolve_config(5)
    with pytest.raises(ValueError, match=r"unknown preset 'critcal'.*critical"):
        resolve_config("critcal")


def test_config_is_frozen_and_hashable():
    cfg = resolve_config("critical")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.horizon = 5  # type: ignore[misc]
    assert hash(cfg) == hash(resolve_config("critical"))
    env = gym.make("lrm/Critical-v0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.unwrapped.config.provisioning = 2.0  # type: ignore[misc]


def test_presets_resolve_and_mean_what_they_say():
    assert set(ENV_IDS.values()) <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert resolve_config(name) is preset
        assert isinstance(preset, FleetConfig)
    crit = PRESETS["critical"]
    assert crit.provisioning == 1.0
    assert PRESETS["oversupply"].provisioning > 1.0
    assert PRESETS["undersupply"].provisioning < 1.0
    assert PRESETS["volatile"].provisioning == 1.0
    assert PRESETS["volatile"].harvest_cv > crit.harvest_cv
    for name in ("critical", "oversupply", "undersupply", "volatile"):
        preset = PRESETS[name]  # paper-faithful: i.i.d. processes, one day of slots
        assert preset.harvest_process == "iid_gamma" and preset.arrival_process == "poisson"
        assert preset.horizon * preset.slot_minutes == 24 * 60


def test_registered_ids_resolve_to_their_presets(env_id):
    env = gym.make(env_id)
    preset = env.spec.kwargs["config"]
    extra = {k: v for k, v in env.spec.kwargs.items() if k != "config"}
    if extra:  # a -v1 id: its preset with the id's observation layout, nothing else
        assert extra == {"observation_version": 1}
        assert env.unwrapped.config == dataclasses.replace(PRESETS[preset], **extra)
    else:
        assert env.unwrapped.config is PRESETS[preset]


def test_json_dict_and_list_forms_accepted():
    cfg = resolve_config("volatile", storage_kwh=INF, class_shares=(0.5, 0.3, 0.2))
    data = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, inf -> Infinity -> inf
    assert isinstance(data["token_budgets"], list)
    again = resolve_config(data)
    assert again == cfg
    assert isinstance(again.token_budgets, tuple)
    listed = FleetConfig(token_budgets=[512, 2048], class_shares=[0.2, 0.3, 0.5])
    assert listed.token_budgets == (512, 2048) and listed.n_configs == 6
    hash(listed)


def test_overrides_do_not_mutate_presets():
    before = dataclasses.asdict(PRESETS["critical"])
    cfg = resolve_config("critical", arrival_rate=30.0)
    assert cfg.arrival_rate == 30.0
    assert dataclasses.asdict(PRESETS["critical"]) == before


@pytest.mark.parametrize("form", ["preset", "instance", "dict", "overrides", "dict+overrides"])
def test_gym_make_config_forms(env_id, form):
    target = dataclasses.replace(PRESETS["volatile"], horizon=12)
    if form == "preset":
        env = gym.make(env_id, config="volatile", horizon=12)
    elif form == "instance":
        env = gym.make(env_id, config=target)
    elif form == "dict":
        env = gym.make(env_id, config=target.to_dict())
    elif form == "overrides":
        base = PRESETS[ENV_IDS[env_id]]
        target = dataclasses.replace(base, arrival_rate=30.0, storage_kwh=0.25)
        env = gym.make(env_id, arrival_rate=30.0, storage_kwh=0.25)
    else:
        env = gym.make(env_id, config={"harvest_cv": 1.0}, horizon=12)
        target = dataclasses.replace(FleetConfig(), harvest_cv=1.0, horizon=12)
    # The id's own kwargs (the -v1 observation layout) apply to every config form.
    target = dataclasses.replace(
        target, observation_version=gym.spec(env_id).kwargs.get("observation_version", 0))
    assert env.unwrapped.config == target
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    # The resolved config drives the episode length.
    n = 0
    while True:
        n += 1
        if env.step(env.action_space.sample())[3]:
            break
    assert n == target.horizon


# ---------------------------------------------------------------------------- numpy values
@pytest.mark.parametrize("field, value, expected", [
    ("horizon", np.int64(96), 96), ("horizon", np.int32(96), 96),
    ("arrival_rate", np.float32(12.5), 12.5), ("arrival_rate", np.float64(12.5), 12.5),
    ("arrival_rate", np.int64(12), 12), ("storage_kwh", np.float64(np.inf), INF),
    ("class_shares", np.array([0.5, 0.25, 0.25]), (0.5, 0.25, 0.25)),
    ("class_skills", (np.int64(5), np.int64(20), np.int64(80)), (5, 20, 80)),
    ("token_budgets", np.array([512, 2048]), (512, 2048)),
    ("class_names", (np.str_("a"), np.str_("b"), np.str_("c")), ("a", "b", "c")),
])
def test_numpy_values_accepted_as_python_values(field, value, expected):
    cfg = FleetConfig(**{field: value})
    got = getattr(cfg, field)
    assert got == expected
    # Stored as Python values: the config is JSON-clean, hashable and equal to the
    # config built from Python values.
    items = got if isinstance(got, tuple) else (got,)
    assert all(type(x) in (int, float, str) for x in items), [type(x) for x in items]
    assert cfg == FleetConfig(**{field: expected}) and hash(cfg) == hash(
        FleetConfig(**{field: expected}))
    assert resolve_config(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("value", [np.True_, np.array(True), (np.True_, 40, 160)])
def test_numpy_bools_refused_like_python_bools(value):
    field = "class_skills" if isinstance(value, tuple) else "horizon"
    with pytest.raises(ValueError, match=rf"FleetConfig\.{field}.*integer"):
        FleetConfig(**{field: value})


def test_numpy_kwargs_of_gym_make_keep_the_spec_json_clean():
    env = gym.make("lrm/Critical-v0", horizon=np.int64(12), arrival_rate=np.float32(8.0),
                   class_shares=np.array([0.5, 0.25, 0.25]))
    assert env.unwrapped.config.horizon == 12
    spec = json.loads(env.spec.to_json())
    assert spec["kwargs"] == {"config": "critical", "horizon": 12, "arrival_rate": 8.0,
                              "class_shares": [0.5, 0.25, 0.25]}
    assert gym.make(env.spec).unwrapped.config == env.unwrapped.config
    venv = gym.make_vec("lrm/Critical-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        horizon=np.int64(12))
    assert json.loads(venv.spec.to_json())["kwargs"]["horizon"] == 12


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize("field, value", [
    ("class_names", ("easy", "hard", "easy")), ("model_names", ("llm-8b", "llm-8b", "llm-70b"))])
def test_duplicate_names_refused(field, value):
    with pytest.raises(ValueError, match=rf"FleetConfig\.{field} must be distinct.*'"
                                         rf"{value[0]}' at positions 0 and"):
        FleetConfig(**{field: value})


# ---------------------------------------------------------------------------- unused fields
@pytest.mark.parametrize("preset, field, value, users", [
    ("critical", "harvest_months", (6, 7), "harvest_process in ['solar', 'wind']"),
    ("critical", "harvest_reference_months", (6,), "harvest_process in ['solar', 'wind']"),
    ("critical", "trace_start_day", 100, "harvest_process in ['solar', 'wind']"),
    ("solar_day", "harvest_cv", 1.0, "harvest_process in ['iid_gamma']"),
    ("critical", "arrival_cv", 4.0, "arrival_process in ['servegen_r1']"),
    ("solar_day", "arrival_cv", 4.0, "arrival_process in ['servegen_r1']"),
    ("critical", "forecast_noise", 0.5, "forecast_hours > 0"),
])
def test_field_ignored_by_the_chosen_process_is_refused(preset, field, value, users):
    with pytest.raises(ValueError) as exc:
        resolve_config(preset, **{field: value})
    msg = str(exc.value)
    assert f"FleetConfig.{field}=" in msg and users in msg, msg
    with pytest.raises(ValueError, match=field):
        gym.make("lrm/Critical-v0", config=preset, **{field: value})


def test_field_used_by_the_chosen_process_is_accepted():
    assert resolve_config("solar_day", harvest_months=(6, 7)).harvest_months == (6, 7)
    assert resolve_config("critical", harvest_cv=1.0).harvest_cv == 1.0
    assert resolve_config("r1_trace", arrival_cv=4.0).arrival_cv == 4.0
    assert resolve_config("solar_day", forecast_hours=2, forecast_noise=0.5).forecast_noise == 0.5
    # Switching the process of a preset that sets a process-only field names that field.
    with pytest.raises(ValueError, match=r"harvest_months=\(4, 5, 6, 7, 8, 9\).*'iid_gamma'"):
        resolve_config("solar_day", harvest_process="iid_gamma")
    # Every preset is consistent.
    for name, cfg in PRESETS.items():
        assert resolve_config(name) is cfg


def test_process_tables_of_the_config_match_the_process_registries():
    """The config validates process names and their fields from its own tables (it imports no
    process module); every registered process is in them, with the fields its class reads."""
    from envs.config import ARRIVAL_PROCESS_FIELDS, HARVEST_PROCESS_FIELDS
    from envs.processes import ARRIVAL_PROCESSES, HARVEST_PROCESSES

    fields = {f.name for f in dataclasses.fields(FleetConfig)}
    for table, registry in ((HARVEST_PROCESS_FIELDS, HARVEST_PROCESSES),
                            (ARRIVAL_PROCESS_FIELDS, ARRIVAL_PROCESSES)):
        assert list(table) == list(registry)
        for name, cls in registry.items():
            assert cls.config_fields == table[name], name
            assert set(table[name]) <= fields, name


@pytest.mark.parametrize("field", ["harvest_cv", "arrival_cv"])
def test_a_coefficient_of_variation_too_small_for_a_gamma_shape_is_refused(field):
    """1 / cv^2 must be finite; below that the simulator would divide by zero."""
    preset = "r1_trace" if field == "arrival_cv" else "critical"
    with pytest.raises(ValueError, match=f"FleetConfig.{field} must be"):
        resolve_config(preset, **{field: 1e-300})
    assert getattr(resolve_config(preset, **{field: 1e-100}), field) == 1e-100
