"""Residual action mode (agents/residual.py) and the recurrent PPO entry of train.py."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
import train
from agents.heuristics import VarianceFeedbackPolicy
from agents.hyperparams import resolve_entry
from agents.residual import (ResidualActionMap, ResidualKnobAction, ResidualMixtureAction,
                             residual_env_action)
from agents.sb3 import algo_class, load_sb3_policy
from agents.vec import VecActionMap, make_sb3_vec_env
from agents.wrappers import action_map

#: A paper id (C*J entries) and a queued realistic id (one defer entry per class).
IDS = ("lrm/Critical-v1", "lrm/R1Trace-v1")


@pytest.mark.parametrize("env_id", IDS)
def test_zero_action_is_the_heuristic_bit_for_bit(env_id):
    env = ResidualMixtureAction(gym.make(env_id, horizon=50))
    base = gym.make(env_id, horizon=50)
    pol = VarianceFeedbackPolicy(base, seed=0)
    obs, _ = env.reset(seed=4)
    bobs, _ = base.reset(seed=4)
    pol.reset()
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(50):
        heuristic_action = pol.act(bobs)
        assert env.map(zero, obs).tobytes() == heuristic_action.tobytes()
        obs, r, _, _, _ = env.step(zero)
        bobs, br, _, _, _ = base.step(heuristic_action)
        assert r == br and obs.tobytes() == bobs.tobytes()


def test_action_moves_weight_towards_positive_entries():
    env = gym.make("lrm/Critical-v1")
    m = ResidualActionMap(env)
    obs, _ = env.reset(seed=1)
    cfg = env.unwrapped.config
    h = m.heuristic_actions(obs[None])[0].reshape(cfg.n_classes, -1)
    w_h = (h + 1) / 2
    for c in range(cfg.n_classes):
        used = np.flatnonzero(w_h[c] > 0)
        unused = np.flatnonzero(w_h[c] == 0)
        a = np.zeros((cfg.n_classes, cfg.n_configs))
        a[c, used[0]] = 1.0
        w = (m(a.ravel(), obs).reshape(cfg.n_classes, -1) + 1) / 2
        share = w[c] / w[c].sum()
        if used.size > 1:  # more weight where a > 0 (a pure row stays pure)
            assert share[used[0]] > w_h[c, used[0]] / w_h[c].sum()
        np.testing.assert_array_equal(w[np.arange(cfg.n_classes) != c],
                                      w_h[np.arange(cfg.n_classes) != c])
        if unused.size:  # the boost reaches a configuration the heuristic leaves out
            a[:] = 0.0
            a[c, unused[0]] = 1.0
            w = (m(a.ravel(), obs).reshape(cfg.n_classes, -1) + 1) / 2
            assert w[c, unused[0]] > 0


@pytest.mark.parametrize("wrapper,env_id", [
    *((ResidualMixtureAction, i) for i in IDS),
    *((ResidualKnobAction, i) for i in ("lrm/Critical-v1", "lrm/Volatile-v1"))])
def test_batched_map_equals_the_wrapper_row_by_row(wrapper, env_id):
    env = wrapper(gym.make(env_id))
    batched = action_map(env.spec_dict())
    assert getattr(batched, "needs_obs", False)
    rng = np.random.default_rng(2)
    venv = make_sb3_vec_env(env_id, 6, seed=30)
    obs = venv.reset()
    for _ in range(5):
        a = rng.uniform(-1.3, 1.3, (6, *env.action_space.shape)).astype(np.float32)
        out = batched(a, obs)
        assert out.dtype == np.float32 and out.shape == (6, *env.unwrapped.action_space.shape)
        for k in range(6):
            assert out[k].tobytes() == env.map(a[k], obs[k]).tobytes()
            assert env.unwrapped.action_space.contains(out[k])
        obs = venv.step(out)[0]


@pytest.mark.parametrize("wrapper,dim", [(ResidualMixtureAction, 27), (ResidualKnobAction, 2)])
def test_vec_action_map_passes_the_raw_observations(wrapper, dim):
    """The batched map under the native vector env steps like the single-env wrapper's map,
    with the map's own action space (27 mixture weights; 2 knobs)."""
    env = wrapper(gym.make("lrm/Critical-v1"))
    venv = VecActionMap.from_spec(make_sb3_vec_env("lrm/Critical-v1", 3, seed=5),
                                  env.spec_dict())
    ref = make_sb3_vec_env("lrm/Critical-v1", 3, seed=5)
    assert venv.action_space.shape == (dim,)
    obs, robs = venv.reset(), ref.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-1, 1, (3, dim)).astype(np.float32)
        obs, r, *_ = venv.step(a)
        robs, rr, *_ = ref.step(env.map(a, robs))
        np.testing.assert_array_equal(obs, robs)
        np.testing.assert_array_equal(r, rr)


