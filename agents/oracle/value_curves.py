"""Exact hindsight bound for envs without a queue, through per-slot value curves.

Same relaxation as :mod:`agents.oracle.task_hulls` (each task a convex combination of the
vertices of its (energy, correct) hull; the same ledger of auxiliary draw, waste, store,
efficiencies and leftover), hence the same optimum, from a much smaller linear program.

Reduction. Without a queue, the tasks of slot t meet the rest of the episode only through the
slot's demand D_t. A task's upper hull, from its cheapest option to its dearest, has at most
three segments (energy increment, value increment): "up" from the cheapest failing to the
cheapest correct option (when failing is cheaper), "flat" along the correct options (or along
the failing ones for a task that cannot succeed) and "down" from the dearest correct to the
dearest failing option, when that one is dearer. The best value of slot t at demand D, V_t(D), is the upper envelope of
the Minkowski sum of its tasks' hulls: a concave piecewise-linear function whose pieces are the
tasks' segments taken in decreasing order of slope. The LP therefore needs one bounded
variable x_k in [0, len_k] per segment (pieces of equal slope in a slot merged) and no
per-task row: for a fixed total, maximising sum slope_k x_k fills the steepest pieces first.

Pruning (exact). The shadow price mu_t of demand in slot t lies in [-w_waste, w_aux] (per
reference demand D_ref): extra demand can always be met by auxiliary energy, less demand can
always be wasted. A piece whose value per D_ref exceeds w_aux is full in every optimum (moved
into the slot's fixed demand); one below -w_waste is empty in every optimum (dropped).

Linear program (energies in units of D_ref)::

    max  w_v sum_k s_k x_k - w_aux sum U_t - w_waste sum W_t - w_leftover L
    s.t. sum_{k in t} x_k + p_t + W_t - eta_d q_t - U_t = H_t - base_t        (balance)
         S_t = S_{t-1} + eta_c p_t - q_t,  0 <= S_t <= S_max                  (store)
         0 <= x_k <= len_k;  L >= S_T - S_0,  L >= 0;  U, W, p, q >= 0

base_t is the idle energy, the start (cheapest) point of every task and the full pieces. With
a lossless store (eta_c = eta_d = 1) p_t - q_t is one free column. Solved by HiGHS's dual
simplex without presolve (the fastest option measured here).

Use. :func:`agents.oracle.episode_bounds` takes this LP wherever :func:`applies` (no queue,
deadlines or throughput caps), else the task-hull or queue LP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from agents.oracle.episode import episode_tasks
from agents.oracle.ledger import store_rows
from envs.dynamics import FleetCore
from envs.reward import reward_weights

try:  # HiGHS bindings bundled with SciPy (>= 1.15); linprog is the fallback
    import scipy.optimize._highspy._core as _hc
    _hc._Highs, _hc.HighsOptions, _hc.MatrixFormat, _hc.ObjSense, _hc.HighsVarType  # noqa: B018
except (ImportError, AttributeError):  # pragma: no cover - older SciPy
    _hc = None


def _solve_core(c: np.ndarray, a_eq: sparse.csc_matrix, b_eq: np.ndarray, lb: np.ndarray,
                ub: np.ndarray) -> tuple[np.ndarray, float]:
    """min c.x s.t. a_eq x = b_eq, lb <= x <= ub, by HiGHS's dual simplex, without presolve.

    Calls the HiGHS bindings shipped with SciPy directly: ``linprog`` spends as long as the
    solve itself in a Python loop over the columns (bound multipliers, unused here).
    """
    highs = _hc._Highs()
    options = _hc.HighsOptions()
    options.presolve = "off"
    options.solver = "simplex"
    options.simplex_strategy = 1  # dual
    options.output_flag = False
    highs.passOptions(options)
    # The array form of passModel (the HighsLp attributes convert element by element).
    m, n = a_eq.shape
    status = highs.passModel(
        n, m, a_eq.nnz, int(_hc.MatrixFormat.kColwise), int(_hc.ObjSense.kMinimize), 0.0, c,
        lb, ub, b_eq, b_eq, a_eq.indptr.astype(np.int32, copy=False),
        a_eq.indices.astype(np.int32, copy=False), a_eq.data,
        np.full(n, int(_hc.HighsVarType.kContinuous), dtype=np.int32))
    if status == _hc.HighsStatus.kError:  # pragma: no cover
        raise RuntimeError("reduced hindsight LP rejected by HiGHS")
    highs.run()
    if highs.getModelStatus() != _hc.HighsModelStatus.kOptimal:  # pragma: no cover
        raise RuntimeError("reduced hindsight LP failed: "
                           f"{highs.modelStatusToString(highs.getModelStatus())}")
    x = np.array(highs.getSolution().col_value)
    return x, float(highs.getInfo().objective_function_value)


def _solve_linprog(c: np.ndarray, a_eq: sparse.csc_matrix, b_eq: np.ndarray, lb: np.ndarray,
                   ub: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`_solve_core` through ``scipy.optimize.linprog`` (any SciPy >= 1.10)."""
    res = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=np.column_stack([lb, ub]),
                  method="highs-ds", options={"presolve": False})
    if res.status != 0:  # pragma: no cover - always feasible (U absorbs any deficit)
        raise RuntimeError(f"reduced hindsight LP failed: {res.message}")
    return res.x, float(res.fun)


