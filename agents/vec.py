"""Stable-baselines3 on the native vector env, and many evaluation episodes in one rollout.

* :class:`FleetSB3VecEnv` / :func:`make_sb3_vec_env`: a ``stable_baselines3`` ``VecEnv`` over
  :class:`envs.vector_env.FleetVectorEnv` (one batched core call per step, no Python loop
  over copies), a drop-in replacement for ``make_vec_env(id, n_envs, seed=...)`` with
  ``DummyVecEnv`` + ``Monitor`` (which, and ``SubprocVecEnv``, stay available as back ends).
* :class:`VecActionMap`: the batched form of an action parametrisation of
  :mod:`agents.wrappers` (e.g. ``SoftmaxMixtureAction``) as an SB3 ``VecEnvWrapper``: one
  numpy expression on the (N, dim) action array, bit-identical to the single-env wrapper
  applied row by row.
* :func:`rollout_episodes` (from :mod:`agents.rollout`, which does not import SB3): runs N
  episodes of any policy with SB3's ``predict`` protocol in batched rollouts and returns
  per-episode totals of the reward and of every ledger key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import ResultsWriter
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.rollout import FLOW_KEYS, TRACE_KEYS, _config_from_id, rollout_episodes
from envs.info import FLOAT_KEYS, INT_KEYS
from envs.reward import REWARD_TERMS
from envs.vector_env import FleetVectorEnv

__all__ = ["BACKENDS", "FLOW_KEYS", "TRACE_KEYS", "FleetSB3VecEnv", "VecActionMap",
           "make_sb3_vec_env", "rollout_episodes"]


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

    With ``monitor_dir`` every finished episode is also written as a row of
    ``<monitor_dir>/<i>.monitor.csv`` (copy i), the files and format of SB3's ``Monitor``
    under ``make_vec_env(..., monitor_dir=...)``, readable by
    ``stable_baselines3.common.monitor.load_results``. (SB3's ``VecMonitor`` would sum the
    float32 vector rewards; this keeps ``Monitor``'s float64 returns, so both back ends
    write the same numbers.)

    Args:
        venv: The native vector env (its autoreset mode must be ``SAME_STEP``); see
            :func:`make_sb3_vec_env` to build one.
        monitor_dir: Directory of the episode CSV files (None: none written).
        monitor_append: Append to existing files (a resumed run) instead of replacing them.
        env_id: Env id written in the CSV header (as ``Monitor`` does).
    """

    def __init__(self, venv: FleetVectorEnv, monitor_dir: str | os.PathLike | None = None,
                 monitor_append: bool = False, env_id: str | None = None) -> None:
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
        self._writers: list[ResultsWriter] = []
        if monitor_dir is not None:
            Path(monitor_dir).mkdir(parents=True, exist_ok=True)
            self._writers = [ResultsWriter(os.path.join(str(monitor_dir), str(i)),
                                           header={"t_start": self._t_start,
                                                   "env_id": str(env_id)},
                                           override_existing=not monitor_append)
                             for i in range(self.num_envs)]

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
                if self._writers:
                    self._writers[i].write_row(d["episode"])
            self._ep_return[dones] = 0.0
            self._ep_length[dones] = 0
        for d, tl in zip(infos, (trunc & ~term).tolist()):
            d["TimeLimit.truncated"] = tl
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        """Close the monitor files and the native env."""
        for w in self._writers:
            w.close()
        self._writers = []
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


class VecActionMap(VecEnvWrapper):
    """Applies a batched action map to every action array before the wrapped VecEnv sees it.

    The agent acts in ``venv.action_space`` (or the map's own ``action_space`` if it has
    one); ``action_map`` turns its (N, dim)
    actions into the env's. Built from an ``action_wrapper.json`` spec
    (:meth:`from_spec`), it is the batched form of the single-env wrapper that wrote the spec
    (e.g. :class:`agents.wrappers.SoftmaxMixtureAction`), equal to it row by row bit for bit,
    and the map :func:`agents.sb3.load_sb3_policy` applies to the saved model's actions.

    Args:
        venv: The VecEnv to wrap.
        action_map: Batched agent actions (N, dim) -> env actions (N, dim).
        spec: The ``action_wrapper.json`` content the map was built from (kept for saving).
    """

    def __init__(self, venv: VecEnv, action_map: Callable[..., np.ndarray],
                 spec: dict[str, Any] | None = None) -> None:
        # A map with its own ``action_space`` (the knob residual) changes the agent's space.
        super().__init__(venv, action_space=getattr(action_map, "action_space", None))
        self.action_map = action_map
        self.spec = spec
        #: The map also reads the observations (the residual mode, ``agents.residual``).
        self.needs_obs = bool(getattr(action_map, "needs_obs", False))
        self._obs: np.ndarray | None = None

    @classmethod
    def from_spec(cls, venv: VecEnv, spec: dict[str, Any]) -> VecActionMap:
        """The wrapper of an ``action_wrapper.json`` spec (``spec_dict()`` of the wrapper)."""
        from agents.wrappers import action_map

        return cls(venv, action_map(spec), spec)

    def step_async(self, actions: np.ndarray) -> None:
        """Map the agent's actions (with the last observations, if the map reads them) and
        pass them on."""
        if self.needs_obs:
            if self._obs is None:
                raise RuntimeError("call reset() before step()")
            self.venv.step_async(self.action_map(actions, self._obs))
        else:
            self.venv.step_async(self.action_map(actions))

    def reset(self) -> np.ndarray:
        """Reset the wrapped VecEnv."""
        obs = self.venv.reset()
        self._obs = obs
        return obs

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """The wrapped VecEnv's step result, unchanged."""
        out = self.venv.step_wait()
        self._obs = out[0]
        return out


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
                     backend: str = "native", env_kwargs: Mapping[str, Any] | None = None,
                     monitor_dir: str | os.PathLike | None = None,
                     monitor_append: bool = False) -> VecEnv:
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
        monitor_dir: Write each copy's finished episodes to ``<monitor_dir>/<i>.monitor.csv``
            (SB3's ``Monitor`` files; every back end writes the same rows).
        monitor_append: Append to existing monitor files instead of replacing them.

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
        vec: VecEnv = FleetSB3VecEnv(venv, monitor_dir=monitor_dir,
                                     monitor_append=monitor_append, env_id=env_id)
        if seed is not None:
            vec.seed(seed)
        return vec
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    import envs  # noqa: F401

    _config_from_id(env_id)  # a clear error for an unknown id, before any subprocess starts
    kwargs.setdefault("render_mode", None)
    mon = {"monitor_dir": None if monitor_dir is None else str(monitor_dir),
           "monitor_kwargs": {"override_existing": not monitor_append}}
    if backend == "subproc":  # workers import the package through Gymnasium's "module:id"
        return make_vec_env(f"envs:{env_id}" if ":" not in env_id else env_id,
                            n_envs=n_envs, seed=seed, env_kwargs=kwargs,
                            vec_env_cls=SubprocVecEnv, **mon)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs,
                        vec_env_cls=DummyVecEnv, **mon)
