"""Dispatch policies: heuristics, the hindsight oracle and trained SB3 models behind one interface.

``make_policy(name, env, seed)`` builds any of them; a name is a key of :data:`POLICIES` or
``ALGO:PATH`` for a saved stable-baselines3 model (``ppo:runs/x/model.zip``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agents.base import Heuristic, Policy
from agents.heuristics import HEURISTICS
from agents.oracle import HindsightOracle

#: Registry: policy name -> class (constructor ``cls(env, seed=None, **kwargs)``).
POLICIES: dict[str, type] = {**HEURISTICS, "oracle": HindsightOracle}


def is_model_spec(name: str) -> bool:
    """True if ``name`` names a saved SB3 model (``ALGO:PATH``)."""
    return ":" in name


def make_policy(name: str, env: gym.Env, seed: int | None = None, **kwargs: Any) -> Policy:
    """Build the policy called ``name`` for ``env``.

    Args:
        name: A key of :data:`POLICIES`, or ``ALGO:PATH`` for a saved SB3 model.
        env: The environment the policy acts in (spaces and public config).
        seed: Seed of the policy's own generator (heuristics and oracle).
        **kwargs: Extra constructor arguments of a heuristic (e.g. ``accuracy_floor``).

    Raises:
        ValueError: unknown policy name or algorithm.
        FileNotFoundError: a model file does not exist.
    """
    if is_model_spec(name):
        from agents.sb3 import load_sb3_policy

        return load_sb3_policy(name, env=env)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(POLICIES)} or ALGO:PATH "
                         f"(e.g. ppo:runs/x/model.zip)")
    return POLICIES[name](env, seed=seed, **kwargs)


__all__ = ["POLICIES", "Heuristic", "HindsightOracle", "Policy", "is_model_spec", "make_policy"]
