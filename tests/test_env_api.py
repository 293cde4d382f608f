"""Gymnasium API contract of every registered id: checkers, spaces, spec, pickling, vector envs,
episode end, info, reward, rendering and bad actions."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs.actions import mixture_to_action
from envs.fleet_env import FleetEnv
from tests.helpers import pure_mixture, rollout

ROOT = Path(__file__).resolve().parents[1]

#: Keys every info dict carries (the env contract), with their Python types.
INFO_TYPES = {"harvest_kwh": float, "demand_kwh": float, "aux_kwh": float, "waste_kwh": float,
              "storage_kwh": float, "arrived": int, "served": int, "correct": int,
              "dropped": int, "reward_terms": dict}


def _no_warnings(record: list[warnings.WarningMessage]) -> None:
    assert not record, "unexpected warnings:\n" + "\n".join(
        f"{w.category.__name__}: {w.message}" for w in record)


def _random_actions(env: gym.Env, n: int, seed: int) -> list:
    """Actions drawn from a seeded generator (not ``space.sample``)."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return [int(a) for a in rng.integers(0, space.n, size=n)]
    return [rng.uniform(-1, 1, size=space.shape).astype(np.float32) for _ in range(n)]


def _pure_actions(env: gym.Env) -> list:
    """One action per configuration that sends every task to it."""
    cfg = env.unwrapped.config
    if cfg.action_type == "discrete":
        return list(range(cfg.n_configs))
    return [mixture_to_action(pure_mixture(cfg, j)) for j in range(cfg.n_configs)]


# ---------------------------------------------------------------------------- checkers
@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
def test_gymnasium_check_env_no_warnings(env_id, action_type, render_mode):
    env = gym.make(env_id, action_type=action_type, render_mode=render_mode)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=render_mode is None)
    _no_warnings(record)


def test_sb3_check_env_no_warnings(env_id, action_type):
    env = gym.make(env_id, action_type=action_type)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sb3_check_env(env, warn=True)
    _no_warnings(record)


#: Edge configurations: every path of the ledger, degenerate workloads and fleets.
EDGE_CONFIGS = {
    "zero-store": {"storage_kwh": 0.0},
    "no-harvest": {"provisioning": 0.0},
    "constant-harvest": {"harvest_cv": 0.0},
    "wild-harvest": {"harvest_cv": 100.0},
    "one-class-active": {"class_shares": (1.0, 0.0, 0.0)},
    "single-class": {"class_names": ("only",), "class_shares": (1.0,), "class_skills": (20,),
                     "class_values": (2.0,)},
    "single-config": {"model_names": ("m",), "model_params_b": (8.0,),
                      "model_j_per_token": (0.1,), "model_step_success": (0.5,),
                      "model_skill_coverage": (1.0,), "token_budgets": (2048,)},
    "lossy-store": {"charge_efficiency": 0.5, "discharge_efficiency": 0.5,
                    "storage_kwh": 0.01, "initial_storage_kwh": 0.005},
    "idle-power": {"idle_power_kw": 5.0},
    "rare-arrivals": {"arrival_rate": 0.01},
    "heavy-arrivals": {"arrival_rate": 600.0, "horizon": 5},
    "hourly-slots": {"slot_minutes": 60.0, "horizon": 24},
    "zero-weights": {"w_correct": 0.0, "w_aux": 0.0, "w_waste": 0.0, "w_leftover": 0.0},
}


@pytest.mark.parametrize("case", list(EDGE_CONFIGS))
def test_edge_configs_pass_checkers_and_full_episodes(case, action_type):
    kw = {"horizon": 48, **EDGE_CONFIGS[case], "action_type": action_type}
    # made before recording: making a -v0 id warns that a -v1 exists (Gymnasium's notice)
    env, env2 = gym.make("lrm/Critical-v0", **kw), gym.make("lrm/Critical-v0", **kw)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
        sb3_check_env(env2)
    _no_warnings(record)
    env = gym.make("lrm/Critical-v0", **kw)
    out = rollout(env, _random_actions(env, kw["horizon"], seed=0), seed=0)
    assert len(out["rewards"]) == kw["horizon"] and out["truncated"][-1]
    assert all(o in env.observation_space for o in out["obs"])
    assert np.all(np.isfinite(out["rewards"]))


def test_one_slot_episode():
    """horizon = 1 is valid (Gymnasium's checker refuses one-step episodes, so no checker)."""
    env = gym.make("lrm/Critical-v0", horizon=1)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated and info["t"] == 1


