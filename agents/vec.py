"""Stable-baselines3 on the native vector env, and many evaluation episodes in one rollout.

* :class:`FleetSB3VecEnv` / :func:`make_sb3_vec_env`: a ``stable_baselines3`` ``VecEnv`` over
  :class:`envs.vector_env.FleetVectorEnv` (one batched core call per step, no Python loop
  over copies), a drop-in replacement for ``make_vec_env(id, n_envs, seed=...)`` with
  ``DummyVecEnv`` + ``Monitor`` (which, and ``SubprocVecEnv``, stay available as back ends).
* :func:`rollout_episodes` (from :mod:`agents.rollout`, which does not import SB3): runs N
  episodes of any policy with SB3's ``predict`` protocol in batched rollouts and returns
  per-episode totals of the reward and of every ledger key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from agents.rollout import FLOW_KEYS, TRACE_KEYS, _config_from_id, rollout_episodes
from envs.info import FLOAT_KEYS, INT_KEYS
from envs.reward import REWARD_TERMS
from envs.vector_env import FleetVectorEnv

__all__ = ["BACKENDS", "FLOW_KEYS", "TRACE_KEYS", "FleetSB3VecEnv", "make_sb3_vec_env",
           "rollout_episodes"]


class FleetSB3VecEnv(VecEnv):
    """Stable-baselines3 ``VecEnv`` over a native :class:`FleetVectorEnv`.

    SB3 semantics, as ``DummyVecEnv`` of ``Monitor``-wrapped ``FleetEnv`` copies: a copy whose
    episode ends is reset in the same step; its ``infos[i]`` then holds
    ``terminal_observation`` (the last observation of the episode) and ``episode``
    (``{"r": return, "l": length, "t": seconds since creation}``, as SB3's ``Monitor``), and the
    returned observation is the first of the next episode. Every step's ``infos[i]`` holds the
    single env's ``info`` keys (floats/ints and ``reward_terms``) and ``TimeLimit.truncated``
    (truncated and not terminated). ``seed(s)`` seeds copy i with
    ``s + i`` at the next ``reset()``, as ``DummyVecEnv`` does, so a given seed gives the same
    trajectories as ``DummyVecEnv`` bit for bit.

    Args:
        venv: The native vector env (its autoreset mode must be ``SAME_STEP``); see
            :func:`make_sb3_vec_env` to build one.
    """

    def __init__(self, venv: FleetVectorEnv) -> None:
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("FleetSB3VecEnv needs a FleetVectorEnv with "
                             "autoreset_mode='same_step' (SB3 resets in the same step)")
        self.venv = venv
        venv._info_masks = False  # infos are unbatched per copy here; skip the _key masks
        super().__init__(venv.num_envs, venv.single_observation_space,
                         venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._t_start = time.time()

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        """Reset every copy (with the seeds of :meth:`seed`, used once) and return obs."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = _unbatch(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions of the next :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every copy: (obs, rewards float32 (N,), dones bool (N,), infos list)."""
        actions = np.asarray(self._actions)
        if not self.venv._discrete:
            actions = actions.reshape(self.num_envs, -1)
        else:
            actions = actions.reshape(self.num_envs)
        obs, reward, term, trunc, info = self.venv.step(actions)
        dones = term | trunc
        infos = _unbatch(info, self.num_envs)
        self._ep_return += reward
        self._ep_length += 1
        if dones.any():
            final_obs = info["final_obs"]
            final_infos = _unbatch(info["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = infos[i]
                d = infos[i] = final_infos[i]
                d["terminal_observation"] = final_obs[i]
                d["episode"] = {"r": round(float(self._ep_return[i]), 6),
                                "l": int(self._ep_length[i]),
                                "t": round(time.time() - self._t_start, 6)}
            self._ep_return[dones] = 0.0
            self._ep_length[dones] = 0
        for d, tl in zip(infos, (trunc & ~term).tolist()):
            d["TimeLimit.truncated"] = tl
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        """Close the native env (nothing to release)."""
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """Attribute of the copies (the same for all: config, spaces, render mode...)."""
        n = len(list(self._get_indices(indices)))
        if attr_name == "observation_space":
            return [self.venv.single_observation_space] * n
        if attr_name == "action_space":
            return [self.venv.single_action_space] * n
        return [getattr(self.venv, attr_name)] * n

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Not supported: the copies share one config."""
        raise AttributeError(f"FleetSB3VecEnv cannot set {attr_name!r} on single copies; "
                             "build a new env with the changed config")

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        """Not supported: the copies have no per-copy env object."""
        raise AttributeError(f"FleetSB3VecEnv has no per-copy env to call {method_name!r} on; "
                             "use make_sb3_vec_env(..., backend='dummy')")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None
                       ) -> list[bool]:
        """No copy is wrapped (episode statistics are built in, as SB3's Monitor)."""
        return [False] * len(list(self._get_indices(indices)))


def _unbatch(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Per-copy info dicts (keys of the single env) from a batched info dict."""
    cols = {k: info[k].tolist() for k in (*FLOAT_KEYS, *INT_KEYS)}
    terms = {k: info["reward_terms"][k].tolist() for k in REWARD_TERMS}
    keys = list(cols)
    vals = list(zip(*cols.values()))
    tvals = list(zip(*terms.values()))
    return [{**dict(zip(keys, vals[i])), "reward_terms": dict(zip(REWARD_TERMS, tvals[i]))}
            for i in range(n)]


#: Back ends of :func:`make_sb3_vec_env`.
BACKENDS = ("native", "dummy", "subproc")


def make_sb3_vec_env(env_id: str, n_envs: int = 1, seed: int | None = None,
                     backend: str = "native", env_kwargs: Mapping[str, Any] | None = None
                     ) -> VecEnv:
    """A stable-baselines3 ``VecEnv`` of ``n_envs`` copies of a registered ``lrm/*`` id.

    All back ends give the same trajectories for the same seed (bit for bit); they differ in
    speed only.

    Args:
        env_id: Registered id, e.g. ``"lrm/Critical-v0"``.
        n_envs: Number of copies.
        seed: Copy i is seeded with ``seed + i`` at the first ``reset()`` (None: fresh
            entropy).
        backend: ``"native"`` (default): :class:`FleetSB3VecEnv`, one batched core;
            ``"dummy"``: SB3's ``DummyVecEnv`` of ``Monitor``-wrapped single envs
            (``make_vec_env``); ``"subproc"``: SB3's ``SubprocVecEnv``, one process per copy.
        env_kwargs: ``FleetConfig`` overrides / ``config=`` preset, as for ``gym.make``.

    Returns:
        The VecEnv (seeded, not yet reset).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kwargs = dict(env_kwargs or {})
    if backend == "native":
        config = kwargs.pop("config", _config_from_id(env_id))
        kwargs.pop("render_mode", None)
        venv = FleetVectorEnv(n_envs, config=config, autoreset_mode=AutoresetMode.SAME_STEP,
                              **kwargs)
        vec: VecEnv = FleetSB3VecEnv(venv)
        if seed is not None:
            vec.seed(seed)
        return vec
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    import envs  # noqa: F401

    _config_from_id(env_id)  # a clear error for an unknown id, before any subprocess starts
    kwargs.setdefault("render_mode", None)
    if backend == "subproc":  # workers import the package through Gymnasium's "module:id"
        return make_vec_env(f"envs:{env_id}" if ":" not in env_id else env_id,
                            n_envs=n_envs, seed=seed, env_kwargs=kwargs,
                            vec_env_cls=SubprocVecEnv)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs,
                        vec_env_cls=DummyVecEnv)