def test_residual_map_rejects_bad_arguments():
    env = gym.make("lrm/Critical-v1")
    with pytest.raises(ValueError, match="residual heuristic must be one of"):
        ResidualActionMap(env, heuristic="oracle")
    with pytest.raises(ValueError, match="residual scale"):
        ResidualActionMap(env, scale=0.0)
    with pytest.raises(ValueError, match="continuous"):
        ResidualActionMap(gym.make("lrm/Critical-v1", action_type="discrete"))


def test_env_wrapper_with_arguments_in_hyperparameters():
    hp = resolve_entry({"env_wrapper": {"agents.residual.ResidualMixtureAction":
                                        {"heuristic": "mean_matching", "scale": 2.0}}},
                       algo_class("ppo"), None)
    wrapped = hp["env_wrapper"](gym.make("lrm/Critical-v1"))
    assert wrapped.map.heuristic_name == "mean_matching" and wrapped.map.scale == 2.0


def _tiny_hp(path: Path, policy: str, extra: dict | None = None) -> Path:
    import yaml

    entry = {"n_envs": 2, "n_timesteps": 256, "policy": policy, "n_steps": 64,
             "batch_size": 64, "n_epochs": 1, "normalize": True,
             "policy_kwargs": "dict(net_arch=[16])", **(extra or {})}
    path.write_text(yaml.safe_dump({"default": entry}))
    return path


@pytest.mark.parametrize("algo,policy", [("ppo", "MlpPolicy"),
                                         ("recurrent_ppo", "MlpLstmPolicy")])
def test_residual_run_saves_a_policy_that_replays_the_map(algo, policy, tmp_path, capsys):
    extra = {"policy_kwargs": "dict(net_arch=[16], lstm_hidden_size=8)"} \
        if algo == "recurrent_ppo" else None
    out = tmp_path / "run"
    argv = ["--algo", algo, "--env", "lrm/Critical-v1", "--residual", "variance_feedback",
            "--timesteps", "256", "--out", str(out), "--hyperparams",
            str(_tiny_hp(tmp_path / "hp.yml", policy, extra)), "--env-kwarg", "horizon=40",
            "--eval-freq", "128", "--eval-episodes", "1", "--checkpoint-freq", "0",
            "--test-episodes", "2", "--compare", "variance_feedback", "--no-progress-bar"]
    assert train.main(argv) == 0
    spec = json.loads((out / "action_wrapper.json").read_text())
    assert spec["class"] == "agents.residual.ResidualMixtureAction"
    assert spec["kwargs"]["heuristic"] == "variance_feedback"
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["residual"] == "variance_feedback"
    pol = load_sb3_policy(f"{algo}:{out / 'model.zip'}")
    env = gym.make("lrm/Critical-v1", horizon=40)
    obs, _ = env.reset(seed=9)
    raw, _ = pol.model.predict(pol.normalizer.normalize_obs(obs)[None],
                               episode_start=np.ones(1, dtype=bool), deterministic=True)
    mapped, _ = pol.predict(obs[None], episode_start=np.ones(1, dtype=bool),
                            deterministic=True)
    wrapped = ResidualMixtureAction(gym.make("lrm/Critical-v1", horizon=40))
    np.testing.assert_array_equal(mapped[0], wrapped.map(raw[0], obs))
    assert f"{algo}:{out / 'model.zip'}" in capsys.readouterr().out
    # given the env it will act in (a held-out id), the map corrects that env's heuristic
    assert pol.action_map.heuristic.config.horizon == 40
    other = gym.make("lrm/Critical-v1", horizon=40, provisioning=1.2)
    moved = load_sb3_policy(f"{algo}:{out / 'model.zip'}", env=other)
    assert moved.action_map.heuristic.config == other.unwrapped.config


def test_residual_option_is_validated(capsys):
    assert train.main(["--residual", "oracle"]) == 2
    assert "--residual must be one of" in capsys.readouterr().err
    assert train.main(["--residual", "variance_feedback", "--algo", "dqn"]) == 2
