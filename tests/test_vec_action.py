"""The batched action map of the native training env equals the single-env wrapper exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

import envs  # noqa: F401  (registers the ids)
from agents.cli import UsageError
from agents.training_envs import make_training_venv
from agents.vec import FleetSB3VecEnv, VecActionMap
from agents.wrappers import SoftmaxMixtureAction, action_map

#: A paper env (C*J entries) and a queued realistic env (C*(J+1): one defer entry per class).
MAP_IDS = ("lrm/Critical-v0", "lrm/R1Trace-v0")


def _action_batches(dim: int, per_class: int) -> list[np.ndarray]:
    """Random, extreme and out-of-range agent actions, float32 and float64."""
    rng = np.random.default_rng(11)
    one_hot = -np.ones((per_class, dim))
    for j in range(per_class):  # +1 on entry j of every class (j = J: the defer entry)
        one_hot[j, j::per_class] = 1.0
    return [
        rng.uniform(-1, 1, (16, dim)).astype(np.float32),
        rng.uniform(-1, 1, (16, dim)),
        np.stack([np.zeros(dim), np.ones(dim), -np.ones(dim)]).astype(np.float32),
        one_hot.astype(np.float32),
        rng.choice([-1.0, 1.0], (8, dim)).astype(np.float32),
        rng.normal(0.0, 4.0, (8, dim)).astype(np.float32),  # beyond [-1, 1]: clipped
        np.nextafter(np.float32(1.0), np.float32(0.0)) * np.ones((1, dim), np.float32),
    ]


@pytest.mark.parametrize("env_id", MAP_IDS)
def test_batched_softmax_map_equals_the_wrapper_row_by_row(env_id: str) -> None:
    env = SoftmaxMixtureAction(gym.make(env_id))
    cfg = env.unwrapped.config
    dim = int(env.action_space.shape[0])
    per_class = dim // cfg.n_classes
    assert per_class == cfg.n_configs + (env_id != "lrm/Critical-v0")  # the defer entry
    batched = action_map(env.spec_dict())
    for batch in _action_batches(dim, per_class):
        out = batched(batch)
        assert out.shape == batch.shape and out.dtype == np.float32
        for row, a in zip(out, batch):
            single = env.action(a)
            assert single.dtype == np.float32
            assert row.tobytes() == single.tobytes(), a
            assert env.unwrapped.action_space.contains(row)
    # each class's largest softmax weight maps to exactly +1 (the env's pure-route code)
    out = batched(_action_batches(dim, per_class)[0]).reshape(-1, cfg.n_classes, per_class)
    assert np.all(out.max(axis=-1) == 1.0)


class _Recorder(VecEnv):
    """A VecEnv that records the actions it is stepped with."""

    def __init__(self, space: gym.spaces.Box, n: int) -> None:
        super().__init__(n, space, space)
        self.seen: list[np.ndarray] = []

    def reset(self) -> np.ndarray:
        return np.zeros((self.num_envs, *self.observation_space.shape), np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self.seen.append(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        n = self.num_envs
        return self.reset(), np.zeros(n, np.float32), np.zeros(n, bool), [{}] * n

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: object = None) -> list:
        return [None] * self.num_envs

    def set_attr(self, attr_name: str, value: object, indices: object = None) -> None:
        raise NotImplementedError

    def env_method(self, *args: object, indices: object = None, **kwargs: object) -> list:
        raise NotImplementedError

    def env_is_wrapped(self, wrapper_class: type, indices: object = None) -> list[bool]:
        return [False] * self.num_envs

def test_vec_action_map_passes_mapped_actions_on() -> None:
    env = SoftmaxMixtureAction(gym.make("lrm/Critical-v0"))
    rec = _Recorder(env.action_space, 4)
    wrapped = VecActionMap.from_spec(rec, env.spec_dict())
    assert wrapped.action_space == env.action_space  # the agent's space is unchanged
    a = np.random.default_rng(0).uniform(-1, 1, (4, 27)).astype(np.float32)
    wrapped.step(a)
    np.testing.assert_array_equal(rec.seen[0], np.stack([env.action(x) for x in a]))
    with pytest.raises(ValueError, match="unknown action wrapper"):
        VecActionMap.from_spec(rec, {"class": "gymnasium.wrappers.ClipAction"})


@pytest.mark.parametrize("env_id", MAP_IDS)
def test_native_training_env_steps_like_dummy(env_id: str) -> None:
    """train.py's two training envs (native + batched map, DummyVecEnv of wrapped Monitor
    envs) give the same observations, rewards, dones and episode infos, bit for bit."""
    kw = {"horizon": 4}
    native = make_training_venv(env_id, kw, 3, 5, "native", SoftmaxMixtureAction)
    dummy = make_training_venv(env_id, kw, 3, 5, "dummy", SoftmaxMixtureAction)
    assert isinstance(native, VecActionMap) and isinstance(native.venv, FleetSB3VecEnv)
    assert native.action_space == dummy.action_space
    assert native.reset().tobytes() == dummy.reset().tobytes()
    dim = int(native.action_space.shape[0])
    batches = [b for b in _action_batches(dim, dim // 4) if len(b) >= 3]
    episodes = 0
    for k in range(10):
        act = np.clip(batches[k % len(batches)][:3], -1, 1).astype(np.float32)  # as SB3 does
        (oa, ra, da, ia), (ob, rb, db, ib) = native.step(act), dummy.step(act)
        assert oa.tobytes() == ob.tobytes() and ra.tobytes() == rb.tobytes()
        assert da.tolist() == db.tolist()
        for x, y in zip(ia, ib):
            assert set(x) == set(y)
            if "episode" in x:
                episodes += 1
                assert (x["episode"]["r"], x["episode"]["l"]) == (y["episode"]["r"],
                                                                  y["episode"]["l"])
                assert x["terminal_observation"].tobytes() == y["terminal_observation"].tobytes()
            assert x["reward_terms"] == y["reward_terms"]
            assert x["aux_kwh"] == y["aux_kwh"] and x["queued"] == y["queued"]
    assert episodes == 6  # 10 steps of 3 copies with horizon 4: two episodes each
    native.close()
    dummy.close()


def test_native_backend_rejects_a_wrapper_without_a_batched_form() -> None:
    with pytest.raises(UsageError, match="--vec-env native.*ClipAction.*dummy"):
        make_training_venv("lrm/Critical-v0", {}, 2, 0, "native",
                                 gym.wrappers.ClipAction)
    with pytest.raises(UsageError, match="--vec-env must be one of native, dummy"):
        make_training_venv("lrm/Critical-v0", {}, 2, 0, "threads")
