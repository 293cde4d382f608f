"""The kernel steps through a table of bound array addresses (``envs.bound``): every copy of
a core (pickled, deep-copied, task buffers grown at a reset) must step its own arrays."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.bound import table
from envs.config import resolve_config
from envs.realistic import make_core


def _steps(env: gym.Env, actions: list) -> list[np.ndarray]:
    return [env.step(a)[0] for a in actions]


@pytest.mark.parametrize("env_id", ["lrm/Critical-v1", "lrm/R1Trace-v1"])
@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))])
def test_a_copied_env_steps_its_own_arrays(env_id: str, duplicate) -> None:
    env = gym.make(env_id, horizon=12).unwrapped
    env.reset(seed=3)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(5)]
    env.step(actions[0])
    twin = duplicate(env)
    assert twin.core._tab[0] != env.core._tab[0]  # the copy's own parameter array
    state = (env.core.t.copy(), env.core._fs.copy(), env.core.obs.copy())
    ours = _steps(twin, actions[1:])
    # Stepping the copy left the original untouched ...
    assert np.array_equal(env.core.t, state[0])
    assert np.array_equal(env.core._fs, state[1])
    assert np.array_equal(env.core.obs, state[2])
    # ... and the original then steps to the same observations.
    theirs = _steps(env, actions[1:])
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("overrides", [{"horizon": 12},
                                       {"horizon": 12, "class_deadlines": (0, 2, 5)}])
def test_task_buffers_grown_at_a_reset_are_rebound(overrides: dict) -> None:
    cfg = resolve_config("critical", **overrides)
    fresh, grown = make_core(cfg, 2), make_core(cfg, 2)
    grown._alloc(1)  # room for one task a slot: the reset must grow the buffers
    grown.A = 1
    grown._bind()
    if hasattr(grown, "done"):
        grown.done = grown.done[:, :, :1].copy()
        grown._done_A = 1
        grown._bind()
    old = grown._tab.copy()
    for core in (fresh, grown):
        core.reset_copies([0, 1], [tuple(np.random.default_rng([7, i]).spawn(3))
                                   for i in range(2)])
    assert grown.A > 1
    assert not np.array_equal(grown._tab, old)
    rng = np.random.default_rng(0)
    for _ in range(cfg.horizon):
        mix = rng.dirichlet(np.ones(cfg.n_configs), size=(2, cfg.n_classes))
        a, b = fresh.step(mixtures=mix), grown.step(mixtures=mix)
        for k, v in vars(a).items():
            assert np.array_equal(v, getattr(b, k)), k
        assert np.array_equal(fresh.obs, grown.obs)


def test_table_refuses_arrays_it_cannot_bind() -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        table([np.zeros((4, 4))[:, 1]])
    with pytest.raises(ValueError, match="at most 4-D"):
        table([np.zeros((1, 1, 1, 1, 1))])