#: The LP solver used: direct HiGHS bindings when this SciPy has them, else ``linprog``.
solve_lp = _solve_core if _hc is not None else _solve_linprog


def applies(core: FleetCore) -> bool:
    """True if the per-slot reduction is exact for the core's config (no queue, no caps)."""
    cfg = core.config
    return not (cfg.queue_enabled or cfg.class_deadlines
                or any(math.isfinite(x) for x in cfg.model_tokens_per_slot))


def _segments(core: FleetCore, b: int) -> dict[str, Any]:
    """Start point and upper-hull pieces of every task of copy ``b``'s episode.

    Returns:
        ``slot``, ``cls`` of each task (n,), ``start_kwh`` [kWh], ``start_correct`` (n,), and
        the pieces as flat arrays: ``seg_slot``, ``seg_kwh`` (length [kWh], > 0),
        ``seg_value`` (value increment), ``seg_correct`` (correct increment: +1, 0 or -1).
    """
    tasks = episode_tasks(core, b)
    values = core.values[tasks.cls].astype(np.float64)
    f0, f1, c0, c1 = (tasks.option_kwh[:, k] for k in range(4))
    has_f, has_c = np.isfinite(f0), np.isfinite(c0)
    start_correct = has_c & (c0 <= f0)
    start_kwh = np.minimum(f0, c0)
    both = has_f & has_c
    up = both & (f0 < c0)
    flat_lo, flat_hi = np.where(has_c, c0, f0), np.where(has_c, c1, f1)
    flat = flat_hi > flat_lo
    down = both & (f1 > c1)
    zeros = np.zeros_like(values)
    masks = (up, flat, down)
    lengths = (c0 - f0, flat_hi - flat_lo, f1 - c1)
    dval = (values, zeros, -values)
    dcorr = (1.0, 0.0, -1.0)
    return {
        "slot": tasks.slot, "cls": tasks.cls, "start_kwh": start_kwh,
        "start_correct": start_correct, "values": values,
        "seg_slot": np.concatenate([tasks.slot[m] for m in masks]),
        "seg_kwh": np.concatenate([ln[m] for ln, m in zip(lengths, masks)]),
        "seg_value": np.concatenate([v[m] for v, m in zip(dval, masks)]),
        "seg_correct": np.concatenate([np.full(int(m.sum()), d) for d, m in zip(dcorr, masks)]),
    }