# ---------------------------------------------------------------------------- spaces
def test_observations_in_space_full_episodes(env_id, action_type):
    env = gym.make(env_id, action_type=action_type)
    horizon = env.unwrapped.config.horizon
    sequences = [_random_actions(env, horizon, seed=1)]
    sequences += [[a] * horizon for a in _pure_actions(env)]
    for n, actions in enumerate(sequences):
        out = rollout(env, actions, seed=100 + n)
        assert len(out["rewards"]) == horizon
        assert out["obs"].dtype == np.float32
        for t, obs in enumerate(out["obs"]):
            assert obs in env.observation_space, f"sequence {n}, slot {t}: {obs}"
        assert np.all(np.isfinite(out["rewards"]))


@pytest.mark.parametrize("storage_kwh", [0.0, 0.002, math.inf])
def test_observations_in_space_store_sizes(storage_kwh):
    env = gym.make("lrm/Volatile-v0", storage_kwh=storage_kwh, horizon=96)
    out = rollout(env, _random_actions(env, 96, seed=2), seed=3)
    assert all(o in env.observation_space for o in out["obs"])
    store = out["obs"][:, 0]
    if storage_kwh == 0.0:
        assert np.all(store == 0.0)
    else:
        assert store.max() > 0.0  # the store feature moves


def test_observation_features_match_the_ledger(env_id):
    """Each feature is the documented normalisation of the ledger (envs.spaces docstring)."""
    env = gym.make(env_id, horizon=30, storage_kwh=0.01)
    u = env.unwrapped
    cfg, core = u.config, u.core
    names = u.observation_names
    col = {n: i for i, n in enumerate(names)}
    out = rollout(env, _random_actions(env, 30, seed=9), seed=9)
    rates = cfg.arrival_rate * np.asarray(cfg.class_shares)
    d_ref, h_ref = core.ref_demand_kwh, core.harvest_process.mean_kwh
    for t in range(1, 31):
        obs, info = out["obs"][t], out["infos"][t]
        assert obs[col["store"]] == pytest.approx(info["storage_kwh"] / 0.01, rel=1e-6)
        assert obs[col["harvest_last"]] == pytest.approx(info["harvest_kwh"] / h_ref, rel=1e-6)
        assert obs[col["demand_last"]] == pytest.approx(info["demand_kwh"] / d_ref, rel=1e-6)
        assert obs[col["aux_last"]] == pytest.approx(info["aux_kwh"] / d_ref, rel=1e-6,
                                                     abs=1e-7)
        assert obs[col["waste_last"]] == pytest.approx(info["waste_kwh"] / d_ref, rel=1e-6,
                                                       abs=1e-7)
        assert obs[col["progress"]] == pytest.approx(t / 30)
    # The arrivals shown are the tasks the next action dispatches.
    for t in range(30):
        shown = out["obs"][t][[col[f"arrivals_{c}"] for c in cfg.class_names]] * rates
        assert round(float(shown.sum())) == out["infos"][t + 1]["arrived"]


# ---------------------------------------------------------------------------- make forms
def test_module_prefix_make_without_import():
    code = ("import sys, gymnasium as gym\n"
            "assert 'envs' not in sys.modules\n"
            "env = gym.make('envs:lrm/Critical-v0', horizon=3)\n"
            "obs, info = env.reset(seed=0)\n"
            "assert obs in env.observation_space\n"
            "print(type(env.unwrapped).__name__, env.unwrapped.config.horizon)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["FleetEnv", "3"]


@pytest.mark.parametrize("overrides", [
    {},
    {"storage_kwh": math.inf, "arrival_rate": 30.0},
    {"storage_kwh": 0.5, "provisioning": 0.9, "horizon": 12, "action_type": "discrete"},
    {"config": "volatile", "class_shares": (0.5, 0.25, 0.25)},
])
def test_spec_json_round_trip(env_id, overrides):
    env = gym.make(env_id, **overrides)
    text = env.spec.to_json()
    json.loads(text)  # valid JSON (Infinity is accepted by Python's json)
    spec = EnvSpec.from_json(text)
    assert spec.id == env_id
    assert spec.to_json() == text
    again = gym.make(spec)
    assert again.unwrapped.config == env.unwrapped.config
    for key, value in overrides.items():
        if key != "config":
            assert getattr(again.unwrapped.config, key) == value
    # Same spec, same seed: same first observation.
    assert np.array_equal(env.reset(seed=5)[0], again.reset(seed=5)[0])


def test_spec_json_round_trip_of_a_config_dict(env_id):
    cfg = gym.make(env_id).unwrapped.config
    env = gym.make(env_id, config={**cfg.to_dict(), "storage_kwh": math.inf, "horizon": 7})
    again = gym.make(EnvSpec.from_json(env.spec.to_json()))
    assert again.unwrapped.config == env.unwrapped.config
    assert again.unwrapped.config.horizon == 7


# ---------------------------------------------------------------------------- pickling
def test_pickle_mid_episode_continues_identically(env_id, action_type):
    env = gym.make(env_id, action_type=action_type, horizon=40)
    actions = _random_actions(env, 40 + 20, seed=7)
    env.reset(seed=11)
    for a in actions[:15]:
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    assert clone is not env

    def finish(e):
        steps = [e.step(a) for a in actions[15:40]]
        # ... and an unseeded reset afterwards continues the same seeded stream.
        nxt = rollout(e, actions[40:], seed=None)
        return steps, nxt

    (s1, n1), (s2, n2) = finish(env), finish(clone)
    assert len(s1) == len(s2) == 25
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(s1, s2):
        assert np.array_equal(o1, o2)
        assert r1 == r2 and te1 == te2 and tr1 == tr2
        assert i1 == i2
    assert s1[-1][3] is True
    assert np.array_equal(n1["obs"], n2["obs"])
    assert np.array_equal(n1["rewards"], n2["rewards"])


# ---------------------------------------------------------------------------- vector envs
def test_make_vec_sync_stable_info_dtypes(env_id, action_type):
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", horizon=4,
                       action_type=action_type)
    obs, info = vec.reset(seed=[1, 2])
    assert obs.shape == (2, *vec.single_observation_space.shape)
    vec.action_space.seed(0)

    def dtypes(d):
        return {k: (dtypes(v) if isinstance(v, dict) else np.asarray(v).dtype)
                for k, v in d.items()}

    reference = dtypes(info)
    for key in INFO_TYPES:
        assert key in reference
    # 9 steps cross two episode ends (horizon 4) and their autoreset steps.
    for _ in range(9):
        obs, rew, term, trunc, info = vec.step(vec.action_space.sample())
        assert obs in vec.observation_space
        assert rew.dtype == np.float64 and not term.any()
        assert dtypes(info) == reference
    vec.close()


