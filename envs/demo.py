"""A short demo: roll out a policy on an environment and print the energy ledger.

Usage: ``python -m envs.demo [ENV_ID] [--seed S]``.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from envs.actions import mixture_to_action
from envs.outcomes import reference_mixture


def main(argv: list[str] | None = None) -> int:
    """Roll out the reference mixture for one episode and print the ledger."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id", nargs="?", default="lrm/Critical-v0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.env_id not in gym.registry:
        parser.error(f"unknown env id {args.env_id!r}; known: "
                     f"{sorted(i for i in gym.registry if i.startswith('lrm/'))}")
    env = gym.make(args.env_id)
    cfg = env.unwrapped.config
    action = mixture_to_action(reference_mixture(cfg))
    if cfg.action_type == "discrete":
        action = 0
    obs, info = env.reset(seed=args.seed)
    totals = dict.fromkeys(("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh"), 0.0)
    ret, arrived, correct, done = 0.0, 0, 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(action)
        ret += reward
        for k in totals:
            totals[k] += info[k]
        arrived += info["arrived"]
        correct += info["correct"]
        done = terminated or truncated
    print(f"{args.env_id}, seed {args.seed}, reference mixture, {cfg.horizon} slots")
    for k, v in totals.items():
        print(f"  {k:<12} {v:10.4f}")
    print(f"  {'store_end':<12} {info['storage_kwh']:10.4f}")
    print(f"  accuracy     {correct / max(arrived, 1):10.3f}  ({correct}/{arrived})")
    print(f"  return       {ret:10.3f}")
    gap = (totals["harvest_kwh"] - totals["demand_kwh"]
           - (info["storage_kwh"] - cfg.initial_storage_kwh)
           - totals["waste_kwh"] + totals["aux_kwh"])
    print(f"  ledger identity residual {gap:.2e} kWh")
    return 0 if np.isfinite(ret) else 1


if __name__ == "__main__":
    sys.exit(main())
