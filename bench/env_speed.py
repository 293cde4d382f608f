"""Steps per second of the fleet environments, next to CartPole-v1 measured in the same run.

Prints Markdown tables. Every figure is the median over ``--reps`` rounds after a warm-up
round; within a round all cases of a table run one after the other, and each ratio is taken
within its round (then the median), so load from other processes on a shared machine affects
a case and its baseline alike.

1. Single env through ``gym.make`` for every registered ``lrm/*`` id (a fixed valid action and
   pre-drawn random actions; 5,760 steps, 20 episodes of 288 slots, resets included) next to
   Gymnasium's ``CartPole-v1`` (random actions, resets included), which runs as many steps
   right before each case: each ratio pairs two neighbouring timings; the batched core ``FleetCore`` at B = 256 and 1024
   (env-steps per second; random mixtures and random pure configurations; resets excluded)
   against the single env with random actions.
2. The native vector env (``gym.make_vec``, autoreset) at N = 1, 8, 64, 256, 1024 against
   ``SyncVectorEnv`` and ``AsyncVectorEnv`` of 8 single envs (env-steps per second, random
   actions; every run covers two whole episodes of each copy, so autoresets are included).
3. PPO training frames per second of train.py's training env on the native back end
   (``agents.vec``, batched action map) versus SB3's ``DummyVecEnv`` (8 copies, the
   shipped PPO hyperparameters and ``VecNormalize``, 1 torch thread), and both at 64 copies.

Usage: ``python bench/env_speed.py [--quick] [--reps N] [--clock wall|cpu] [--skip-ppo]``.
``--clock cpu`` times with this process's CPU time (steadier on a loaded machine; it does not
count ``AsyncVectorEnv``'s worker processes, so that row is left out).
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
from envs.actions import action_to_mixture  # noqa: E402
from envs.config import resolve_config  # noqa: E402
from envs.dynamics import FleetCore  # noqa: E402

ID = "lrm/Critical-v0"
Case = tuple[str, Callable[[], int]]  # label, run() -> steps done


def single_env_case(env_id: str, steps: int, random: bool, **kw) -> Callable[[], int]:
    """``gym.make(env_id)`` stepping ``steps`` times (resets at episode ends included)."""
    env = gym.make(env_id, **kw)
    env.action_space.seed(0)
    actions = ([env.action_space.sample() for _ in range(1000)] if random
               else [env.action_space.sample()] * 1000)
    env.reset(seed=0)

    def run() -> int:
        for k in range(steps):
            _, _, term, trunc, _ = env.step(actions[k % 1000])
            if term or trunc:
                env.reset()
        return steps

    return run


def core_case(b: int, steps: int, pure: bool) -> Callable[[], int]:
    """``FleetCore(config, B=b).step`` over ``steps`` slots of one episode (no resets)."""
    cfg = resolve_config("critical")
    core = FleetCore(cfg, b)
    rng = np.random.default_rng(0)
    core.reset_copies(list(range(b)), [tuple(np.random.default_rng(i).spawn(3))
                                       for i in range(b)])
    if pure:
        inputs = [{"configs": rng.integers(0, cfg.n_configs, b)} for _ in range(8)]
    else:
        inputs = [{"mixtures": action_to_mixture(cfg, rng.uniform(-1, 1, (b, 27)))}
                  for _ in range(8)]
    steps = min(steps, cfg.horizon)

    def run() -> int:
        core.t[:] = 0  # replay the same episode (a step reads it and never changes it)
        for k in range(steps):
            core.step(**inputs[k % 8])
        return steps * b

    return run


def vector_case(make: Callable[[], gym.vector.VectorEnv], n: int, steps: int
                ) -> Callable[[], int]:
    """A vector env of ``n`` copies stepping ``steps`` times with random actions."""
    venv = make()
    venv.action_space.seed(0)
    actions = [venv.action_space.sample() for _ in range(16)]
    venv.reset(seed=0)

    def run() -> int:
        for k in range(steps):
            venv.step(actions[k % 16])
        return steps * n

    run.close = venv.close  # type: ignore[attr-defined]
    return run


def measure(cases: list[Case], reps: int, clock: Callable[[], float]
            ) -> list[list[float]]:
    """Rates (steps/s) of every case in each of ``reps`` rounds, after one warm-up round."""
    rounds = []
    for r in range(reps + 1):
        rates = []
        for _, run in cases:
            t0 = clock()
            n = run()
            rates.append(n / max(clock() - t0, 1e-9))
        if r:
            rounds.append(rates)
    return rounds


def measure_paired(ref: Case, cases: list[Case], reps: int, clock: Callable[[], float]
                   ) -> list[list[tuple[float, float]]]:
    """Rates of every case in each of ``reps`` rounds (after a warm-up round), each paired
    with a run of the reference ``ref`` just before it: (case rate, reference rate)."""
    rounds = []
    for r in range(reps + 1):
        pairs = []
        for _, run in cases:
            rates = []
            for fn in (ref[1], run):
                t0 = clock()
                n = fn()
                rates.append(n / max(clock() - t0, 1e-9))
            pairs.append((rates[1], rates[0]))
        if r:
            rounds.append(pairs)
    return rounds


def paired_table(title: str, ref: Case, cases: list[Case],
                 rounds: list[list[tuple[float, float]]]) -> None:
    """Print the reference's median rate, then each case's median rate and the median of its
    ratio to the reference run just before it."""
    print(f"| {title} | steps/s | vs {ref[0].split('`')[1]} |")
    print("|---|---:|---:|")
    ref_rate = statistics.median(p[1] for r in rounds for p in r)
    print(f"| {ref[0]} | {ref_rate:,.0f} | 1.00x |")
    for c, (label, _) in enumerate(cases):
        rate = statistics.median(r[c][0] for r in rounds)
        ratio = statistics.median(r[c][0] / r[c][1] for r in rounds)
        print(f"| {label} | {rate:,.0f} | {ratio:.2f}x |")
    print()


def table(title: str, unit: str, ref: str, cases: list[Case], rounds: list[list[float]],
          base: int) -> None:
    """Print median rate and median within-round ratio to case ``base``."""
    print(f"| {title} | {unit} | vs {ref} |")
    print("|---|---:|---:|")
    for c, (label, _) in enumerate(cases):
        rate = statistics.median(r[c] for r in rounds)
        ratio = statistics.median(r[c] / r[base] for r in rounds)
        print(f"| {label} | {rate:,.0f} | {ratio:.2f}x |")
    print()


def ppo_fps(native: bool, n_envs: int, total: int, seed: int) -> float:
    """Frames per second of one PPO ``learn`` run (collection and updates) as train.py runs it.

    The training env of ``train.py`` (``agents.training_envs.make_training_venv``: the native
    vector env under the batched softmax action map, or ``DummyVecEnv`` of wrapped ``Monitor`` envs;
    monitor CSV files written to a temporary directory), ``VecNormalize`` and the PPO
    hyperparameters of ``hyperparams/ppo.yml`` for :data:`ID`, 1 torch thread; the
    fleet-metrics callback of train.py is attached too. Evaluation and checkpoints are not
    included.
    """
    import tempfile

    import torch
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.callbacks import FleetMetricsCallback
    from agents.hyperparams import read_entry, resolve_entry
    from agents.sb3 import algo_class
    from agents.train_config import ROOT
    from agents.training_envs import make_training_venv

    torch.set_num_threads(1)
    ppo = algo_class("ppo")
    hp = resolve_entry(read_entry(ROOT / "hyperparams" / "ppo.yml", ID), ppo, None)
    with tempfile.TemporaryDirectory() as tmp:
        env = make_training_venv(ID, dict(hp["env_kwargs"]), n_envs, seed,
                                 "native" if native else "dummy", hp["env_wrapper"],
                                 monitor_dir=tmp)
        if hp["normalize"] is not None:
            env = VecNormalize(env, **hp["normalize"])
        model = ppo(hp["policy"], env, seed=seed, device="cpu", verbose=0, **hp["algo_kwargs"])
        t0 = time.perf_counter()
        model.learn(total, callback=FleetMetricsCallback())
        rate = model.num_timesteps / (time.perf_counter() - t0)
        env.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (under a minute)")
    ap.add_argument("--reps", type=int, default=None, help="measured rounds (default 5, quick 3)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall-clock time (default) or this process's CPU time")
    ap.add_argument("--skip-ppo", action="store_true", help="leave out the PPO comparison")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    steps = 600 if args.quick else 5760  # 20 episodes of 288 slots
    print(f"lrm-energy-gym env speed: median of {reps} rounds, {args.clock} clock, "
          f"numpy {np.__version__}, gymnasium {gym.__version__}\n")

    # 1. single envs, CartPole, batched core
    cartpole = ("`CartPole-v1` (gym.make, random actions)",
                single_env_case("CartPole-v1", steps, True))
    cases: list[Case] = []
    for env_id in sorted(envs.ENV_IDS):
        for random in (False, True):
            label = "random actions" if random else "fixed action"
            cases.append((f"`{env_id}` (gym.make, {label})",
                          single_env_case(env_id, steps, random)))
    cases.append((f"`{ID}` discrete (gym.make, random actions)",
                  single_env_case(ID, steps, True, action_type="discrete")))
    paired_table("single environment", cartpole, cases,
                 measure_paired(cartpole, cases, reps, clock))

    base = (f"`{ID}` (gym.make, random actions)", single_env_case(ID, steps, True))
    core_cases: list[Case] = [base]
    for b in (256, 1024):
        for pure in (False, True):
            label = "random pure configurations" if pure else "random mixtures"
            core_cases.append((f"`FleetCore`, B = {b}, {label}",
                               core_case(b, 50 if args.quick else 150, pure)))
    rounds = measure(core_cases, reps, clock)
    table("batched core (critical config)", "env-steps/s", "single env", core_cases, rounds, 0)

    # 2. vector envs: every run covers two whole episodes (288 slots each) of each copy
    horizon = resolve_config("critical").horizon
    vsteps = 2 * horizon + 12 if not args.quick else horizon // 4
    vec_cases: list[Case] = [
        ("`SyncVectorEnv`, N = 8",
         vector_case(lambda: gym.make_vec(ID, num_envs=8, vectorization_mode="sync"), 8,
                     vsteps))]
    if args.clock == "wall":
        vec_cases.append(
            ("`AsyncVectorEnv`, N = 8",
             vector_case(lambda: gym.make_vec(ID, num_envs=8, vectorization_mode="async"), 8,
                         vsteps)))
    for n in (1, 8, 64, 256, 1024):
        vec_cases.append(
            (f"native `FleetVectorEnv`, N = {n}",
             vector_case(lambda n=n: gym.make_vec(ID, num_envs=n,
                                                  vectorization_mode="vector_entry_point"),
                         n, vsteps)))
    rounds = measure(vec_cases, reps, clock)
    table(f"vector env ({ID}, random actions, autoreset)", "env-steps/s",
          "SyncVectorEnv N = 8", vec_cases, rounds, 0)
    for _, run in vec_cases:
        run.close()  # type: ignore[attr-defined]

    # 3. PPO frames per second, alternating the two back ends
    if not args.skip_ppo:
        total = 4096 if args.quick else 20480  # 20480 steps: 80 rollouts, 9 episodes per copy
        ppo_fps(True, 8, 1024, 0)  # warm-up (imports, first model)
        for n_envs in (8, 64):
            pairs = [(ppo_fps(False, n_envs, total, r), ppo_fps(True, n_envs, total, r))
                     for r in range(max(1, reps // 2))]
            print(f"| PPO `learn` as train.py runs it ({ID}, {n_envs} copies, {total} steps, "
                  "hyperparams/ppo.yml, softmax action map, VecNormalize, 1 torch thread) | "
                  "frames/s | vs DummyVecEnv |")
            print("|---|---:|---:|")
            print(f"| `--vec-env dummy`: SB3 `DummyVecEnv` + `Monitor` | "
                  f"{statistics.median(d for d, _ in pairs):,.0f} | 1.00x |")
            print(f"| `--vec-env native`: `FleetSB3VecEnv` + `VecActionMap` | "
                  f"{statistics.median(n for _, n in pairs):,.0f} | "
                  f"{statistics.median(n / d for d, n in pairs):.2f}x |")
            print()


if __name__ == "__main__":
    main()
