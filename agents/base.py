"""One policy interface for heuristics, the hindsight oracle and trained models.

Every policy has stable-baselines3's ``predict`` signature, so the same evaluation loop (ours,
or SB3's ``evaluate_policy``) runs all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from envs.config import FleetConfig


@runtime_checkable
class Policy(Protocol):
    """SB3's ``predict`` protocol (``stable_baselines3.common.type_aliases.PolicyPredictor``)."""

    def predict(self, observation: Any, state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Return (action, next state) for an observation (unbatched or batched)."""


class Heuristic(ABC):
    """Base class of rule-based policies.

    A heuristic sees the observation and the env's config (the model's parameters are public
    knowledge: ``env.unwrapped.config``); never hidden simulator state. Randomised rules draw
    from ``self.rng`` (reseed it with :meth:`seed`).

    Args:
        env: The environment (any wrapper of a ``FleetEnv``), for its spaces and config.
        seed: Seed of ``self.rng``.
    """

    #: Name in the policy registry.
    name: str = "heuristic"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.config: FleetConfig = env.unwrapped.config
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the policy's own generator (evaluation does this per episode)."""
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Clear per-episode state (called when ``episode_start`` is true)."""

    @abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action for one unbatched observation."""

    def predict(self, observation: Any, state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """SB3-compatible ``predict``; accepts one observation or a batch of them."""
        obs = np.asarray(observation)
        batched = obs.ndim == len(self.observation_space.shape) + 1
        if episode_start is not None and np.any(episode_start):
            self.reset()
        if batched:
            return np.stack([self.act(o) for o in obs]), state
        return self.act(obs), state
