"""Knob residual (agents.residual.ResidualKnobAction): the agent sets variance_feedback's
safety margin and time constant each slot."""

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
from agents.residual import ResidualKnobAction, ResidualKnobMap
from agents.sb3 import algo_class, load_sb3_policy

PAPER_IDS = ("lrm/Critical-v1", "lrm/Volatile-v1")


@pytest.mark.parametrize("env_id", PAPER_IDS)
def test_zero_action_is_the_heuristic_bit_for_bit(env_id):
    env = ResidualKnobAction(gym.make(env_id, horizon=60))
    base = gym.make(env_id, horizon=60)
    pol = VarianceFeedbackPolicy(base, seed=0)
    assert env.action_space.shape == (2,)
    obs, _ = env.reset(seed=4)
    bobs, _ = base.reset(seed=4)
    zero = np.zeros(2, dtype=np.float32)
    for _ in range(60):
        heuristic_action = pol.act(bobs)
        assert env.map(zero, obs).tobytes() == heuristic_action.tobytes()
        obs, r, term, trunc, _ = env.step(zero)
        bobs, br, *_ = base.step(heuristic_action)
        assert r == br and obs.tobytes() == bobs.tobytes()
        if term or trunc:
            break


def test_an_action_is_the_heuristic_with_those_knobs():
    env = gym.make("lrm/Critical-v1")
    m = ResidualKnobMap(env, z_scale=0.5, tau_scale=1.0)
    a = np.array([0.6, -0.8], dtype=np.float32)
    z, tau = m.knobs(a)
    other = VarianceFeedbackPolicy(env, seed=0, safety_z=float(z[0]),
                                   time_constant_slots=float(tau[0]))
    np.testing.assert_allclose([z[0], tau[0]], [2.0 * np.exp(0.3), 24.0 * np.exp(-0.8)])
    obs, _ = env.reset(seed=2)
    for _ in range(30):
        np.testing.assert_allclose(m(a, obs), other.act(obs), atol=1e-6)
        obs = env.step(m(a, obs))[0]


def test_a_wider_margin_serves_less_energy():
    env = gym.make("lrm/Critical-v1")
    m = ResidualKnobMap(env)
    obs, _ = env.reset(seed=1)
    acts = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mix = m.mixtures(acts, np.repeat(obs[None], 3, axis=0))
    demand = [m.heuristic.model.stats(x)["mean_kwh"] for x in mix]
    assert demand[0] > demand[1] > demand[2], demand


def test_a_zero_scale_keeps_that_knob():
    env = gym.make("lrm/Volatile-v1")
    m = ResidualKnobMap(env, z_scale=0.7, tau_scale=0.0)
    obs, _ = env.reset(seed=3)
    a = np.array([[0.5, -1.0], [0.5, 1.0], [0.5, 0.0]])
    z, tau = m.knobs(a)
    assert np.all(tau == 24.0) and np.all(z == z[0]) and z[0] > 2.0
    out = m(a, np.repeat(obs[None], 3, axis=0))
    assert out[0].tobytes() == out[1].tobytes() == out[2].tobytes()


def test_knob_map_rejects_bad_arguments():
    env = gym.make("lrm/Critical-v1")
    with pytest.raises(ValueError, match="z_scale must be in"):
        ResidualKnobMap(env, z_scale=-0.1)
    with pytest.raises(ValueError, match="tau_scale must be in"):
        ResidualKnobMap(env, tau_scale=float("nan"))
    with pytest.raises(ValueError, match="continuous"):
        ResidualKnobMap(gym.make("lrm/Critical-v1", action_type="discrete"))
    with pytest.raises(ValueError, match="without a queue"):
        ResidualKnobMap(gym.make("lrm/R1Trace-v1"))


def test_knob_wrapper_in_hyperparameters():
    hp = resolve_entry({"env_wrapper": {"agents.residual.ResidualKnobAction":
                                        {"z_scale": 0.3, "tau_scale": 2.0}}},
                       algo_class("ppo"), None)
    wrapped = hp["env_wrapper"](gym.make("lrm/Critical-v1"))
    assert (wrapped.map.z_scale, wrapped.map.tau_scale) == (0.3, 2.0)


def test_knob_run_saves_a_policy_that_replays_the_map(tmp_path):
    import yaml

    entry = {"n_envs": 2, "n_timesteps": 256, "policy": "MlpPolicy", "n_steps": 64,
             "batch_size": 64, "n_epochs": 1, "normalize": True,
             "policy_kwargs": "dict(net_arch=[16])",
             "env_wrapper": {"agents.residual.ResidualKnobAction": {"z_scale": 0.5}}}
    hp = tmp_path / "hp.yml"
    hp.write_text(yaml.safe_dump({"default": entry}))
    out = tmp_path / "run"
    argv = ["--env", "lrm/Critical-v1", "--timesteps", "256", "--out", str(out),
            "--hyperparams", str(hp), "--env-kwarg", "horizon=40", "--eval-freq", "128",
            "--eval-episodes", "1", "--checkpoint-freq", "0", "--test-episodes", "2",
            "--compare", "variance_feedback", "--no-progress-bar"]
    assert train.main(argv) == 0
    spec = json.loads((out / "action_wrapper.json").read_text())
    assert spec["class"] == "agents.residual.ResidualKnobAction"
    assert spec["kwargs"]["z_scale"] == 0.5
    pol = load_sb3_policy(f"ppo:{out / 'model.zip'}")
    assert pol.model.action_space.shape == (2,)
    env = gym.make("lrm/Critical-v1", horizon=40)
    obs, _ = env.reset(seed=9)
    raw, _ = pol.model.predict(pol.normalizer.normalize_obs(obs)[None], deterministic=True)
    mapped, _ = pol.predict(obs[None], deterministic=True)
    assert mapped.shape == (1, 27)
    wrapped = ResidualKnobAction(gym.make("lrm/Critical-v1", horizon=40), z_scale=0.5)
    np.testing.assert_array_equal(mapped[0], wrapped.map(raw[0], obs))
    other = gym.make("lrm/Critical-v1", horizon=40, provisioning=1.2)
    moved = load_sb3_policy(f"ppo:{out / 'model.zip'}", env=other)
    assert moved.action_map.heuristic.config == other.unwrapped.config
