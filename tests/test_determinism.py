"""Seeding: same seed, same episode bit for bit; common random numbers across policies; a copy
of the batched core does not depend on the batch it runs in."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.actions import mixture_to_action
from envs.config import resolve_config
from envs.dynamics import FleetCore
from envs.outcomes import reference_mixture
from envs.spaces import Observer
from tests.conftest import FLEET_IDS
from tests.helpers import copy_generators, info_array, pure_mixture, rollout

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 48
#: Per-slot info fields compared exactly.
FIELDS = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
          "arrived", "served", "correct", "dropped", "t")


def _actions(env: gym.Env, kind: str, seed: int = 0) -> list:
    cfg = env.unwrapped.config
    rng = np.random.default_rng(seed)
    if cfg.action_type == "discrete":
        if kind == "random":
            return [int(j) for j in rng.integers(0, cfg.n_configs, HORIZON)]
        return [kind_index(kind, cfg)] * HORIZON
    if kind == "random":
        return [rng.uniform(-1, 1, cfg.n_classes * cfg.n_configs).astype(np.float32)
                for _ in range(HORIZON)]
    pi = reference_mixture(cfg) if kind == "uniform" else pure_mixture(cfg, kind_index(kind, cfg))
    if kind == "mixed":
        pi = 0.5 * reference_mixture(cfg) + 0.5 * pure_mixture(cfg, 0)
    return [mixture_to_action(pi)] * HORIZON


def kind_index(kind: str, cfg) -> int:
    """Configuration of the fixed policies: cheapest, most expensive, or the middle one."""
    return {"cheapest": 0, "largest": cfg.n_configs - 1}.get(kind, cfg.n_configs // 2)


def _episode(env_id: str, action_type: str, kind: str, seed: int | None, **kw) -> dict:
    env = gym.make(env_id, action_type=action_type, horizon=HORIZON, **kw)
    return rollout(env, _actions(env, kind), seed)


def _assert_same(a: dict, b: dict) -> None:
    assert np.array_equal(a["obs"], b["obs"])
    assert np.array_equal(a["rewards"], b["rewards"])
    assert np.array_equal(a["truncated"], b["truncated"])
    for k in FIELDS:
        assert np.array_equal(info_array(a["infos"], k), info_array(b["infos"], k)), k
    for k in a["infos"][1]["reward_terms"]:
        ta = [i["reward_terms"][k] for i in a["infos"]]
        tb = [i["reward_terms"][k] for i in b["infos"]]
        assert np.array_equal(ta, tb), k


@pytest.mark.parametrize("kind", ["random", "mixed", "largest"])
def test_same_seed_same_episode(env_id, action_type, kind):
    a = _episode(env_id, action_type, kind, seed=123)
    b = _episode(env_id, action_type, kind, seed=123)
    _assert_same(a, b)


def test_reset_with_same_seed_replays_on_one_env(env_id):
    env = gym.make(env_id, horizon=HORIZON)
    actions = _actions(env, "random")
    _assert_same(rollout(env, actions, 9), rollout(env, actions, 9))


def test_different_seeds_differ(env_id, action_type):
    a = _episode(env_id, action_type, "random", seed=1)
    b = _episode(env_id, action_type, "random", seed=2)
    assert not np.array_equal(a["obs"], b["obs"])
    assert not np.array_equal(info_array(a["infos"], "harvest_kwh"),
                              info_array(b["infos"], "harvest_kwh"))
    assert not np.array_equal(info_array(a["infos"], "arrived"),
                              info_array(b["infos"], "arrived"))


def test_seeded_then_unseeded_reset_is_reproducible(env_id):
    runs = []
    for _ in range(2):
        env = gym.make(env_id, horizon=HORIZON)
        actions = _actions(env, "random")
        first = rollout(env, actions, seed=77)
        second = rollout(env, actions, seed=None)
        third = rollout(env, actions, seed=None)
        runs.append((first, second, third))
    for x, y in zip(runs[0], runs[1]):
        _assert_same(x, y)
    first, second, third = runs[0]
    assert not np.array_equal(first["obs"], second["obs"])  # the stream moved on
    assert not np.array_equal(second["obs"], third["obs"])


def test_same_episode_in_a_fresh_process():
    code = ("import hashlib, gymnasium as gym, numpy as np, envs\n"
            "from tests.test_determinism import _episode\n"
            "e = _episode('lrm/Volatile-v0', 'continuous', 'random', seed=31)\n"
            "print(hashlib.sha256(e['obs'].tobytes() + e['rewards'].tobytes()).hexdigest())\n")
    here = _episode("lrm/Volatile-v0", "continuous", "random", seed=31)
    digest = hashlib.sha256(here["obs"].tobytes() + here["rewards"].tobytes()).hexdigest()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == digest


# ---------------------------------------------------------------------------- common random numbers
def test_policies_on_one_seed_see_identical_arrivals_and_harvest(env_id):
    episodes = [_episode(env_id, "continuous", kind, seed=5)
                for kind in ("random", "cheapest", "largest", "mixed")]
    episodes += [_episode(env_id, "discrete", kind, seed=5) for kind in ("random", "largest")]
    ref = episodes[0]
    for ep in episodes[1:]:
        for k in ("arrived", "harvest_kwh"):
            assert np.array_equal(info_array(ep["infos"], k), info_array(ref["infos"], k)), k
    # The five distinct policies did differ (so the check is not vacuous) ...
    demands = {info_array(ep["infos"], "demand_kwh").tobytes() for ep in episodes}
    assert len(demands) == 5
    # ... and the pure continuous action equals the discrete one, slot by slot.
    for k in FIELDS:
        assert np.array_equal(info_array(episodes[2]["infos"], k),
                              info_array(episodes[5]["infos"], k)), k


#: Ids without a queue: there the tasks served in a slot are exactly its arrivals. With a queue,
#: earlier deferrals change which tasks are served later; the per-task form of this property
#: (a deferred task keeps its latent outcome) is tested in test_realistic.py.
NO_QUEUE_IDS = sorted(i for i in FLEET_IDS if not gym.make(i).unwrapped.config.queue_enabled)


@pytest.mark.parametrize("env_id", NO_QUEUE_IDS)
def test_task_outcomes_do_not_depend_on_earlier_actions(env_id, action_type):
    """Two action sequences that differ in slots < k and agree from k on: from slot k on, the
    fleet's demand and correct answers are identical (storage may differ, outcomes may not)."""
    k = HORIZON // 2
    env = gym.make(env_id, action_type=action_type, horizon=HORIZON)
    a1 = _actions(env, "random", seed=1)
    a2 = _actions(env, "random", seed=2)[:k] + a1[k:]
    e1, e2 = rollout(env, a1, seed=8), rollout(env, a2, seed=8)
    for key in ("demand_kwh", "correct", "arrived"):
        x, y = info_array(e1["infos"], key), info_array(e2["infos"], key)
        assert np.array_equal(x[k:], y[k:]), key
    vc1 = [i["reward_terms"]["value_correct"] for i in e1["infos"][1:]]
    vc2 = [i["reward_terms"]["value_correct"] for i in e2["infos"][1:]]
    assert vc1[k:] == vc2[k:]
    assert not np.array_equal(info_array(e1["infos"], "demand_kwh")[:k],
                              info_array(e2["infos"], "demand_kwh")[:k])


