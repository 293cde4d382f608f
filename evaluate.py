"""Minimal evaluation entry points used by train.py (``random`` and ``ALGO:PATH`` only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from agents.sb3 import load_sb3_policy


def run_evaluation(env_id: str, policies: list[str], episodes: int, seed: int,
                   out_dir: str | Path | None = None, env_kwargs: dict[str, Any] | None = None,
                   progress: bool = True, plots: bool = True) -> dict:
    """Return per policy the episode returns on seeds ``seed .. seed + episodes - 1``."""
    results: dict[str, Any] = {}
    for name in policies:
        returns = []
        for k in range(episodes):
            env = gym.make(env_id, **(env_kwargs or {}))
            rng = np.random.default_rng(seed + k)
            policy = None if name == "random" else load_sb3_policy(name)
            obs, _ = env.reset(seed=seed + k)
            total, done = 0.0, False
            while not done:
                if policy is None and isinstance(env.action_space, gym.spaces.Discrete):
                    action = int(rng.integers(env.action_space.n))
                elif policy is None:
                    space = env.action_space
                    action = rng.uniform(space.low, space.high).astype(np.float32)
                else:
                    action = policy.predict(obs, deterministic=True)[0]
                obs, r, term, trunc, _ = env.step(action)
                total += float(r)
                done = term or trunc
            returns.append(total)
        r = np.array(returns)
        half = 1.96 * r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else float("nan")
        results[name] = {"mean": float(r.mean()), "ci95": float(half), "returns": returns}
    return {"env_id": env_id, "episodes": episodes, "seed": seed, "policies": results}


def format_table(summary: dict) -> str:
    """Markdown table of mean return and 95% CI half-width per policy."""
    lines = ["| policy | return | 95% CI |", "|---|---|---|"]
    for name, r in summary["policies"].items():
        lines.append(f"| {name} | {r['mean']:.2f} | ±{r['ci95']:.2f} |")
    return "\n".join(lines)
