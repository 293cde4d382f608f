"""Hindsight LP of an episode with deadlines, a queue and per-model throughput caps.

Used by :func:`agents.oracle.solve_episode` when the env's core has a queue
(``config.class_deadlines`` or ``config.model_tokens_per_slot``); the task-hull LP of
:mod:`agents.oracle.task_hulls` assumes every task is served in its arrival slot and ignores
caps, so it is no bound there. This policy is allowed hindsight, and says so: it reads every task's latent
draws (hence its tokens and correctness under every configuration) and the whole harvest.

Decision. Each task n (arrival slot s_n, class c_n, deadline slot e_n = min(s_n + d_c, T - 1),
as in ``envs.realistic``) is served once in some slot of [s_n, e_n] on some configuration, or
dropped (penalty ``w_dropped / lambda``, no energy).

Options. A configuration j runs on one model i(j) and either answers correctly (then its tokens
are the task's reasoning tokens on that model, the same for every budget that suffices) or not
(then its tokens are its budget). Per model the task keeps at most two options: the cheapest
failing configuration, and the correct one if any (else the dearest failing one). Every
configuration of model i is a convex combination of these two with the same tokens on model i,
hence the same energy, and at most the same value (a failing budget below the correct option's
tokens is dominated by mixing the cheapest failure and the success). So the reduction loses no
causal episode.

Aggregation (exact for the relaxation). Tasks of one arrival slot and class form a group g;
they share the window [s_g, e_g]. Instead of one variable per (task, option, serving slot), the
LP has per-task option weights y_nk (when served, on what) and per group, model and serving
slot the energy X_{g,i,tau} the group runs on model i in slot tau, with
sum_tau X_{g,i,tau} = sum_{n in g, k on i} e_nk y_nk. Any time-indexed fractional schedule
z_{n,k,tau} maps to (y, X); conversely (y, X) is realised by serving every task of g on model i
with the same time profile X_{g,i,tau} / sum_tau X_{g,i,tau}; both give the same per-slot
energy, tokens per model, value and drops. So this LP equals the time-indexed one while being
about W times smaller.

Linear program (energies in units of the reference demand D_ref per slot)::

    max  sum_nk (w_v v_nk + w_d) y_nk - w_d n - w_aux sum U - w_waste sum W - w_leftover L
    s.t. sum_{g,i} X_{g,i,t} + p_t + W_t - eta_d q_t - U_t = H_t - idle   (balance, per t)
         S_t = S_{t-1} + eta_c p_t - q_t,  0 <= S_t <= S_max                (store)
         sum_tau X_{g,i,tau} = sum_{n in g, k on i} e_nk y_nk               (per group, model)
         sum_g X_{g,i,t} <= cap_i * energy per token of i                    (caps, per t, i)
         sum_k y_nk <= 1 (1 - sum = dropped);  L >= S_T - S_0;  all >= 0

Relaxation (why it is an upper bound): every causal policy's episode (each task served whole,
in one slot of its window, on one configuration, within the caps by the simulator's prefix
rule, or dropped) is a feasible point with exactly its reward; the LP also allows fractional
tasks and time profiles, any admission order (not only earliest deadline first), voluntary
waste and auxiliary draw, and simultaneous charge and discharge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from agents.oracle.episode import QueuePlan, episode_latents
from agents.oracle.ledger import ledger_costs_and_bounds, store_rows
from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH
from envs.reward import reward_weights


@dataclass
class QueueOptions:
    """Options of every task of an episode with a queue.

    Attributes:
        slot, cls, deadline: Arrival slot, class and deadline slot of each task, shape (n,).
        group: Group (arrival slot, class) index of each task, shape (n,).
        task, model, config, kwh, correct: One entry per option (task index, model,
            a configuration realising it, energy [kWh], whether it answers correctly).
    """

    slot: np.ndarray
    cls: np.ndarray
    deadline: np.ndarray
    group: np.ndarray
    task: np.ndarray
    model: np.ndarray
    config: np.ndarray
    kwh: np.ndarray
    correct: np.ndarray


def queue_options(core: FleetCore, b: int = 0) -> QueueOptions:
    """Per-model option pairs of every task of copy ``b``'s episode (see the module docstring)."""
    slot, cls, steps, u_solve = episode_latents(core, b)
    n = slot.size
    deadlines = np.asarray(core.config.class_deadlines or (0,) * core.C, dtype=np.int64)
    deadline = np.minimum(slot + deadlines[cls], core.T - 1)
    tasks, models, configs, kwh, correct = [], [], [], [], []
    rows = np.arange(n)
    for i in range(core.M):
        js = np.flatnonzero(core.model_of == i)
        solv = u_solve < core.solvable[i, cls]
        step_tok = core.omega * steps[:, i]
        budgets = core.budget_of[js].astype(np.int64)  # (K,)
        fin = solv[:, None] & (step_tok[:, None] <= budgets[None, :])  # (n, K)
        tok = np.where(fin, step_tok[:, None], budgets[None, :])
        big = np.iinfo(np.int64).max
        fail_min_k = np.argmin(np.where(fin, big, tok), axis=1)
        fail_max_k = np.argmax(np.where(fin, -1, tok), axis=1)
        has_fail = ~fin.all(axis=1)
        has_ok = fin.any(axis=1)
        ok_k = np.argmax(fin, axis=1)  # first (smallest) sufficient budget
        second_k = np.where(has_ok, ok_k, fail_max_k)
        second_ok = has_ok
        # option A: cheapest failure (if any); option B: success, else dearest failure if it
        # differs from the cheapest one.
        use_b = has_ok | (has_fail & (tok[rows, fail_max_k] != tok[rows, fail_min_k]))
        for use, k, ok in ((has_fail, fail_min_k, np.zeros(n, dtype=bool)),
                           (use_b, second_k, second_ok)):
            idx = np.flatnonzero(use)
            tasks.append(idx)
            models.append(np.full(idx.size, i, dtype=np.int64))
            configs.append(js[k[idx]])
            kwh.append(core.j_per_token[i] * tok[idx, k[idx]] / J_PER_KWH)
            correct.append(ok[idx])
    group = slot * core.C + cls
    _, group = np.unique(group, return_inverse=True)
    return QueueOptions(slot=slot, cls=cls, deadline=deadline, group=group.reshape(-1),
                        task=np.concatenate(tasks), model=np.concatenate(models),
                        config=np.concatenate(configs), kwh=np.concatenate(kwh),
                        correct=np.concatenate(correct))