# ---------------------------------------------------------------------------- batch independence
@pytest.mark.parametrize("preset", ["critical", "volatile"])
def test_core_copy_identical_alone_and_in_a_batch(preset):
    cfg = resolve_config(preset, horizon=60, storage_kwh=0.01)
    gens_alone = copy_generators(2024, 5)
    gens_batch = copy_generators(2024, 5)
    rng = np.random.default_rng(0)
    mixtures = rng.dirichlet(np.ones(cfg.n_configs), size=(cfg.horizon, 5, cfg.n_classes))
    target = 3  # the copy followed; the others get their own seeds and their own mixtures

    alone = FleetCore(cfg, 1)
    alone.reset_copy(0, *gens_alone[target])
    batch = FleetCore(cfg, 5)
    for b in range(5):
        batch.reset_copy(b, *gens_batch[b])
    obs_alone, obs_batch = Observer(alone), Observer(batch)
    assert np.array_equal(obs_alone.observe()[0], obs_batch.observe()[target])
    for t in range(cfg.horizon):
        r1 = alone.step(mixtures=mixtures[t, target][None])
        r5 = batch.step(mixtures=mixtures[t])
        for field in r1.__dataclass_fields__:
            x, y = getattr(r1, field)[0], getattr(r5, field)[target]
            assert np.array_equal(x, y), (t, field)
        assert np.array_equal(obs_alone.observe()[0], obs_batch.observe()[target])
    assert batch.storage[target] == alone.storage[0]


def test_core_discrete_configs_identical_alone_and_in_a_batch():
    cfg = resolve_config("critical", horizon=30)
    gens_alone, gens_batch = copy_generators(7, 5), copy_generators(7, 5)
    configs = np.random.default_rng(1).integers(0, cfg.n_configs, size=(cfg.horizon, 5))
    alone, batch = FleetCore(cfg, 1), FleetCore(cfg, 5)
    alone.reset_copy(0, *gens_alone[0])
    for b in range(5):
        batch.reset_copy(b, *gens_batch[b])
    for t in range(cfg.horizon):
        r1 = alone.step(configs=configs[t, :1])
        r5 = batch.step(configs=configs[t])
        for field in r1.__dataclass_fields__:
            assert np.array_equal(getattr(r1, field)[0], getattr(r5, field)[0]), (t, field)