def solve_value_curves(core: FleetCore, b: int = 0) -> dict[str, Any] | None:
    """Solve the reduced hindsight LP of copy ``b``'s current episode (call after its reset).

    Args:
        core: The env's simulator core.
        b: Copy index.

    Returns:
        ``None`` if the config has a queue, deadlines or throughput caps (use
        :func:`agents.oracle.solve_episode`); else a dict with ``reward`` (the bound),
        ledger totals ``aux_kwh``, ``waste_kwh``, ``leftover_kwh`` [kWh], ``value_correct``,
        ``correct`` (fractional count), ``arrived``, per-slot ``harvest_kwh``, ``demand_kwh``,
        ``storage_kwh`` [kWh] and ``n_pieces`` (LP variables for the tasks).
    """
    if not applies(core):
        return None
    cfg = core.config
    T = core.T
    d_ref = core.ref_demand_kwh
    w_v = reward_weights(core)["value_correct"]
    seg = _segments(core, b)
    s_slot, s_kwh = seg["seg_slot"], seg["seg_kwh"]
    s_val, s_cor = seg["seg_value"], seg["seg_correct"]
    # Objective value of a piece per D_ref of energy.
    slope = w_v * s_val / (s_kwh / d_ref)
    full = slope > cfg.w_aux
    keep = ~full & (slope >= -cfg.w_waste)
    base = np.full(T, core.idle_kwh)
    base += np.bincount(seg["slot"], weights=seg["start_kwh"], minlength=T)
    base += np.bincount(s_slot[full], weights=s_kwh[full], minlength=T)
    fixed_value = float(np.sum(seg["values"][seg["start_correct"]]) + np.sum(s_val[full]))
    fixed_correct = float(np.sum(seg["start_correct"]) + np.sum(s_cor[full]))
    # Merge pieces of equal slope within a slot (sorted by slot, then decreasing slope).
    s_slot, s_kwh, s_val, s_cor, slope = (a[keep] for a in (s_slot, s_kwh, s_val, s_cor, slope))
    order = np.lexsort((-slope, s_slot))
    s_slot, s_kwh, s_val, s_cor, slope = (a[order] for a in (s_slot, s_kwh, s_val, s_cor, slope))
    new = np.ones(s_slot.size, dtype=bool)
    new[1:] = (s_slot[1:] != s_slot[:-1]) | (slope[1:] != slope[:-1])
    starts = np.flatnonzero(new)
    g_slot = s_slot[starts]
    if starts.size:
        g_kwh = np.add.reduceat(s_kwh, starts)
        g_val = np.add.reduceat(s_val, starts)
        g_cor = np.add.reduceat(s_cor, starts)
    else:
        g_kwh = g_val = g_cor = np.zeros(0)
    nx = g_slot.size

    # Variable layout: x (nx) | U (T) | W (T) | p (T) | q (nq) | S (T) | L (1) | M (1). With
    # lossless storage (eta_c = eta_d = 1) p is the free net charge and q is absent (nq = 0).
    eta_c, eta_d = float(cfg.charge_efficiency), float(cfg.discharge_efficiency)
    lossless = eta_c == 1.0 and eta_d == 1.0
    nq = 0 if lossless else T
    o_u, o_w, o_p, o_q = nx, nx + T, nx + 2 * T, nx + 3 * T
    o_s = o_q + nq
    o_l = o_s + T
    n_var = o_l + 2
    t_idx = np.arange(T)
    # Balance rows 0..T-1, then the store rows T..2T-1.
    rows = [g_slot, t_idx, t_idx, t_idx]
    cols = [np.arange(nx), o_p + t_idx, o_w + t_idx, o_u + t_idx]
    vals = [np.ones(nx), np.ones(T), np.ones(T), np.full(T, -1.0)]
    if nq:
        rows.append(t_idx)
        cols.append(o_q + t_idx)
        vals.append(np.full(T, -eta_d))
    st_rows, st_cols, st_vals = store_rows(T, o_p, o_q if nq else None, o_s, eta_c)
    rows += st_rows
    cols += st_cols
    vals += st_vals
    # Leftover row 2T: S_T - L + M = S_0 with a slack M >= 0 (L >= S_T - S_0, no A_ub).
    rows += [np.array([2 * T, 2 * T, 2 * T])]
    cols += [np.array([o_s + T - 1, o_l, o_l + 1])]
    vals += [np.array([1.0, -1.0, 1.0])]
    a_eq = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(2 * T + 1, n_var))
    harvest = np.asarray(core.harvest[b], dtype=np.float64).copy()
    s0 = cfg.initial_storage_kwh / d_ref
    b_eq = np.concatenate([(harvest - base) / d_ref, np.zeros(T), [s0]])
    b_eq[T] += s0
    c = np.zeros(n_var)
    g_len = g_kwh / d_ref
    c[:nx] = -w_v * g_val / g_len  # value per D_ref of each merged piece
    c[o_u:o_u + T] = cfg.w_aux
    c[o_w:o_w + T] = cfg.w_waste
    c[o_l] = cfg.w_leftover
    bounds = np.zeros((n_var, 2))
    bounds[:, 1] = np.inf
    bounds[:nx, 1] = g_len
    if lossless:
        bounds[o_p:o_p + T, 0] = -np.inf
    if math.isfinite(cfg.storage_kwh):
        bounds[o_s:o_s + T, 1] = cfg.storage_kwh / d_ref
    z, fun = solve_lp(c, a_eq, b_eq, bounds[:, 0], bounds[:, 1])
    frac = np.clip(z[:nx] / g_len, 0.0, 1.0) if nx else np.zeros(0)
    demand = base.copy()
    demand += np.bincount(g_slot, weights=frac * g_kwh, minlength=T)
    n = int(seg["slot"].size)
    return {
        "reward": w_v * fixed_value - fun,
        "aux_kwh": float(z[o_u:o_u + T].sum()) * d_ref,
        "waste_kwh": float(z[o_w:o_w + T].sum()) * d_ref,
        "leftover_kwh": float(z[o_l]) * d_ref,
        "value_correct": fixed_value + float(frac @ g_val),
        "correct": fixed_correct + float(frac @ g_cor),
        "arrived": n, "harvest_kwh": harvest, "demand_kwh": demand,
        "storage_kwh": z[o_s:o_s + T] * d_ref, "n_pieces": nx,
    }


def value_curve_bound(core: FleetCore, b: int = 0) -> float | None:
    """The hindsight bound of copy ``b``'s current episode, or ``None`` with a queue."""
    sol = solve_value_curves(core, b)
    return None if sol is None else sol["reward"]
