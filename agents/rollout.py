"""Many episodes of a policy in one batched rollout of the native vector env (no SB3 needed).

:func:`rollout_episodes` runs N episodes of any policy with stable-baselines3's ``predict``
protocol side by side in :class:`envs.vector_env.FleetVectorEnv` and returns per-episode totals
of the reward and of every ledger key. (``agents.vec`` re-exports it next to the SB3 adapter.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

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
    config = spec.kwargs.get("config", "critical")
    extra = {k: v for k, v in spec.kwargs.items() if k not in ("config", "render_mode")}
    if extra:  # e.g. the observation layout of a -v1 id
        from envs.config import resolve_config

        return resolve_config(config, **extra)
    return config


def make_vector_env(env_id: str, num_envs: int,
                    env_kwargs: Mapping[str, Any] | None = None) -> FleetVectorEnv:
    """A :class:`FleetVectorEnv` of ``num_envs`` copies of ``gym.make(env_id, **env_kwargs)``,
    without autoreset (each copy runs the one episode its reset seed gives)."""
    kwargs = dict(env_kwargs or {})
    config = kwargs.pop("config", _config_from_id(env_id))
    kwargs.pop("render_mode", None)
    return FleetVectorEnv(num_envs, config=config, autoreset_mode=AutoresetMode.DISABLED,
                          **kwargs)


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
    batch, so its episodes differ from single-env ones (their distribution does not);
    ``evaluate.batched_rollouts`` gives each episode of a heuristic the generator its seed
    gives, and so matches single-env rollouts for randomised heuristics too.

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
    out = _zero_totals(len(seed_list))
    venv: FleetVectorEnv | None = None
    trace: dict[str, list[float]] | None = None
    for lo in range(0, len(seed_list), max_batch):
        batch = seed_list[lo:lo + max_batch]
        n = len(batch)
        if venv is None or venv.num_envs != n:
            venv = make_vector_env(env_id, n, env_kwargs)
        if record_first and lo == 0:
            trace = {k: [] for k in TRACE_KEYS}
        _rollout_batch(policy, venv, batch, deterministic, out, lo, trace if lo == 0 else None)
    out["seed"] = np.asarray(seed_list, dtype=np.int64)
    if trace is not None:
        out.update({f"trace/{k}": np.asarray(v) for k, v in trace.items()})
    return out


def rollout_from_reset(policy: Any, venv: FleetVectorEnv, obs: np.ndarray,
                       seeds: Sequence[int], deterministic: bool = True,
                       record_first: bool = False) -> dict[str, np.ndarray]:
    """:func:`rollout_episodes` of one batch whose env is already reset.

    One reset can serve several policies: reset a vector env once (``venv.reset(seed=seeds)``,
    e.g. from :func:`make_vector_env`) and give each policy a ``copy.deepcopy`` of it (a
    copy costs a fraction of a reset); every policy then meets exactly the episodes a reset
    of its own would give.

    Args:
        policy: Any object with SB3's ``predict``.
        venv: A vector env (without autoreset) right after ``reset(seed=seeds)``; it is
            stepped to the end of the episodes.
        obs: The observations that reset returned, shape (n, obs_dim).
        seeds: The reset seeds (copy k ran seed k), returned as ``seed``.
        deterministic: Passed to ``predict``.
        record_first: Also return copy 0's per-slot trajectory (``trace/*`` keys).

    Returns:
        The arrays of :func:`rollout_episodes`.
    """
    seed_list = [int(s) for s in seeds]
    if len(seed_list) != venv.num_envs:
        raise ValueError(f"seeds must name one episode per copy ({venv.num_envs}), "
                         f"got {len(seed_list)}")
    out = _zero_totals(venv.num_envs)
    trace = {k: [] for k in TRACE_KEYS} if record_first else None
    _rollout_batch(policy, venv, seed_list, deterministic, out, 0, trace, obs=obs)
    out["seed"] = np.asarray(seed_list, dtype=np.int64)
    if trace is not None:
        out.update({f"trace/{k}": np.asarray(v) for k, v in trace.items()})
    return out


def _zero_totals(n: int) -> dict[str, np.ndarray]:
    """Zeroed per-episode totals for ``n`` episodes (the keys of :func:`rollout_episodes`):
    the one set of totals every episode loop keeps (evaluation, validation during training,
    the training metrics)."""
    keys = ("return", "length", *FLOW_KEYS, "final_storage_kwh",
            *[f"reward_terms/{k}" for k in REWARD_TERMS])
    out = {k: np.zeros(n) for k in keys}
    for k in ("length", *[k for k in FLOW_KEYS if k in INT_KEYS]):
        out[k] = np.zeros(n, dtype=np.int64)
    return out


def add_step(out: dict[str, np.ndarray], sl: slice, reward: np.ndarray, ended: np.ndarray,
             info: dict[str, Any], active: np.ndarray, all_active: bool = False) -> np.ndarray:
    """Add one step of n episodes to their totals ``out[sl]`` (keys of :func:`_zero_totals`).

    Args:
        out: The totals, updated in place.
        sl: The n episodes' slice of ``out``.
        reward: The step's rewards, shape (n,).
        ended: Whether each episode ended in the step (terminated or truncated), shape (n,).
        info: Batched ``info`` of the step: arrays (n,) per key, ``reward_terms`` a dict of them.
        active: The episodes still running before the step (the others add nothing).
        all_active: ``active.all()`` (skips the masking).

    Returns:
        The episodes that ended in this step (``ended & active``).
    """
    def live(x: np.ndarray) -> np.ndarray:  # x where the episode runs, else 0
        return x if all_active else np.where(active, x, 0)

    out["return"][sl] += live(reward)
    out["length"][sl] += active
    for k in FLOW_KEYS:
        out[k][sl] += live(info[k])
    for k in REWARD_TERMS:
        out[f"reward_terms/{k}"][sl] += live(info["reward_terms"][k])
    done = ended & active
    out["final_storage_kwh"][sl] = np.where(done, info["storage_kwh"],
                                            out["final_storage_kwh"][sl])
    return done


def stack_infos(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``info`` dicts of n single envs as one batched info (arrays of shape (n,))."""
    out: dict[str, Any] = {k: np.array([i[k] for i in infos]) for k in
                           (*FLOW_KEYS, "storage_kwh")}
    out["reward_terms"] = {k: np.array([i["reward_terms"][k] for i in infos])
                           for k in REWARD_TERMS}
    return out


