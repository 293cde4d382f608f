"""Steps per second of the fleet environments, next to CartPole-v1 measured in the same run.

Prints Markdown tables (median of several repetitions, after a warm-up):

1. single env through ``gym.make`` for every registered ``lrm/*`` id (a fixed valid action and
   pre-drawn random actions; episode resets included), Gymnasium's ``CartPole-v1`` the same
   way, and the batched core ``FleetCore`` at B = 256 and 1024 (env-steps per second, random
   mixtures and random pure configurations; resets excluded);
2. the native vector env (``gym.make_vec``, autoresets included) at N = 1, 8, 64, 256, 1024
   against ``SyncVectorEnv`` and ``AsyncVectorEnv`` of 8 single envs (env-steps per second);
3. PPO training frames per second with the native vector env through ``agents.vec`` versus
   SB3's ``DummyVecEnv`` (same number of copies and hyperparameters).

Usage: ``python bench/env_speed.py [--quick] [--reps N] [--skip-ppo]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402  (registers the ids)
from envs.config import resolve_config  # noqa: E402
from envs.dynamics import FleetCore  # noqa: E402
from envs.spaces import action_to_mixture  # noqa: E402

ID = "lrm/Critical-v0"


def median_rate(run: Callable[[], int], reps: int) -> float:
    """Median over ``reps`` runs of (steps done / seconds); one warm-up run first."""
    run()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def single_env_rate(env_id: str, steps: int, reps: int, random: bool, **kw) -> float:
    """Steps per second of ``gym.make(env_id)`` (resets at episode ends included)."""
    env = gym.make(env_id, **kw)
    env.action_space.seed(0)
    if random:
        actions = [env.action_space.sample() for _ in range(1000)]
    else:
        actions = [env.action_space.sample()] * 1000
    env.reset(seed=0)

    def run() -> int:
        for k in range(steps):
            _, _, term, trunc, _ = env.step(actions[k % 1000])
            if term or trunc:
                env.reset()
        return steps

    return median_rate(run, reps)


def core_rate(b: int, steps: int, reps: int, pure: bool) -> float:
    """Env-steps per second of ``FleetCore(config, B=b).step`` (resets excluded)."""
    cfg = resolve_config("critical")
    core = FleetCore(cfg, b)
    rng = np.random.default_rng(0)
    for i in range(b):
        core.reset_copy(i, *np.random.default_rng(i).spawn(3))
    if pure:
        inputs = [{"configs": rng.integers(0, cfg.n_configs, b)} for _ in range(8)]
    else:
        inputs = [{"mixtures": action_to_mixture(cfg, rng.uniform(-1, 1, (b, 27)))}
                  for _ in range(8)]
    steps = min(steps, cfg.horizon)

    def run() -> int:
        core.t[:] = 0  # replay the same episode (the step reads it, never changes it)
        for k in range(steps):
            core.step(**inputs[k % 8])
        return steps * b

    return median_rate(run, reps)


def vector_rate(make: Callable[[], gym.vector.VectorEnv], n: int, steps: int,
                reps: int) -> float:
    """Env-steps per second of a vector env of ``n`` copies, random actions."""
    venv = make()
    venv.action_space.seed(0)
    actions = [venv.action_space.sample() for _ in range(16)]
    venv.reset(seed=0)

    def run() -> int:
        for k in range(steps):
            venv.step(actions[k % 16])
        return steps * n

    rate = median_rate(run, reps)
    venv.close()
    return rate


def ppo_fps(native: bool, n_envs: int, total: int, reps: int) -> float:
    """PPO ``learn`` frames per second (env steps collected and trained on per second)."""
    import torch
    from stable_baselines3 import PPO

    from agents.vec import make_sb3_vec_env

    torch.set_num_threads(1)
    rates = []
    for r in range(reps + 1):
        env = make_sb3_vec_env(ID, n_envs, seed=r, native=native)
        model = PPO("MlpPolicy", env, n_steps=256, batch_size=256, n_epochs=2, seed=r,
                    device="cpu", verbose=0)
        t0 = time.perf_counter()
        model.learn(total)
        if r:  # the first run warms up
            rates.append(total / (time.perf_counter() - t0))
        env.close()
    return statistics.median(rates)


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (about half a minute)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (median)")
    ap.add_argument("--skip-ppo", action="store_true", help="leave out the PPO comparison")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    steps = 1000 if args.quick else 3000
    vsteps = 40 if args.quick else 150

    print(f"lrm-energy-gym speed: median of {reps} runs, numpy {np.__version__}, "
          f"gymnasium {gym.__version__}\n")
    cart = single_env_rate("CartPole-v1", steps * 3, reps, random=True)
    print("| environment | steps/s | vs CartPole-v1 |")
    print("|---|---:|---:|")
    print(f"| `CartPole-v1` (gym.make, random actions) | {fmt(cart)} | 1.00x |")
    single: dict[str, float] = {}
    for env_id in sorted(envs.ENV_IDS):
        for random in (False, True):
            r = single_env_rate(env_id, steps, reps, random)
            single[(env_id, random)] = r
            label = "random actions" if random else "fixed action"
            print(f"| `{env_id}` (gym.make, {label}) | {fmt(r)} | {r / cart:.2f}x |")
    r = single_env_rate(ID, steps, reps, True, action_type="discrete")
    print(f"| `{ID}` discrete (gym.make, random actions) | {fmt(r)} | {r / cart:.2f}x |")
    base = single[(ID, True)]
    print(f"\n| batched core `FleetCore` ({ID} config) | env-steps/s | vs single env "
          "(random actions) |")
    print("|---|---:|---:|")
    for b in (256, 1024):
        for pure in (False, True):
            r = core_rate(b, steps // 10 if b > 256 else steps // 4, reps, pure)
            label = "random pure configurations" if pure else "random mixtures"
            print(f"| B = {b}, {label} | {fmt(r)} | {r / base:.1f}x |")

    print(f"\n| vector env ({ID}, random actions, autoreset) | env-steps/s | "
          "vs SyncVectorEnv N = 8 |")
    print("|---|---:|---:|")
    sync = vector_rate(lambda: gym.make_vec(ID, num_envs=8, vectorization_mode="sync"), 8,
                       vsteps * 4, reps)
    asyn = vector_rate(lambda: gym.make_vec(ID, num_envs=8, vectorization_mode="async"), 8,
                       vsteps * 4, reps)
    print(f"| `SyncVectorEnv`, N = 8 | {fmt(sync)} | 1.0x |")
    print(f"| `AsyncVectorEnv`, N = 8 | {fmt(asyn)} | {asyn / sync:.1f}x |")
    for n in (1, 8, 64, 256, 1024):
        k = vsteps * 8 if n <= 8 else (vsteps * 2 if n <= 64 else vsteps)
        if n == 1024:  # at least one full episode, so autoresets are counted
            k = max(k, 300) if not args.quick else k
        r = vector_rate(lambda n=n: gym.make_vec(ID, num_envs=n,
                                                 vectorization_mode="vector_entry_point"),
                        n, k, reps)
        print(f"| native `FleetVectorEnv`, N = {n} | {fmt(r)} | {r / sync:.1f}x |")

    if not args.skip_ppo:
        total = 2048 if args.quick else 4096
        print(f"\n| PPO `learn` ({ID}, 8 copies, {total} steps, 1 torch thread) | frames/s "
              "| vs DummyVecEnv |")
        print("|---|---:|---:|")
        dummy = ppo_fps(False, 8, total, max(1, reps // 2))
        native = ppo_fps(True, 8, total, max(1, reps // 2))
        print(f"| SB3 `DummyVecEnv` + `Monitor` | {fmt(dummy)} | 1.00x |")
        print(f"| native env via `agents.vec.FleetSB3VecEnv` | {fmt(native)} | "
              f"{native / dummy:.2f}x |")


if __name__ == "__main__":
    main()
