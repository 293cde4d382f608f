"""Where a single env's step goes, piece by piece, next to CartPole-v1 in the same process; and
how fast the bare compiled step of 1024 copies runs next to ``SyncVectorEnv`` of 8 envs.

Table 1, per id (random actions, episode resets included, microseconds of CPU time per step,
the minimum over ``--reps`` rounds of each timing loop):

* ``gym.make`` step: the whole step through Gymnasium's wrappers, resets included;
* wrappers: that minus the same steps on ``env.unwrapped``;
* reset per step: one ``reset`` / horizon; of it, the episode's random draws with the id's
  numpy streams (``np_random.spawn(3)``, arrivals, harvest, task latents; they define every
  episode) and the rest (the compiled episode start and task fill, Python);
* kernel call: one call of the core's compiled step entry on a live core (numba's dispatch
  included);
* info: building the step's ``info`` dict from the kernel's tuple (``envs.info.slot_result``);
* observation copy;
* rest of ``FleetEnv.step``: the unwrapped step minus the parts above (action checks, the
  kernel-entry selection, attribute reads).

The budget column is CartPole-v1's step divided by the goal ratio (2.0 for the paper and
solar/wind ids, 1.0 for ``R1Trace*``); "fixed" sums the parts that do not depend on how
``FleetEnv.step`` is written (wrappers, draws, info, observation copy, kernel call).

Table 2: env-steps per second of the kernel alone (``FleetCore.run`` of 1024 copies over 200
slots of one episode, random raw actions, no resets, no Python per copy) and of the episode
draws alone per env-step, next to ``SyncVectorEnv`` of 8 single envs in the same process.

Usage: ``python bench/step_budget.py [--reps N] [--ids ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402  (registers the ids)
from envs import kernel  # noqa: E402
from envs.dynamics import FleetCore  # noqa: E402
from envs.info import slot_result  # noqa: E402
from envs.processes import sample_task_latents  # noqa: E402

DEFAULT_IDS = ("lrm/Critical-v0", "lrm/Critical-v1", "lrm/SolarDay-v1", "lrm/R1Trace-v1")
GOALS = {"R1Trace": 1.0}  # id prefix after "lrm/" -> goal ratio (others 2.0)


def per_call_us(fn: Callable[[], object], n: int, reps: int) -> float:
    """Minimum over ``reps`` rounds of the CPU microseconds per call of ``fn``."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time_ns() - t0) / n / 1e3)
    return best


def stepping(env: gym.Env, actions: list, n: int, reps: int) -> float:
    """CPU microseconds per step of ``env`` with ``actions`` (cycled), resets included."""
    env.reset(seed=0)
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time_ns()
        for k in range(n):
            _, _, term, trunc, _ = env.step(actions[k % len(actions)])
            if term or trunc:
                env.reset()
        best = min(best, (time.process_time_ns() - t0) / n / 1e3)
    return best


