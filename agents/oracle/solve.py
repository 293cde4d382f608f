"""The one entry point of the hindsight bound: the LP that fits the config, per episode.

* no queue, deadlines or throughput caps: the value-curve LP
  (:mod:`agents.oracle.value_curves`) for the bound, the task-hull LP
  (:mod:`agents.oracle.task_hulls`, same optimum) where a plan per task is needed;
* a queue (deadlines or caps): the queue LP (:mod:`agents.oracle.queue_lp`).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym

from agents.oracle import value_curves
from agents.oracle.episode import OracleSolution
from agents.oracle.queue_lp import solve_queue_lp
from agents.oracle.task_hulls import solve_task_hulls
from envs.dynamics import FleetCore


def solve_episode(core: FleetCore, b: int = 0) -> OracleSolution:
    """Solve the hindsight LP of copy ``b``'s current episode (call right after its reset),
    with a plan per task or slot: the queue LP on envs with a queue (tasks may wait until
    their deadline or be dropped; caps hold), else the task-hull LP."""
    if getattr(core, "queued", False):
        return OracleSolution(**solve_queue_lp(core, b), weights=None, tasks=None)
    return solve_task_hulls(core, b)


def bound_row(sol: OracleSolution | dict[str, Any], record: bool = False) -> dict[str, Any]:
    """An episode's row of the bound: the totals an evaluation reports for a policy's episode
    (with ``record``, also the per-slot ``harvest``, ``demand`` and ``storage`` [kWh])."""
    get = sol.get if isinstance(sol, dict) else sol.__getattribute__
    arrived = get("arrived")
    out: dict[str, Any] = {
        "reward": get("reward"), "aux_kwh": get("aux_kwh"), "waste_kwh": get("waste_kwh"),
        "leftover_kwh": get("leftover_kwh"), "value_correct": get("value_correct"),
        "harvest_kwh": float(get("harvest_kwh").sum()),
        "demand_kwh": float(get("demand_kwh").sum()),
        "correct": get("correct"), "arrived": arrived,
        "accuracy": get("correct") / arrived if arrived else math.nan}
    if record:
        out.update(harvest=get("harvest_kwh"), demand=get("demand_kwh"),
                   storage=get("storage_kwh"))
    return out


def episode_bound(env: gym.Env, seed: int, record: bool = False) -> dict[str, Any]:
    """:func:`bound_row` of the episode ``seed`` of ``env`` (reset here), from the LP that
    fits its config."""
    env.reset(seed=seed)
    core = env.unwrapped.core
    if value_curves.applies(core):
        return bound_row(value_curves.solve_value_curves(core, 0), record)
    return bound_row(solve_episode(core, 0), record)


def episode_bounds(core: FleetCore, env: gym.Env, seeds: list[int], record_first: bool = False,
                   progress: Any = None) -> list[dict[str, Any]]:
    """:func:`bound_row` of every episode of a batched core right after its reset with
    ``seeds`` (copy b holds exactly the episode of a single env reset with ``seeds[b]``).

    Where the value-curve LP applies it reads each copy of ``core``; otherwise each episode is
    solved in ``env``, reset with its seed.

    Args:
        core: The batched core of a vector env, every copy freshly reset with ``seeds``.
        env: A single env of the same id and overrides.
        seeds: The reset seeds, one per copy.
        record_first: Also return the first episode's per-slot trajectories.
        progress: Object with ``update(n)`` (a tqdm bar), told after each episode.
    """
    rows = []
    fits = value_curves.applies(core)
    for b, seed in enumerate(seeds):
        rec = record_first and b == 0
        if fits:
            rows.append(bound_row(value_curves.solve_value_curves(core, b), rec))
        else:
            env.reset(seed=seed)
            rows.append(bound_row(solve_episode(env.unwrapped.core, 0), rec))
        if progress is not None:
            progress.update(1)
    return rows
