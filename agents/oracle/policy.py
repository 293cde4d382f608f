"""The hindsight oracle as a policy (it reads the env's hidden episode: a bound, not a rival).

``evaluate.py`` reports the LP optimum (the bound) for ``oracle``. The
:class:`HindsightOracle` can also act (``predict``): in each slot it sends class c to the
configurations the LP chose for that slot's class-c tasks in proportion; the simulator then
assigns tasks to configurations by their own random quantiles, so the realised reward is
below the bound. Only the bound is claimed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from agents.oracle.episode import OracleSolution
from agents.oracle.solve import solve_episode
from envs.actions import queued_action, serve_action


class HindsightOracle:
    """The hindsight oracle as a policy (it reads the env's hidden episode: a bound, not a rival).

    Call :meth:`plan` after ``env.reset`` (``predict`` does it at ``episode_start`` or when the
    episode changed). ``solution.reward`` is the upper bound; ``predict`` realises the plan
    approximately (see the module docstring).

    Args:
        env: The environment (any wrapper of a ``FleetEnv``; the oracle reads its core).
        seed: Seed of the generator used to draw a configuration per slot (discrete actions).
    """

    name = "oracle"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.config = env.unwrapped.config
        self.rng = np.random.default_rng(seed)
        self.solution: OracleSolution | None = None
        self._key: bytes | None = None
        self._mix: np.ndarray | None = None
        self._served: np.ndarray | None = None

    def seed(self, seed: int | None) -> None:
        """Reseed the policy's generator."""
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the plan (a new one is made at the next ``predict``)."""
        self.solution = None

    def plan(self) -> OracleSolution:
        """Solve the LP of the env's current episode."""
        core = self.env.unwrapped.core
        self.solution = solve_episode(core, 0)
        self._key = core.harvest[0].tobytes()
        sol, cfg = self.solution, self.config
        if sol.plan is not None:  # queue LP: planned mixture and service counts per slot
            mix = sol.plan.mixture
            self._served = sol.plan.served
        else:
            mix = np.zeros((cfg.horizon, cfg.n_classes, cfg.n_configs))
            tk = sol.tasks
            for col in range(4):
                has = tk.option_j[:, col] >= 0
                np.add.at(mix, (tk.slot[has], tk.cls[has], tk.option_j[has, col]),
                          sol.weights[has, col])
        tot = mix.sum(axis=-1, keepdims=True)
        self._mix = np.where(tot > 0, mix / np.maximum(tot, 1e-300), 1.0 / cfg.n_configs)
        return self.solution

    def predict(self, observation: np.ndarray, state: object = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, object]:
        """Action realising the plan in the env's current slot (unbatched observations only)."""
        core = self.env.unwrapped.core
        if (self.solution is None or (episode_start is not None and np.any(episode_start))
                or self._key != core.harvest[0].tobytes()):
            self.plan()
        t = min(int(core.t[0]), self.config.horizon - 1)
        mix = self._mix[t]
        defer = None
        if self.solution.plan is not None:  # keep waiting what the plan serves later
            pending = core.queue_len[0] + core.arrivals[0, t]
            planned = self._served[t]
            defer = np.where(pending > 0, np.clip(1.0 - planned / np.maximum(pending, 1), 0, 1),
                             0.0)
        if self.config.action_type == "discrete":
            w = self.config.class_shares @ mix
            j = int(self.rng.choice(self.config.n_configs, p=w / w.sum()))
            if defer is not None and float(self.config.class_shares @ defer) > 0.5:
                j += self.config.n_configs
            return np.int64(j), state
        if defer is not None:
            return queued_action(mix, defer), state
        return serve_action(self.config, mix), state