def budget_row(env_id: str, cartpole_us: float, n: int, reps: int) -> list[str]:
    env = gym.make(env_id)
    u = env.unwrapped
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(1000)]
    whole = stepping(env, actions, n, reps)
    unwrapped = stepping(u, actions, n, reps)
    horizon = u.config.horizon
    core = u.core
    u.reset(seed=0)
    reset = per_call_us(u.reset, max(20, n // 500), reps) / horizon
    source = np.random.default_rng(0)

    def draws() -> None:
        a_rng, h_rng, t_rng = source.spawn(3)
        counts = core.arrival_process.sample(a_rng, horizon)
        core.harvest_process.sample(h_rng, horizon)
        sample_task_latents(t_rng, int(counts.sum()))

    draw = per_call_us(draws, max(20, n // 500), reps) / horizon
    # the kernel entry on a live core: one slot per call, a reset when the episode ends
    u.reset(seed=0)
    act = np.asarray(actions[0])
    if u.config.queue_enabled:
        from envs import kernel_queue as kq
        mode = kq.DISCRETE if u._discrete else kq.BOX
        if u._discrete:
            act = np.array([float(actions[0])])

        def call() -> None:
            if core.t[0] >= horizon:
                u.reset()
            core._qstep(core._qtab, mode, act)
    else:
        mode = kernel.MODE_CONFIG if u._discrete else kernel.MODE_ACTION
        if u._discrete:
            core._configs[0] = int(actions[0])
            act = core._no_act

        def call() -> None:
            if core.t[0] >= horizon:
                u.reset()
            core._step(core._tab, mode, act)

    def bare() -> None:
        if core.t[0] >= horizon:
            u.reset()

    kernel_us = per_call_us(call, n, reps) - per_call_us(bare, n, reps) - reset
    r = (kernel.OK, *u._res_f0.tolist(), *u._res_i0.tolist())
    info = per_call_us(lambda: slot_result(r), n, reps)
    obs = u._obs0
    copy = per_call_us(obs.copy, n, reps)
    rest = unwrapped - reset - kernel_us - info - copy
    goal = next((g for p, g in GOALS.items() if env_id.startswith(f"lrm/{p}")), 2.0)
    fixed = (whole - unwrapped) + draw + kernel_us + info + copy
    env.close()
    return [f"`{env_id}`", f"{whole:.2f}", f"{cartpole_us / whole:.2f}x",
            f"{cartpole_us / goal:.2f} ({goal:.1f}x)", f"{whole - unwrapped:.2f}",
            f"{reset:.2f}", f"{draw:.2f}", f"{reset - draw:.2f}", f"{kernel_us:.2f}",
            f"{info:.2f}", f"{copy:.2f}", f"{rest:.2f}", f"{fixed:.2f}"]


def vector_rows(reps: int) -> list[list[str]]:
    sync = gym.make_vec("lrm/Critical-v0", num_envs=8, vectorization_mode="sync")
    sync.action_space.seed(0)
    acts = [sync.action_space.sample() for _ in range(16)]
    sync.reset(seed=0)
    steps = 300
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time_ns()
        for k in range(steps):
            sync.step(acts[k % 16])
        best = min(best, (time.process_time_ns() - t0) / (steps * 8) / 1e3)
    sync.close()
    sync_rate = 1e6 / best
    b = 1024
    core = FleetCore(envs.config.resolve_config("critical"), b)
    rngs = [tuple(np.random.default_rng(i).spawn(3)) for i in range(b)]
    rng = np.random.default_rng(0)
    raw = [rng.uniform(-1, 1, (b * core.C * core.J,)) for _ in range(8)]
    slots = 200
    best = float("inf")
    for _ in range(reps):
        core.reset_copies(list(range(b)), rngs)
        t0 = time.process_time_ns()
        for k in range(slots):
            core.run(kernel.MODE_ACTION, raw[k % 8], core._configs)
        best = min(best, (time.process_time_ns() - t0) / (slots * b) / 1e3)
    kernel_rate = 1e6 / best
    source = np.random.default_rng(1)
    horizon = core.T

    def draws() -> None:
        a_rng, h_rng, t_rng = source.spawn(3)
        counts = core.arrival_process.sample(a_rng, horizon)
        core.harvest_process.sample(h_rng, horizon)
        sample_task_latents(t_rng, int(counts.sum()))

    draw_us = per_call_us(draws, 50, reps) / horizon
    both = 1e6 / (best + draw_us)
    return [
        ["`SyncVectorEnv`, N = 8 (`lrm/Critical-v0`)", f"{sync_rate:,.0f}", "1.00x"],
        [f"kernel alone, B = {b} (no resets)", f"{kernel_rate:,.0f}",
         f"{kernel_rate / sync_rate:.1f}x"],
        [f"kernel alone + the episode draws ({draw_us * 1e3:.0f} ns per env-step)",
         f"{both:,.0f}", f"{both / sync_rate:.1f}x"],
        ["goal: 100x", f"{100 * sync_rate:,.0f}", "100x"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timing rounds (default 5)")
    ap.add_argument("--steps", type=int, default=20000, help="steps per round (default 20000)")
    ap.add_argument("--ids", default=",".join(DEFAULT_IDS), help="comma-separated ids")
    args = ap.parse_args()
    if args.reps < 1 or args.steps < 1000:
        ap.error(f"--reps must be >= 1 and --steps >= 1000, got {args.reps} and {args.steps}")
    cart = gym.make("CartPole-v1")
    cart.action_space.seed(0)
    cartpole_us = stepping(cart, [cart.action_space.sample() for _ in range(1000)],
                           args.steps, args.reps)
    print(f"single env, CPU microseconds per step (CartPole-v1: {cartpole_us:.2f})\n")
    head = ["id", "gym.make step", "vs CartPole", "budget (goal)", "wrappers", "reset",
            "of it draws", "of it rest", "kernel call", "info", "obs copy",
            "rest of FleetEnv.step", "fixed"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for env_id in [x for x in args.ids.split(",") if x]:
        print("| " + " | ".join(budget_row(env_id, cartpole_us, args.steps, args.reps)) + " |")
    print("\nvector env (env-steps per second, CPU time)\n")
    print("| case | env-steps/s | vs SyncVectorEnv N = 8 |\n|---|---:|---:|")
    for row in vector_rows(args.reps):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
