"""The ``-v1`` observation: the ``-v0`` vector plus the public quantities the heuristics read."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import envs
from agents.heuristics import VarianceFeedbackPolicy
from envs.observation import V1_FEATURES, demand_std_kwh
from envs.outcomes import config_moments, reference_demand_kwh

V1_IDS = sorted(i for i in envs.ENV_IDS if i.endswith("-v1"))


def test_every_v0_id_has_a_v1_id_with_the_same_preset():
    v0 = {i for i in envs.ENV_IDS if i.endswith("-v0")}
    assert {i.replace("-v0", "-v1") for i in v0} == set(V1_IDS)
    for i in v0:
        assert envs.ENV_IDS[i] == envs.ENV_IDS[i.replace("-v0", "-v1")]
        assert gym.make(i).unwrapped.config.observation_version == 0


@pytest.mark.parametrize("env_id", V1_IDS)
def test_v1_is_v0_plus_features_same_episode(env_id):
    v0 = gym.make(env_id.replace("-v1", "-v0"), horizon=30)
    v1 = gym.make(env_id, horizon=30)
    names = v1.unwrapped.observation_names
    n0 = v0.observation_space.shape[0]
    assert names[:n0] == v0.unwrapped.observation_names and names[n0:] == list(V1_FEATURES)
    assert v1.observation_space.shape == (n0 + len(V1_FEATURES),)
    rng = np.random.default_rng(0)
    o0, _ = v0.reset(seed=5)
    o1, _ = v1.reset(seed=5)
    cfg = v1.unwrapped.config
    d_ref = reference_demand_kwh(cfg, config_moments(cfg))
    storage = 0.0
    for _ in range(30):
        np.testing.assert_array_equal(o1[:n0], o0)
        assert o1 in v1.observation_space
        f = dict(zip(names, o1.tolist()))
        assert f["store_log"] == pytest.approx(math.log1p(storage / d_ref), rel=1e-6, abs=1e-7)
        a = rng.uniform(-1, 1, v0.action_space.shape)
        o0, r0, _, tr0, i0 = v0.step(a.astype(np.float32))
        o1, r1, _, tr1, i1 = v1.step(a.astype(np.float32))
        assert r0 == r1 and tr0 == tr1 and i0["storage_kwh"] == i1["storage_kwh"]
        storage = i1["storage_kwh"]


def test_v1_config_features_in_reference_units():
    env = gym.make("lrm/Critical-v1", storage_kwh=0.05, provisioning=1.3, harvest_cv=0.5)
    obs, _ = env.reset(seed=1)
    cfg = env.unwrapped.config
    f = dict(zip(env.unwrapped.observation_names, obs.tolist()))
    d_ref = reference_demand_kwh(cfg, config_moments(cfg))
    assert f["capacity_log"] == pytest.approx(math.log1p(0.05 / d_ref), rel=1e-6)
    assert f["capacity_finite"] == 1.0
    assert f["harvest_mean"] == pytest.approx(1.3, rel=1e-6)  # provisioning x D_ref / D_ref
    assert f["harvest_cv"] == pytest.approx(0.5, rel=1e-6)
    assert f["demand_std"] == pytest.approx(demand_std_kwh(cfg) / d_ref, rel=1e-6)
    assert f["arrival_rate_log"] == pytest.approx(math.log1p(cfg.arrival_rate), rel=1e-6)
    assert f["slots_left"] == pytest.approx(cfg.horizon / 288.0)
    inf = gym.make("lrm/Critical-v1").reset(seed=1)[0]
    names = gym.make("lrm/Critical-v1").unwrapped.observation_names
    assert inf[names.index("capacity_finite")] == 0.0 and inf[names.index("capacity_log")] == 0.0


def test_demand_std_matches_simulated_reference_demand():
    # The reference mixture's slot demand: sample std over many slots within 3 standard errors.
    env = gym.make("lrm/Critical-v1", horizon=288)
    cfg = env.unwrapped.config
    uniform = -np.ones(env.action_space.shape, dtype=np.float32)  # every class uniform
    demand = []
    for seed in range(4):
        env.reset(seed=seed)
        for _ in range(288):
            demand.append(env.step(uniform)[4]["demand_kwh"])
    sd = float(np.std(demand))
    assert abs(sd - demand_std_kwh(cfg)) < 3 * sd / math.sqrt(2 * (len(demand) - 1))


def test_harvest_trend_is_the_variance_feedback_trend():
    # variance_feedback keeps this trend from its own history on queue envs; -v1 shows it.
    env = gym.make("lrm/R1Trace-v1", horizon=60)
    pol = VarianceFeedbackPolicy(env, seed=0)
    names = env.unwrapped.observation_names
    i_trend = names.index("harvest_trend")
    for seed in (3, 4):
        obs, _ = env.reset(seed=seed)
        pol.reset()
        for _ in range(60):
            action = pol.act(obs)  # updates the policy's trend from obs
            assert obs[i_trend] == pytest.approx(pol._trend, rel=1e-5, abs=1e-6)
            obs, *_ = env.step(action)


def test_vector_env_v1_equals_single_envs():
    n, T = 3, 40
    venv = gym.make_vec("lrm/SolarDay-v1", num_envs=n, vectorization_mode="vector_entry_point",
                        horizon=T)
    singles = [gym.make("lrm/SolarDay-v1", horizon=T) for _ in range(n)]
    obs, _ = venv.reset(seed=[10, 11, 12])
    sobs = [e.reset(seed=10 + k)[0] for k, e in enumerate(singles)]
    rng = np.random.default_rng(1)
    for _ in range(T):
        np.testing.assert_array_equal(obs, np.stack(sobs))
        a = rng.uniform(-1, 1, (n, *singles[0].action_space.shape)).astype(np.float32)
        obs = venv.step(a)[0]
        sobs = [e.step(a[k])[0] for k, e in enumerate(singles)]


def test_observation_version_is_validated():
    with pytest.raises(ValueError, match="observation_version must be 0 or 1"):
        gym.make("lrm/Critical-v0", observation_version=2)
