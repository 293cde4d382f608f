"""Hindsight oracle: the best dispatch of a whole episode, known in advance, as a linear program.

The oracle is allowed hindsight, and says so: it reads the environment's hidden episode. No
causal policy can do better on the same seed, so its optimum is reported as an upper bound
(``oracle`` in ``evaluate.py``), not as a rival.

Modules, named by method:

* :mod:`~agents.oracle.episode`: what the oracle reads of an episode (each task's outcome
  under every configuration) and the :class:`OracleSolution` it returns;
* :mod:`~agents.oracle.ledger`: the energy ledger every LP shares (store rows, costs, bounds);
* :mod:`~agents.oracle.task_hulls`: one variable per vertex of each task's (energy, correct)
  hull (envs without a queue);
* :mod:`~agents.oracle.value_curves`: the same optimum through per-slot value curves, a much
  smaller LP (envs without a queue);
* :mod:`~agents.oracle.queue_lp`: deadlines, a queue and throughput caps;
* :mod:`~agents.oracle.solve`: the entry point that picks the LP for the config;
* :mod:`~agents.oracle.policy`: :class:`HindsightOracle`, the plan as a policy.
"""

from __future__ import annotations

from agents.oracle.episode import EpisodeTasks, OracleSolution, QueuePlan, episode_tasks
from agents.oracle.policy import HindsightOracle
from agents.oracle.solve import bound_row, episode_bound, episode_bounds, solve_episode

__all__ = ["EpisodeTasks", "HindsightOracle", "OracleSolution", "QueuePlan", "bound_row",
           "episode_bound", "episode_bounds", "episode_tasks", "solve_episode"]