def solve_queue_lp(core: FleetCore, b: int = 0) -> dict:
    """Solve the queue LP of copy ``b``'s current episode (call right after its reset).

    Returns:
        A dict with ``reward`` (the bound), ledger totals, value and correct counts,
        trajectories and a :class:`QueuePlan` (keys as :class:`agents.oracle.OracleSolution`).
    """
    cfg = core.config
    T, C, M = core.T, core.C, core.M
    op = queue_options(core, b)
    n, nx = op.slot.size, op.task.size
    d_ref = core.ref_demand_kwh
    w = reward_weights(core)
    w_v, w_d = w["value_correct"], -w["dropped"]
    values = core.values[op.cls]
    harvest = core.harvest[b].copy()
    caps = np.asarray(cfg.model_tokens_per_slot or (math.inf,) * M, dtype=np.float64)

    # Windows: one X variable per (group, model, serving slot).
    n_g = int(op.group.max()) + 1 if n else 0
    g_slot = np.zeros(n_g, dtype=np.int64)
    g_end = np.zeros(n_g, dtype=np.int64)
    g_slot[op.group] = op.slot
    g_end[op.group] = op.deadline
    g_cls = np.zeros(n_g, dtype=np.int64)
    g_cls[op.group] = op.cls
    width = g_end - g_slot + 1
    x_g = np.repeat(np.arange(n_g), width)  # one entry per (group, slot)
    x_t = np.arange(x_g.size) - np.repeat(np.cumsum(width) - width, width) + g_slot[x_g]
    n_gt = x_g.size
    # X layout: model-major blocks of n_gt entries.
    nX = M * n_gt
    o_x = nx
    o_u, o_w, o_p, o_q, o_s = o_x + nX, o_x + nX + T, o_x + nX + 2 * T, o_x + nX + 3 * T, \
        o_x + nX + 4 * T
    o_l = o_x + nX + 5 * T
    n_var = o_l + 1
    t_idx = np.arange(T)
    eta_c, eta_d = float(cfg.charge_efficiency), float(cfg.discharge_efficiency)
    xm = np.repeat(np.arange(M), n_gt)  # model of each X
    xt = np.tile(x_t, M)
    xg = np.tile(x_g, M)
    # Equalities: balance (T), store (T), group-model conservation (n_g * M).
    r_bal = [xt, t_idx, t_idx, t_idx, t_idx]
    c_bal = [o_x + np.arange(nX), o_p + t_idx, o_w + t_idx, o_q + t_idx, o_u + t_idx]
    v_bal = [np.ones(nX), np.ones(T), np.ones(T), np.full(T, -eta_d), np.full(T, -1.0)]
    r_st, c_st, v_st = store_rows(T, o_p, o_q, o_s, eta_c)
    r_gm = [2 * T + xg * M + xm, 2 * T + op.group[op.task] * M + op.model]
    c_gm = [o_x + np.arange(nX), np.arange(nx)]
    v_gm = [np.ones(nX), -op.kwh / d_ref]
    a_eq = sparse.csr_matrix(
        (np.concatenate(v_bal + v_st + v_gm),
         (np.concatenate(r_bal + r_st + r_gm), np.concatenate(c_bal + c_st + c_gm))),
        shape=(2 * T + n_g * M, n_var))
    s0 = cfg.initial_storage_kwh / d_ref
    b_eq = np.concatenate([(harvest - core.idle_kwh) / d_ref, np.zeros(T), np.zeros(n_g * M)])
    b_eq[T] += s0
    # Inequalities: one per task (sum_k y <= 1), caps (finite only), leftover.
    capped = [m for m in range(M) if math.isfinite(caps[m])]
    r_ub = [op.task]
    c_ub = [np.arange(nx)]
    v_ub = [np.ones(nx)]
    b_ub = [np.ones(n)]
    for k, m in enumerate(capped):
        sel = np.flatnonzero(xm == m)
        r_ub.append(n + k * T + xt[sel])
        c_ub.append(o_x + sel)
        v_ub.append(np.ones(sel.size))
        b_ub.append(np.full(T, caps[m] * core.j_per_token[m] / J_PER_KWH / d_ref))
    row_l = n + len(capped) * T
    r_ub.append(np.array([row_l, row_l]))
    c_ub.append(np.array([o_s + T - 1, o_l]))
    v_ub.append(np.array([1.0, -1.0]))
    b_ub.append(np.array([s0]))
    a_ub = sparse.csr_matrix((np.concatenate(v_ub), (np.concatenate(r_ub), np.concatenate(c_ub))),
                             shape=(row_l + 1, n_var))
    c, bounds = ledger_costs_and_bounds(cfg, n_var, nx, o_u, o_w, o_l, o_s, T, d_ref)
    c[:nx] = -(w_v * values[op.task] * op.correct + w_d)
    res = linprog(c, A_ub=a_ub, b_ub=np.concatenate(b_ub), A_eq=a_eq, b_eq=b_eq,
                  bounds=bounds, method="highs")
    if res.status != 0:  # pragma: no cover - always feasible (drop everything, draw aux)
        raise RuntimeError(f"hindsight queue LP failed: {res.message}")
    z = res.x
    y = np.clip(z[:nx], 0.0, 1.0)
    X = np.clip(z[o_x:o_x + nX], 0.0, None).reshape(M, n_gt)
    served_task = np.zeros(n)
    np.add.at(served_task, op.task, y)
    correct = float(np.sum(y * op.correct))
    value = float(np.sum(y * op.correct * values[op.task]))
    dropped = float(n - served_task.sum())
    demand = np.full(T, core.idle_kwh)
    np.add.at(demand, x_t, X.sum(axis=0) * d_ref)
    reward = -float(res.fun) - w_d * n

    # Plan for the acting oracle: group time profiles (share of its energy per slot) applied to
    # its served count and option mix.
    g_energy = np.zeros(n_g)
    np.add.at(g_energy, x_g, X.sum(axis=0))
    share = np.divide(X.sum(axis=0), g_energy[x_g], out=np.zeros(n_gt), where=g_energy[x_g] > 0)
    g_served = np.zeros(n_g)
    np.add.at(g_served, op.group, served_task)
    served = np.zeros((T, C))
    np.add.at(served, (x_t, g_cls[x_g]), share * g_served[x_g])
    g_mix = np.zeros((n_g, cfg.n_configs))
    np.add.at(g_mix, (op.group[op.task], op.config), y)
    mixture = np.zeros((T, C, cfg.n_configs))
    np.add.at(mixture, (x_t, g_cls[x_g]), share[:, None] * g_mix[x_g])
    return {
        "reward": reward, "aux_kwh": float(z[o_u:o_u + T].sum()) * d_ref,
        "waste_kwh": float(z[o_w:o_w + T].sum()) * d_ref, "leftover_kwh": float(z[o_l]) * d_ref,
        "value_correct": value, "correct": correct, "arrived": int(n), "harvest_kwh": harvest,
        "demand_kwh": demand, "storage_kwh": z[o_s:o_s + T] * d_ref,
        "plan": QueuePlan(mixture=mixture, served=served, dropped=dropped)}
