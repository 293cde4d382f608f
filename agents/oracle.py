"""Hindsight oracle: the best dispatch of a whole episode, known in advance, as a linear program.

This policy is allowed hindsight, and says so: it reads the environment's episode (arrivals,
harvest, and every task's latent draws, hence its outcome under every configuration, thanks to
common random numbers). No causal policy can do better on the same seed.

Reduction. Reward depends on a task only through its energy and whether it is answered
correctly (its value); energy is not only a cost (it can also use harvest that would be left
over). In the (energy, correct) plane a task's configurations lie on two lines (correct = 0 or
1), so the convex hull of its options has at most four vertices: the cheapest and the dearest
configuration that fail, and the cheapest and the dearest that succeed. Each task gets one
variable y_nk in [0, 1] per vertex k other than its cheapest configuration, with
sum_k y_nk <= 1 (the rest stays on the cheapest).

Linear program (energies in units of the reference demand D_ref per slot)::

    max  w_v * sum_nk dval_nk y_nk - w_aux sum U_t - w_waste sum W_t - w_leftover L
    s.t. sum_{n in t, k} de_nk y_nk + p_t + W_t - eta_d q_t - U_t = H_t - base_t  (balance)
         S_t = S_{t-1} + eta_c p_t - q_t,  0 <= S_t <= S_max                     (store)
         sum_k y_nk <= 1;  L >= S_T - S_0,  L >= 0;  y >= 0; U, W, p, q >= 0

base_t is the idle energy plus the cheapest option of every task of slot t; de and dval are an
option's extra energy and extra value over the cheapest.

Relaxation (why it is an upper bound): every causal policy's episode (integral assignment of
each task to one configuration, and the simulator's ledger) is a feasible point of this LP
with exactly its reward (a task sent to configuration j is a point of its hull); the LP
additionally allows fractional tasks (convex combinations of configurations), voluntary waste,
voluntary auxiliary draw and simultaneous charge and discharge. Its optimum is therefore at
least the reward of every causal policy on the same episode.

Queues. On envs with deadlines or throughput caps :func:`solve_episode` solves the queue LP of
:mod:`agents.oracle_queue` instead (tasks may wait until their deadline or be dropped; caps
hold); the reduction above does not apply there.

Realisation. ``evaluate.py`` reports the LP optimum (the bound) for ``oracle``. The
:class:`HindsightOracle` can also act (``predict``): in each slot it sends class c to the
configurations the LP chose for that slot's class-c tasks in proportion; the simulator then
assigns tasks to configurations by their own random quantiles, so the realised reward is
below the bound. Only the bound is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from agents.oracle_queue import (
    QueuePlan,
    episode_latents,
    ledger_costs_and_bounds,
    solve_queue_lp,
)
from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH
from envs.realistic import queued_action
from envs.reward import reward_weights
from envs.spaces import serve_action


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


def solve_episode(core: FleetCore, b: int = 0) -> OracleSolution:
    """Solve the hindsight LP of copy ``b``'s current episode (call right after its reset).

    On envs with a queue (deadlines or throughput caps) this is the queue LP of
    :mod:`agents.oracle_queue` (tasks may wait until their deadline or be dropped; caps hold).
    """
    if getattr(core, "queued", False):
        return OracleSolution(**solve_queue_lp(core, b), weights=None, tasks=None)
    cfg = core.config
    T = core.T
    tasks = episode_tasks(core, b)
    n = tasks.slot.size
    rows_n = np.arange(n)
    d_ref = core.ref_demand_kwh
    w_v = reward_weights(core)["value_correct"]
    values = core.values[tasks.cls]
    cheap_kwh = tasks.option_kwh[rows_n, tasks.cheap]
    cheap_ok = tasks.option_correct[rows_n, tasks.cheap]
    # Extra options: present, not the cheapest column, and not identical to the cheapest.
    extra = np.isfinite(tasks.option_kwh)
    extra[rows_n, tasks.cheap] = False
    extra &= ~((tasks.option_kwh == cheap_kwh[:, None])
               & (tasks.option_correct == cheap_ok[:, None]))
    task_of, col_of = np.nonzero(extra)
    nx = task_of.size
    de = (tasks.option_kwh[task_of, col_of] - cheap_kwh[task_of]) / d_ref
    dval = values[task_of] * (tasks.option_correct[task_of, col_of].astype(np.float64)
                              - cheap_ok[task_of])
    base = np.full(T, core.idle_kwh)
    np.add.at(base, tasks.slot, cheap_kwh)
    harvest = core.harvest[b].copy()
    fixed_value = float(np.sum(values[cheap_ok]))

    # Variable layout: y (nx) | U (T) | W (T) | p (T) | q (T) | S (T) | L (1)
    o_u, o_w, o_p, o_q, o_s = nx, nx + T, nx + 2 * T, nx + 3 * T, nx + 4 * T
    o_l = nx + 5 * T
    n_var = o_l + 1
    t_idx = np.arange(T)
    eta_c, eta_d = float(cfg.charge_efficiency), float(cfg.discharge_efficiency)
    # Energy balance rows 0..T-1.
    rows = [tasks.slot[task_of], t_idx, t_idx, t_idx, t_idx]
    cols = [np.arange(nx), o_p + t_idx, o_w + t_idx, o_q + t_idx, o_u + t_idx]
    vals = [de, np.ones(T), np.ones(T), np.full(T, -eta_d), np.full(T, -1.0)]
    # Store rows T..2T-1: S_t - S_{t-1} - eta_c p_t + q_t = (S_0 if t == 0).
    rows += [T + t_idx, T + t_idx[1:], T + t_idx, T + t_idx]
    cols += [o_s + t_idx, o_s + t_idx[:-1], o_p + t_idx, o_q + t_idx]
    vals += [np.ones(T), -np.ones(T - 1), np.full(T, -eta_c), np.ones(T)]
    a_eq = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(2 * T, n_var))
    s0 = cfg.initial_storage_kwh / d_ref
    b_eq = np.concatenate([(harvest - base) / d_ref, np.zeros(T)])
    b_eq[T] += s0
    # Inequalities: sum_k y_nk <= 1 per task with options (rows 0..n-1), S_T - L <= S_0.
    a_ub = sparse.csr_matrix(
        (np.concatenate([np.ones(nx), [1.0, -1.0]]),
         (np.concatenate([task_of, [n, n]]), np.concatenate([np.arange(nx), [o_s + T - 1, o_l]]))),
        shape=(n + 1, n_var))
    b_ub = np.concatenate([np.ones(n), [s0]])
    c, bounds = ledger_costs_and_bounds(cfg, n_var, nx, o_u, o_w, o_l, o_s, T, d_ref)
    c[:nx] = -w_v * dval
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                  method="highs")
    if res.status != 0:  # pragma: no cover - always feasible (U absorbs any deficit)
        raise RuntimeError(f"hindsight LP failed: {res.message}")
    z = res.x
    y = np.clip(z[:nx], 0.0, 1.0)
    weights = np.zeros((n, 4))
    weights[task_of, col_of] = y
    weights[rows_n, tasks.cheap] += np.clip(1.0 - weights.sum(axis=1), 0.0, 1.0)
    correct = float(np.sum(weights * tasks.option_correct))
    value = float(np.sum(values[:, None] * weights * tasks.option_correct))
    demand = np.full(T, core.idle_kwh)
    np.add.at(demand, tasks.slot, np.sum(weights * np.where(np.isfinite(tasks.option_kwh),
                                                            tasks.option_kwh, 0.0), axis=1))
    reward = w_v * fixed_value - float(res.fun)
    return OracleSolution(
        reward=reward, aux_kwh=float(z[o_u:o_u + T].sum()) * d_ref,
        waste_kwh=float(z[o_w:o_w + T].sum()) * d_ref, leftover_kwh=float(z[o_l]) * d_ref,
        value_correct=value, correct=correct, arrived=int(n), harvest_kwh=harvest,
        demand_kwh=demand, storage_kwh=z[o_s:o_s + T] * d_ref, weights=weights, tasks=tasks)


class HindsightOracle:
    """The hindsight oracle as a policy (it reads the env's hidden episode: a bound, not a rival).

    Call :meth:`plan` after ``env.reset`` (``predict`` does it at ``episode_start`` or when the
    episode changed). ``solution.reward`` is the upper bound; ``predict`` realises the plan
    approximately (see the module docstring).

    Args:
        env: The environment (any wrapper of a ``FleetEnv``; the oracle reads its core).
        seed: Seed of the generator used to draw a configuration per slot (discrete actions).
    """

    name = "oracle"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.config = env.unwrapped.config
        self.rng = np.random.default_rng(seed)
        self.solution: OracleSolution | None = None
        self._key: bytes | None = None
        self._mix: np.ndarray | None = None
        self._served: np.ndarray | None = None

    def seed(self, seed: int | None) -> None:
        """Reseed the policy's generator."""
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the plan (a new one is made at the next ``predict``)."""
        self.solution = None

    def plan(self) -> OracleSolution:
        """Solve the LP of the env's current episode."""
        core = self.env.unwrapped.core
        self.solution = solve_episode(core, 0)
        self._key = core.harvest[0].tobytes()
        sol, cfg = self.solution, self.config
        if sol.plan is not None:  # queue LP: planned mixture and service counts per slot
            mix = sol.plan.mixture
            self._served = sol.plan.served
        else:
            mix = np.zeros((cfg.horizon, cfg.n_classes, cfg.n_configs))
            tk = sol.tasks
            for col in range(4):
                has = tk.option_j[:, col] >= 0
                np.add.at(mix, (tk.slot[has], tk.cls[has], tk.option_j[has, col]),
                          sol.weights[has, col])
        tot = mix.sum(axis=-1, keepdims=True)
        self._mix = np.where(tot > 0, mix / np.maximum(tot, 1e-300), 1.0 / cfg.n_configs)
        return self.solution

    def predict(self, observation: np.ndarray, state: object = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, object]:
        """Action realising the plan in the env's current slot (unbatched observations only)."""
        core = self.env.unwrapped.core
        if (self.solution is None or (episode_start is not None and np.any(episode_start))
                or self._key != core.harvest[0].tobytes()):
            self.plan()
        t = min(int(core.t[0]), self.config.horizon - 1)
        mix = self._mix[t]
        defer = None
        if self.solution.plan is not None:  # keep waiting what the plan serves later
            pending = core.queue_len[0] + core.arrivals[0, t]
            planned = self._served[t]
            defer = np.where(pending > 0, np.clip(1.0 - planned / np.maximum(pending, 1), 0, 1),
                             0.0)
        if self.config.action_type == "discrete":
            w = self.config.class_shares @ mix
            j = int(self.rng.choice(self.config.n_configs, p=w / w.sum()))
            if defer is not None and float(self.config.class_shares @ defer) > 0.5:
                j += self.config.n_configs
            return np.int64(j), state
        if defer is not None:
            return queued_action(mix, defer), state
        return serve_action(self.config, mix), state
