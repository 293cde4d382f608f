"""Stable-baselines3 on the native vector env, and many evaluation episodes in one rollout.

* :class:`FleetSB3VecEnv` / :func:`make_sb3_vec_env`: a ``stable_baselines3`` ``VecEnv`` over
  :class:`envs.vector_env.FleetVectorEnv` (one batched core call per step, no Python loop
  over copies), a drop-in replacement for ``make_vec_env(id, n_envs, seed=...)`` with
  ``DummyVecEnv`` + ``Monitor`` (which, and ``SubprocVecEnv``, stay available as back ends).
* :func:`rollout_episodes`: runs N episodes of any policy with SB3's ``predict`` protocol in
  batched rollouts and returns per-episode totals of the reward and of every ledger key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from envs.config import FleetConfig
from envs.info import FLOAT_KEYS, INT_KEYS
from envs.reward import REWARD_TERMS
from envs.vector_env import FleetVectorEnv

#: Ledger keys of ``info`` that are flows per slot (summed over an episode by
#: :func:`rollout_episodes`); ``storage_kwh`` is a level and ``t`` a clock, so they are not.
FLOW_KEYS = tuple(k for k in (*FLOAT_KEYS, *INT_KEYS) if k not in ("storage_kwh", "t"))


def _config_from_id(env_id: str) -> str | Mapping[str, Any] | FleetConfig:
    """The ``config`` kwarg a registered id passes to ``FleetEnv``."""
    import envs  # noqa: F401  (registers the ids)

    spec = gym.spec(env_id)
    return spec.kwargs.get("config", "critical")


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


def rollout_episodes(policy: Any, env_id: str, seeds: Iterable[int] | int,
                     deterministic: bool = True, max_batch: int = 1024,
                     env_kwargs: Mapping[str, Any] | None = None,
                     record_first: bool = False) -> dict[str, np.ndarray]:
    """Run one episode per seed of a policy, batched, and total each episode's ledger.

    Episode k is the episode ``gym.make(env_id, **env_kwargs).reset(seed=seeds[k])`` gives;
    up to ``max_batch`` episodes run side by side in one :class:`FleetVectorEnv`.

    The policy is called as ``policy.predict(obs, state=state, episode_start=starts,
    deterministic=deterministic)`` with a batch of observations, shape (n, obs_dim), and must
    return a batch of actions (n, ...) and its next state (SB3 models and
    ``agents.base.Heuristic`` do). ``episode_start`` is all True on the first step of a
    batch, False after. A deterministic policy gives exactly the totals of single-env
    rollouts on the same seeds; a randomised one draws from its own generator across the
    batch, so its episodes differ from single-env ones (their distribution does not).

    Args:
        policy: Any object with SB3's ``predict``.
        env_id: Registered ``lrm/*`` id.
        seeds: Episode seeds, or an int n for seeds ``0 .. n-1``.
        deterministic: Passed to ``predict``.
        max_batch: Largest number of episodes run at once (memory: about 0.25 MB per copy
            with the default config).
        env_kwargs: ``FleetConfig`` overrides / ``config=`` preset, as for ``gym.make``.
        record_first: Also return the per-slot trajectory of the first episode:
            ``trace/harvest_kwh``, ``trace/demand_kwh``, ``trace/storage_kwh`` [kWh], each of
            shape (length of that episode,).

    Returns:
        Arrays of shape (n_episodes,), in the order of ``seeds``: ``seed``, ``return`` (sum of
        rewards), ``length`` (steps), the sum over the episode of every flow key of ``info``
        (:data:`FLOW_KEYS`: ``harvest_kwh``, ``demand_kwh``, ``aux_kwh``, ``waste_kwh``,
        ``loss_kwh`` [kWh]; ``arrived``, ``served``, ``correct``, ``dropped`` [tasks]),
        ``final_storage_kwh`` (store level at the end [kWh]) and ``reward_terms/<name>`` (sum
        of each reward term, natural units, see ``envs.reward.REWARD_TERMS``).
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must name at least one episode")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    kwargs = dict(env_kwargs or {})
    config = kwargs.pop("config", _config_from_id(env_id))
    kwargs.pop("render_mode", None)
    keys = ("return", "length", *FLOW_KEYS, "final_storage_kwh",
            *[f"reward_terms/{k}" for k in REWARD_TERMS])
    out = {k: np.zeros(len(seed_list)) for k in keys}
    for k in ("length", *[k for k in FLOW_KEYS if k in INT_KEYS]):
        out[k] = np.zeros(len(seed_list), dtype=np.int64)
    venv: FleetVectorEnv | None = None
    trace: dict[str, list[float]] | None = None
    for lo in range(0, len(seed_list), max_batch):
        batch = seed_list[lo:lo + max_batch]
        n = len(batch)
        if venv is None or venv.num_envs != n:
            venv = FleetVectorEnv(n, config=config, autoreset_mode=AutoresetMode.DISABLED,
                                  **kwargs)
        if record_first and lo == 0:
            trace = {k: [] for k in TRACE_KEYS}
        _rollout_batch(policy, venv, batch, deterministic, out, lo, trace if lo == 0 else None)
    out["seed"] = np.asarray(seed_list, dtype=np.int64)
    if trace is not None:
        out.update({f"trace/{k}": np.asarray(v) for k, v in trace.items()})
    return out


#: Per-slot keys of ``info`` recorded for the first episode by ``record_first``.
TRACE_KEYS = ("harvest_kwh", "demand_kwh", "storage_kwh")


def _rollout_batch(policy: Any, venv: FleetVectorEnv, seeds: Sequence[int],
                   deterministic: bool, out: dict[str, np.ndarray], lo: int,
                   trace: dict[str, list[float]] | None = None) -> None:
    n = venv.num_envs
    sl = slice(lo, lo + n)
    obs, _ = venv.reset(seed=list(seeds))
    active = np.ones(n, dtype=bool)
    starts = np.ones(n, dtype=bool)
    state = None
    while active.any():
        actions, state = policy.predict(obs, state=state, episode_start=starts,
                                        deterministic=deterministic)
        starts = np.zeros(n, dtype=bool)
        if active.all():
            obs, reward, term, trunc, info = venv.step(actions)
        else:  # some episodes have ended (an env that terminates early): reset, then ignore
            venv.reset(options={"reset_mask": ~active})
            obs, reward, term, trunc, info = venv.step(actions)
        a = active
        if trace is not None and a[0]:
            for k in TRACE_KEYS:
                trace[k].append(float(info[k][0]))
        out["return"][sl] += np.where(a, reward, 0.0)
        out["length"][sl] += a
        for k in FLOW_KEYS:
            out[k][sl] += np.where(a, info[k], 0)
        for k in REWARD_TERMS:
            out[f"reward_terms/{k}"][sl] += np.where(a, info["reward_terms"][k], 0.0)
        done = (term | trunc) & a
        out["final_storage_kwh"][sl] = np.where(done, info["storage_kwh"],
                                                out["final_storage_kwh"][sl])
        active = a & ~done