def episode_metrics(totals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-episode fleet metrics from the totals (arrays over episodes).

    Returns ``aux_kwh``, ``waste_kwh``, ``leftover_kwh`` (end-of-episode store above S_0),
    ``harvest_kwh``, ``demand_kwh``, ``accuracy`` (correct / arrived, 0 without arrivals) and
    ``reward_terms/<name>`` for every reward term.
    """
    out = {
        "aux_kwh": totals["aux_kwh"],
        "waste_kwh": totals["waste_kwh"],
        "leftover_kwh": totals["reward_terms/leftover_kwh"],
        "harvest_kwh": totals["harvest_kwh"],
        "demand_kwh": totals["demand_kwh"],
        "accuracy": totals["correct"] / np.maximum(totals["arrived"], 1.0),
    }
    for k in REWARD_TERMS:
        out[f"reward_terms/{k}"] = totals[f"reward_terms/{k}"]
    return out


class LockstepEnvs:
    """Single envs (any wrappers) stepped side by side with the vector-env interface the
    episode loop uses: ``reset(seed=seeds)``, ``reset(options={"reset_mask": m})`` (marks the
    masked copies' episodes over: they are not stepped again) and ``step(actions)`` with a
    batched ``info`` (:func:`stack_infos`; copies not stepped repeat their last values)."""

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self._over = np.zeros(self.num_envs, dtype=bool)
        self._last: list[tuple[Any, float, bool, bool, dict[str, Any]]] = []

    def reset(self, seed: Sequence[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if options and "reset_mask" in options:
            self._over |= np.asarray(options["reset_mask"], dtype=bool)
            return np.stack([x[0] for x in self._last]), [x[4] for x in self._last]
        out = [env.reset(seed=int(s)) for env, s in zip(self.envs, seed)]
        self._over[:] = False
        return np.stack([o for o, _ in out]), [i for _, i in out]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict[str, Any]]:
        last = []
        for i, env in enumerate(self.envs):
            last.append(self._last[i] if self._over[i] else env.step(actions[i]))
        self._last = last
        return (np.stack([x[0] for x in last]), np.array([float(x[1]) for x in last]),
                np.array([bool(x[2]) for x in last]), np.array([bool(x[3]) for x in last]),
                stack_infos([x[4] for x in last]))

    def close(self) -> None:
        for env in self.envs:
            env.close()


#: Per-slot keys of ``info`` recorded for the first episode by ``record_first``.
TRACE_KEYS = ("harvest_kwh", "demand_kwh", "storage_kwh")


def _rollout_batch(policy: Any, venv: FleetVectorEnv, seeds: Sequence[int],
                   deterministic: bool, out: dict[str, np.ndarray], lo: int,
                   trace: dict[str, list[float]] | None = None,
                   obs: np.ndarray | None = None) -> None:
    """Step the batch to the end, adding into ``out[lo:lo + n]`` (resets it first unless
    ``obs``, the observations of a reset already done, is given)."""
    n = venv.num_envs
    sl = slice(lo, lo + n)
    if obs is None:
        obs, _ = venv.reset(seed=list(seeds))
    active = np.ones(n, dtype=bool)
    starts = np.ones(n, dtype=bool)
    state = None
    while active.any():
        actions, state = policy.predict(obs, state=state, episode_start=starts,
                                        deterministic=deterministic)
        starts = np.zeros(n, dtype=bool)
        all_active = bool(active.all())
        if all_active:
            obs, reward, term, trunc, info = venv.step(actions)
        else:  # some episodes have ended (an env that terminates early): reset, then ignore
            venv.reset(options={"reset_mask": ~active})
            obs, reward, term, trunc, info = venv.step(actions)
        a = active
        if trace is not None and a[0]:
            for k in TRACE_KEYS:
                trace[k].append(float(info[k][0]))

        done = add_step(out, sl, reward, term | trunc, info, a, all_active)
        active = a & ~done
