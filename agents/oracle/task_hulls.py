"""Hindsight LP over the tasks' (energy, correct) hulls: the bound of envs without a queue.

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

The value-curve LP of :mod:`agents.oracle.value_curves` has the same optimum from a much
smaller program; this one also gives each task's weights (the acting oracle's plan).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from agents.oracle.episode import OracleSolution, episode_tasks
from agents.oracle.ledger import ledger_costs_and_bounds, store_rows
from envs.dynamics import FleetCore
from envs.reward import reward_weights


def solve_task_hulls(core: FleetCore, b: int = 0) -> OracleSolution:
    """Solve the task-hull LP of copy ``b``'s current episode (call right after its reset; envs
    without a queue)."""
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
    # Store rows T..2T-1.
    st_rows, st_cols, st_vals = store_rows(T, o_p, o_q, o_s, eta_c)
    rows += st_rows
    cols += st_cols
    vals += st_vals
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