# ---------------------------------------------------------------------------- episode end
def test_truncation_exactly_at_horizon(env_id, action_type, short_horizon):
    env = gym.make(env_id, action_type=action_type, horizon=short_horizon)
    out = rollout(env, _random_actions(env, short_horizon + 5, seed=0), seed=0)
    assert len(out["rewards"]) == short_horizon
    assert not out["terminated"].any()
    assert not out["truncated"][:-1].any() and out["truncated"][-1]
    assert [i["t"] for i in out["infos"]] == list(range(short_horizon + 1))
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(env.action_space.sample())


def test_step_before_reset_raises(env_id):
    with pytest.raises(gym.error.ResetNeeded):
        gym.make(env_id).step(np.zeros(gym.make(env_id).action_space.shape, np.float32))
    raw = gym.make(env_id).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        raw.step(np.zeros(raw.action_space.shape, np.float32))


# ---------------------------------------------------------------------------- info, reward
def test_info_keys_types_and_fresh_dicts(env_id, action_type, short_horizon):
    env = gym.make(env_id, action_type=action_type, horizon=short_horizon)
    out = rollout(env, _random_actions(env, short_horizon, seed=4), seed=4)
    infos = out["infos"]
    keys = set(infos[0])
    assert set(INFO_TYPES) <= keys
    term_keys = set(infos[0]["reward_terms"])
    for n, info in enumerate(infos):
        assert set(info) == keys, f"step {n}"
        for k, v in info.items():
            assert type(v) is type(infos[0][k]), f"step {n}: {k} is {type(v).__name__}"
        for k, typ in INFO_TYPES.items():
            assert type(info[k]) is typ, f"step {n}: {k}"
        assert set(info["reward_terms"]) == term_keys
        assert all(type(v) is float for v in info["reward_terms"].values())
    assert len({id(i) for i in infos}) == len(infos)
    assert len({id(i["reward_terms"]) for i in infos}) == len(infos)
    # A stored info is not changed by later steps.
    assert infos[1]["t"] == 1 and infos[-1]["t"] == short_horizon


def test_reward_is_weighted_sum_of_terms(env_id, action_type, short_horizon):
    env = gym.make(env_id, action_type=action_type, horizon=short_horizon)
    weights = env.unwrapped.reward_weights
    out = rollout(env, _random_actions(env, short_horizon, seed=5), seed=5)
    assert set(weights) == set(out["infos"][0]["reward_terms"])
    for r, info in zip(out["rewards"], out["infos"][1:]):
        terms = info["reward_terms"]
        expected = sum(weights[k] * terms[k] for k in weights)
        assert math.isclose(r, expected, rel_tol=1e-12, abs_tol=1e-15)
        assert terms["aux_kwh"] == info["aux_kwh"]
        assert terms["waste_kwh"] == info["waste_kwh"]
    # Correct answers contribute (so the check is not vacuous).
    totals = {k: sum(i["reward_terms"][k] for i in out["infos"][1:]) for k in weights}
    assert totals["value_correct"] > 0


