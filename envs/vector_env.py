"""Native vectorised fleet environment: N copies stepped by one batched core call.

``gym.make_vec(id, num_envs=N)`` (or ``vectorization_mode="vector_entry_point"``) returns
:class:`FleetVectorEnv` for every ``lrm/*`` id. It behaves like Gymnasium's
``SyncVectorEnv`` over N ``FleetEnv`` copies, bit for bit, without the Python loop:

* same single and batched spaces; observations float32 ``(N, dim)``, rewards float64 ``(N,)``;
* ``reset(seed=s)`` seeds copy i with ``s + i`` (a list gives one seed per copy), and each copy
  draws its episode exactly as ``FleetEnv.reset`` does (``np_random`` from
  ``gymnasium.utils.seeding.np_random(seed)``, then ``np_random.spawn(3)``), so copy i follows
  the trajectory of a single env reset with the same seed;
* ``info`` batched like ``SyncVectorEnv``: every key of the single env's info as an array of
  shape ``(N,)`` with a boolean ``_key`` mask, ``reward_terms`` nested the same way;
* autoreset: ``AutoresetMode.NEXT_STEP`` by default (the step after an episode ends resets that
  copy, returning its reset observation and info, reward 0, not terminated, not truncated);
  ``autoreset_mode="same_step"`` resets in the same step and puts the last observation and
  info in ``info["final_obs"]`` / ``info["final_info"]``; ``"disabled"`` is also accepted.
  ``reset(options={"reset_mask": mask})`` resets only the masked copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import kernel
from envs.actions import real_action_array
from envs.config import FleetConfig, plain_spec, resolve_config
from envs.info import FLOAT_KEYS, INT_KEYS, batched_info, kernel_batched_info
from envs.realistic import RealisticCore, make_core
from envs.reward import REWARD_TERMS, combine, reward_terms, reward_weights
from envs.spaces import action_space, make_observer, observation_space

#: Per-copy state arrays of :class:`FleetCore` that a step changes (restored for copies that
#: are reset, not stepped, in a NEXT_STEP autoreset while other copies step).
_CORE_STATE = ("t", "storage", "last_harvest", "last_demand", "last_aux", "last_waste",
               "net_mean", "net_m2", "harvest_prev", "harvest_trend")


class FleetVectorEnv(VectorEnv):
    """N copies of ``FleetEnv`` held in one batched :class:`~envs.dynamics.FleetCore`.

    Args:
        num_envs: Number of copies N (>= 1).
        config: Preset name, ``FleetConfig`` or dict, as for ``FleetEnv``.
        render_mode: Must be None (render a single ``FleetEnv`` instead).
        autoreset_mode: ``AutoresetMode`` or its value (``"next_step"`` default,
            ``"same_step"``, ``"disabled"``; the enum values ``"NextStep"`` etc. work too).
        **overrides: ``FleetConfig`` fields to override, as for ``FleetEnv``.
    """

    metadata: dict[str, Any] = {"render_modes": [],
                                "autoreset_mode": AutoresetMode.NEXT_STEP}
    _spec: Any = None

    @property
    def spec(self) -> Any:
        """The spec ``gym.make_vec`` gave this env, its kwargs as plain Python values."""
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = plain_spec(value)

    def __init__(self, num_envs: int = 1,
                 config: FleetConfig | str | Mapping[str, Any] | None = "critical",
                 render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **overrides: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) \
                or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError("FleetVectorEnv does not render (render_mode must be None); "
                             "render a single env, or use vectorization_mode='sync'")
        mode = _autoreset_mode(autoreset_mode)
        self.config: FleetConfig = resolve_config(config, **overrides)
        self.num_envs = int(num_envs)
        self.render_mode = None
        self.autoreset_mode = mode
        self.metadata = {"render_modes": [], "autoreset_mode": mode}
        self.core = make_core(self.config, batch_size=self.num_envs)
        self._realistic = isinstance(self.core, RealisticCore)
        self._state_keys = _CORE_STATE + getattr(self.core, "EXTRA_STEP_STATE", ())
        self.observer = make_observer(self.core)
        self.single_observation_space = observation_space(self.config)
        self.single_action_space = action_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.reward_weights = reward_weights(self.core)
        self._discrete = self.config.action_type == "discrete"
        self._queued = self.config.queue_enabled
        self._np_randoms: list[np.random.Generator | None] = [None] * self.num_envs
        self._np_random_seeds: list[int | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = np.zeros(self.num_envs, dtype=bool)
        #: Whether infos carry the ``_key`` masks (always, for users of the Gymnasium API).
        self._info_masks = True

    # ------------------------------------------------------------------ seeding
    @property
    def np_random_seed(self) -> tuple[int | None, ...]:
        """Seed of each copy's generator (as ``SyncVectorEnv.np_random_seed``)."""
        return tuple(self._np_random_seeds)

    def _reset_copies(self, idx: np.ndarray, seeds: Sequence[int | None]) -> None:
        """Start a new episode in copies ``idx`` (seeds one per copy), each exactly as
        ``FleetEnv.reset(seed=seed)`` does: ``np_random`` from
        ``gymnasium.utils.seeding.np_random(seed)`` (kept when the seed is None), then
        ``np_random.spawn(3)`` for arrivals, harvest and task latents."""
        rngs = []
        for i, seed in zip(idx.tolist(), seeds):
            if seed is not None or self._np_randoms[i] is None:
                self._np_randoms[i], self._np_random_seeds[i] = seeding.np_random(seed)
            rngs.append(tuple(self._np_randoms[i].spawn(3)))
        self.core.reset_copies(idx.tolist(), rngs)

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every copy (or the copies of ``options["reset_mask"]``).

        Args:
            seed: None (continue each copy's generator, or draw fresh entropy the first
                time), an int s (copy i gets s + i) or a list of N seeds / None.
            options: ``{"reset_mask": bool array (N,)}`` resets only the masked copies.

        Returns:
            Observations (N, dim) and the batched reset info (masks False for copies that
            were not reset).
        """
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed as a list must have num_envs={n} entries, "
                                 f"got {len(seeds)}")
        mask = np.ones(n, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = options["reset_mask"]
            if not isinstance(mask, np.ndarray) or mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape "
                                 f"({n},), got {mask!r}")
            if not mask.any():
                raise ValueError("options['reset_mask'] must contain at least one True")
        idx = np.flatnonzero(mask)
        self._reset_copies(idx, [seeds[i] for i in idx.tolist()])
        self._autoreset[idx] = False
        self._started[idx] = True
        return self.observer.observe(), self._reset_info(mask)

    def step(self, actions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; see the module docstring for the autoreset semantics.

        Args:
            actions: Batched actions, shape (N, C*J) float in [-1, 1] (continuous) or (N,)
                integers in [0, J) (discrete).
        """
        if not self._started.all():
            raise RuntimeError("call reset() before step()")
        core, n = self.core, self.num_envs
        a = self._validate(actions)
        mode = self.autoreset_mode
        ended = self._autoreset
        if mode == AutoresetMode.DISABLED and ended.any():
            raise RuntimeError(f"copies {np.flatnonzero(ended).tolist()} have ended; with "
                               "autoreset_mode='disabled' reset them with "
                               "reset(options={'reset_mask': ...}) first")
        if mode == AutoresetMode.NEXT_STEP and ended.any():
            idx = np.flatnonzero(ended)
            self._reset_copies(idx, [None] * idx.size)
            self._autoreset = np.zeros(n, dtype=bool)
            if idx.size == n:
                obs = self.observer.observe()
                zeros = np.zeros(n, dtype=bool)
                return obs, np.zeros(n), zeros, zeros.copy(), self._reset_info(ended)
            saved = {k: getattr(core, k)[idx].copy() for k in self._state_keys}
            obs, reward, term, trunc, info = self._step_all(a)
            for k, v in saved.items():
                getattr(core, k)[idx] = v
            obs[idx] = self.observer.observe()[idx]
            reward[idx] = 0.0
            trunc[idx] = False
            _show_reset(info, self._reset_info(ended), idx)
            if mode == AutoresetMode.NEXT_STEP:
                self._autoreset = term | trunc
            return obs, reward, term, trunc, info
        obs, reward, term, trunc, info = self._step_all(a)
        done = term | trunc
        if mode == AutoresetMode.SAME_STEP and done.any():
            info = self._add_final(info, obs, done)
            idx = np.flatnonzero(done)
            self._reset_copies(idx, [None] * idx.size)
            obs = self.observer.observe()
            _show_reset(info, self._reset_info(done), done)
        elif mode != AutoresetMode.SAME_STEP:
            self._autoreset = done
        return obs, reward, term, trunc, info

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release (no subprocesses)."""

    # ------------------------------------------------------------------ internals
    def _validate(self, actions: Any) -> np.ndarray:
        n = self.num_envs
        if self._discrete:
            a = np.asarray(actions)
            j = int(self.single_action_space.n)
            if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
                if a.shape == (n,) and np.issubdtype(a.dtype, np.floating) and np.all(
                        np.isfinite(a)) and np.all(a == np.round(a)):
                    a = a.astype(np.int64)
                else:
                    raise ValueError(f"actions must be {n} integers in [0, {j - 1}] (shape "
                                     f"({n},)), got shape {a.shape}, dtype {a.dtype}")
            if a.size and not (a.min() >= 0 and a.max() < j):
                raise ValueError(f"actions must be integers in [0, {j - 1}], got min "
                                 f"{a.min()}, max {a.max()}")
            return a
        a = actions
        if type(a) is not np.ndarray or a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
            a = real_action_array(a)
        shape = (n, *self.single_action_space.shape)
        if a.shape != shape:
            raise ValueError(f"actions must have shape {shape} (copies x classes x "
                             f"configurations), got shape {a.shape}")
        # The kernel checks the values before it changes anything; an autoreset step resets
        # copies first, so it checks them here.
        if (self._queued or self._autoreset.any()) and \
                not np.maximum.reduce(np.abs(a), axis=None) <= 1.0:
            self._bad_actions(a)
        return a

    @staticmethod
    def _bad_actions(a: np.ndarray) -> None:
        raise ValueError(f"action entries must be finite and in [-1, 1], got min "
                         f"{a.min()!r}, max {a.max()!r}")

    def _step_all(self, a: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core, n = self.core, self.num_envs
        if self._queued:  # queue / caps: the queue step of envs.realistic
            res = core.step_action(a)
            trunc = core.t >= self.config.horizon
            terms = reward_terms(core, res, trunc)
            reward = combine(self.reward_weights, terms)
            info = batched_info(res, core.t, terms, core.queue_len.sum(axis=1))
            return self.observer.observe(), reward, np.zeros(n, dtype=bool), \
                trunc, self._masked(info, np.ones(n, dtype=bool))
        if self._discrete:
            code = core.run(kernel.MODE_CONFIG, core._no_act,
                            np.ascontiguousarray(a, dtype=np.int64))
        else:
            code = core.run(kernel.MODE_ACTION, np.ascontiguousarray(a).reshape(-1),
                            core._no_configs)
            if code == kernel.BAD_ACTION:
                self._bad_actions(np.asarray(a, dtype=np.float64))
        if code == kernel.ENDED:
            raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
        info = kernel_batched_info(core.res_f, core.res_i)
        reward = core.res_f[:, 8].copy()
        trunc = core.res_i[:, 5] == 1
        return self.observer.current().copy(), reward, np.zeros(n, dtype=bool), trunc, \
            self._masked(info, np.ones(n, dtype=bool))

    def _reset_info(self, mask: np.ndarray) -> dict[str, Any]:
        """Batched reset info: the single env's reset info at masked copies, zeros elsewhere."""
        n = self.num_envs
        info: dict[str, Any] = {k: np.zeros(n) for k in FLOAT_KEYS}
        info.update({k: np.zeros(n, dtype=np.int64) for k in INT_KEYS})
        info["storage_kwh"] = np.where(mask, self.core.storage, 0.0)
        info["reward_terms"] = {k: np.zeros(n) for k in REWARD_TERMS}
        return self._masked(info, mask)

    def _add_final(self, info: dict[str, Any], obs: np.ndarray, done: np.ndarray
                   ) -> dict[str, Any]:
        """Add ``final_obs`` / ``final_info`` of the ended copies (SAME_STEP mode)."""
        n = self.num_envs
        final_obs = np.full(n, None, dtype=object)
        for i in np.flatnonzero(done):
            final_obs[i] = obs[i].copy()
        final = {k: np.where(done, v, np.zeros_like(v)) for k, v in info.items()
                 if not k.startswith("_") and k != "reward_terms"}
        final["reward_terms"] = {k: np.where(done, v, 0.0)
                                 for k, v in info["reward_terms"].items() if not k.startswith("_")}
        info["final_obs"], info["_final_obs"] = final_obs, done.copy()
        info["final_info"], info["_final_info"] = self._masked(final, done), done.copy()
        return info


    def _masked(self, info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        """``info`` with SyncVectorEnv's ``_key`` masks, unless ``_info_masks`` is False
        (``agents.vec`` unbatches infos per copy and does not need them)."""
        return _with_masks(info, mask) if self._info_masks else info


def _show_reset(info: dict[str, Any], reset: dict[str, Any], copies: np.ndarray) -> None:
    """Give the reset ``copies`` (indices or a mask) of a step's ``info`` their reset info:
    ledger keys from ``reset``, reward terms 0."""
    for k in (*FLOAT_KEYS, *INT_KEYS):
        info[k][copies] = reset[k][copies]
    for k in REWARD_TERMS:
        info["reward_terms"][k][copies] = 0.0


def _with_masks(info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Add SyncVectorEnv's ``_key`` masks to a batched info dict (recursively)."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        out[k] = _with_masks(v, mask) if isinstance(v, dict) else v
        out[f"_{k}"] = mask.copy()
    return out


def _autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """Parse an autoreset mode: the enum, its value (``"NextStep"``) or name (``"next_step"``)."""
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str):
        for m in AutoresetMode:
            if mode in (m.value, m.name, m.name.lower()):
                return m
    raise ValueError(f"autoreset_mode must be one of {[m.name.lower() for m in AutoresetMode]} "
                     f"(or an AutoresetMode), got {mode!r}")
