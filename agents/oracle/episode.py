"""What a hindsight oracle reads of an episode, and the solution it returns.

The oracle is allowed hindsight, and says so: it reads the core's hidden arrays of the
current episode (arrivals, harvest, and every task's latent draws, hence its outcome under
every configuration, thanks to common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH


def episode_latents(core: FleetCore, b: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every task of copy ``b``'s episode, in slot order: (arrival slot, class, step count
    under each model (n, M), solvability quantile), read from the core's hindsight arrays."""
    cls_all = core.cls[b]
    slot, pos = np.nonzero(cls_all < core.C)
    cls = cls_all[slot, pos].astype(np.intp)
    steps = core.steps[b][slot, pos].astype(np.int64)
    return slot, cls, steps, core.u_solve[b][slot, pos]



@dataclass
class EpisodeTasks:
    """Every task of an episode with the vertices of its (energy, correct) hull.

    Attributes:
        slot: Arrival slot of each task, shape (n,).
        cls: Class of each task, shape (n,).
        option_j: Configuration of each hull vertex, shape (n, 4): cheapest failing, dearest
            failing, cheapest correct, dearest correct; -1 where the task has no such option.
        option_kwh: Energy of each vertex [kWh], shape (n, 4) (inf where absent).
        option_correct: Whether each vertex answers correctly, shape (n, 4).
        cheap: Column of the cheapest option overall, shape (n,).
    """

    slot: np.ndarray
    cls: np.ndarray
    option_j: np.ndarray
    option_kwh: np.ndarray
    option_correct: np.ndarray
    cheap: np.ndarray


def episode_tasks(core: FleetCore, b: int = 0) -> EpisodeTasks:
    """Outcome of every task of copy ``b``'s episode under every configuration, reduced to the
    vertices of its (energy, correct) hull (reads the core's hindsight arrays)."""
    slot, cls, steps, u_solve = episode_latents(core, b)
    n = slot.size
    energy = np.empty((n, core.J))
    correct = np.empty((n, core.J), dtype=bool)
    for j in range(core.J):
        i = int(core.model_of[j])
        budget = int(core.budget_of[j])
        solv = u_solve < core.solvable[i, cls]
        step_tok = core.omega * steps[:, i]
        fin = solv & (step_tok <= budget)
        tokens = np.where(fin, step_tok, budget)
        energy[:, j] = core.j_per_token[i] * tokens / J_PER_KWH
        correct[:, j] = fin
    rows = np.arange(n)
    option_j = np.full((n, 4), -1, dtype=np.int64)
    option_kwh = np.full((n, 4), np.inf)
    option_correct = np.zeros((n, 4), dtype=bool)
    for col, (want, pick) in enumerate([(False, np.argmin), (False, np.argmax),
                                        (True, np.argmin), (True, np.argmax)]):
        ok = correct == want
        fill = np.inf if pick is np.argmin else -np.inf
        j = pick(np.where(ok, energy, fill), axis=1)
        has = ok[rows, j]
        option_j[:, col] = np.where(has, j, -1)
        option_kwh[:, col] = np.where(has, energy[rows, j], np.inf)
        option_correct[:, col] = want
    cheap = np.argmin(option_kwh, axis=1)
    return EpisodeTasks(slot=slot, cls=cls, option_j=option_j, option_kwh=option_kwh,
                        option_correct=option_correct, cheap=cheap)


@dataclass
class QueuePlan:
    """Per-slot dispatch plan of the queue LP's optimum (for the acting oracle).

    Attributes:
        mixture: Planned configuration weights of the tasks served in each slot, per class,
            shape (T, C, J) (rows of unserved classes are zero).
        served: Planned number of tasks of each class served in each slot, shape (T, C).
        dropped: Planned (fractional) number of dropped tasks of the episode.
    """

    mixture: np.ndarray
    served: np.ndarray
    dropped: float


@dataclass
class OracleSolution:
    """Optimum of the hindsight LP of one episode.

    Attributes:
        reward: Optimal objective: the upper bound on any causal policy's return.
        aux_kwh, waste_kwh, leftover_kwh: Ledger totals of the optimum [kWh].
        value_correct: Value of the (fractionally) correct answers.
        correct: Tasks answered correctly (fractional count).
        arrived: Tasks that arrived.
        harvest_kwh, demand_kwh, storage_kwh: Per-slot trajectories, shape (T,) [kWh].
        weights: LP weight of each task's hull vertex, shape (n, 4), rows summing to 1
            (None on envs with a queue).
        tasks: The episode's tasks (None on envs with a queue).
        plan: Per-slot plan of the queue LP (envs with a queue only, else None).
    """

    reward: float
    aux_kwh: float
    waste_kwh: float
    leftover_kwh: float
    value_correct: float
    correct: float
    arrived: int
    harvest_kwh: np.ndarray
    demand_kwh: np.ndarray
    storage_kwh: np.ndarray
    weights: np.ndarray | None
    tasks: EpisodeTasks | None
    plan: QueuePlan | None = None