# ---------------------------------------------------------------------------- rendering
def test_render_ansi_shows_the_ledger(env_id):
    env = gym.make(env_id, render_mode="ansi")
    env.reset(seed=0)
    assert isinstance(env.render(), str)
    _, _, _, _, info = env.step(env.action_space.sample())
    text = env.render()
    assert isinstance(text, str)
    for word in ("harvest", "demand", "aux", "waste", "store"):
        assert word in text
    assert f"{info['harvest_kwh']:.5f}" in text
    assert f"{info['demand_kwh']:.5f}" in text


def test_render_rgb_array(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    img = env.render()
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0
    assert img.min() < 255  # something is drawn
    # The played slots' harvest (green) or demand (red) bars, not only the store level.
    bars = (img == (60, 170, 60)).all(axis=2) | (img == (200, 40, 40)).all(axis=2)
    assert bars.any()


def test_unknown_render_mode_raises():
    with pytest.raises(ValueError, match="render_mode"):
        FleetEnv(render_mode="text")


# ---------------------------------------------------------------------------- bad actions
def _bad_continuous(shape):
    n = shape[0]
    nan = np.zeros(n, np.float32)
    nan[3] = np.nan
    big = np.zeros(n, np.float32)
    big[0] = 1.5
    low = np.zeros(n, np.float32)
    low[-1] = -1.01
    inf = np.zeros(n, np.float32)
    inf[1] = np.inf
    return {"nan": (nan, r"\[-1, 1\]"), "above": (big, r"\[-1, 1\]"),
            "below": (low, r"\[-1, 1\]"), "inf": (inf, r"\[-1, 1\]"),
            "short": (np.zeros(n - 1, np.float32), "shape"),
            "2d": (np.zeros((1, n), np.float32), "shape")}


@pytest.mark.parametrize("case", ["nan", "above", "below", "inf", "short", "2d"])
def test_invalid_continuous_action_raises(env_id, case):
    env = gym.make(env_id)
    env.reset(seed=0)
    action, pattern = _bad_continuous(env.action_space.shape)[case]
    with pytest.raises(ValueError, match="action") as exc:
        env.step(action)
    assert re.search(pattern, str(exc.value)), str(exc.value)
    if pattern == "shape":
        assert str(env.action_space.shape) in str(exc.value)


@pytest.mark.parametrize("action", [9, -1, 2.5, float("nan"), "x", [1, 2]])
def test_invalid_discrete_action_raises(env_id, action):
    env = gym.make(env_id, action_type="discrete")
    n = env.action_space.n
    env.reset(seed=0)
    if action == 9:
        action = n
    with pytest.raises(ValueError, match="action") as exc:
        env.step(action)
    assert f"[0, {n - 1}]" in str(exc.value)


@pytest.mark.parametrize("action, why", [
    (float("inf"), ""), (-float("inf"), ""), (np.float32("inf"), ""), (True, "bool"),
    (False, "bool"), (np.True_, "bool"), (np.array([True]), "bool"), (1 + 0j, "complex"),
    (np.complex128(2), "complex"), (None, "NoneType")])
def test_discrete_action_of_wrong_kind_raises_value_error(env_id, action, why):
    env = gym.make(env_id, action_type="discrete")
    n = env.action_space.n
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape(f"action must be an integer in [0, {n - 1}]"))\
            as exc:
        env.step(action)
    assert why in str(exc.value)
    # Gymnasium's own check agrees for the numpy kinds (its Discrete refuses non-integer
    # dtypes); the env refuses the Python bool too, as the config's integer fields do.
    if not isinstance(action, (bool, float, complex)) and action is not None:
        assert action not in env.action_space
    # Integral values of integer and float type are still actions.
    env.step(np.int64(n - 1))
    env.step(float(n - 1))


@pytest.mark.parametrize("kind", ["complex", "complex-zero-imag", "complex-list", "strings"])
def test_continuous_action_of_wrong_kind_raises_value_error(env_id, kind):
    env = gym.make(env_id)
    env.reset(seed=0)
    shape = env.action_space.shape
    action = {"complex": np.full(shape, 0.5 + 0.5j),
              "complex-zero-imag": np.zeros(shape, np.complex64),
              "complex-list": [0.5 + 0.5j] * shape[0],
              "strings": ["0.5"] * shape[0]}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: an error, not a dropped part
        with pytest.raises(ValueError, match=r"action entries must be real numbers in \[-1, 1\]"):
            env.step(action)
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"real numbers in \[-1, 1\]"):
            venv.step(np.stack([np.asarray(action)] * 2))
