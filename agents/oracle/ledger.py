"""The energy ledger shared by the hindsight LPs: store rows, ledger costs and bounds.

Energies are in units of the reference demand D_ref per slot. Every LP has, per slot t,
auxiliary draw U_t, waste W_t, charge p_t, discharge q_t and store level S_t, and one leftover
column L >= S_T - S_0::

    S_t = S_{t-1} + eta_c p_t - q_t,  0 <= S_t <= S_max        (store)
"""

from __future__ import annotations

import math

import numpy as np

from envs.config import FleetConfig


def store_rows(T: int, o_p: int, o_q: int | None, o_s: int, eta_c: float
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Rows T .. 2T-1 of the store: S_t - S_{t-1} - eta_c p_t + q_t = (S_0 if t == 0).

    Entries as (rows, cols, values) lists of arrays in the order S_t, S_{t-1}, p_t, q_t;
    ``o_q`` None leaves out the discharge column (a lossless store whose net charge ``p`` is
    one free column). The right-hand side (S_0 in row T) is the caller's.
    """
    t_idx = np.arange(T)
    rows = [T + t_idx, T + t_idx[1:], T + t_idx]
    cols = [o_s + t_idx, o_s + t_idx[:-1], o_p + t_idx]
    vals = [np.ones(T), -np.ones(T - 1), np.full(T, -eta_c)]
    if o_q is not None:
        rows.append(T + t_idx)
        cols.append(o_q + t_idx)
        vals.append(np.ones(T))
    return rows, cols, vals


def ledger_costs_and_bounds(cfg: FleetConfig, n_var: int, nx: int, o_u: int, o_w: int, o_l: int,
                            o_s: int, T: int, d_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Objective and bounds of the ledger part of a hindsight LP (every hindsight LP).

    Columns: ``nx`` task-option columns in [0, 1] first (their costs are left at 0 for the
    caller), then auxiliary ``o_u``, waste ``o_w`` (T each), the store ``o_s`` (T, capped at
    S_max / D_ref) and leftover ``o_l``; every other column in [0, inf).
    """
    c = np.zeros(n_var)
    c[o_u:o_u + T] = cfg.w_aux
    c[o_w:o_w + T] = cfg.w_waste
    c[o_l] = cfg.w_leftover
    bounds = np.zeros((n_var, 2))
    bounds[:, 1] = np.inf
    bounds[:nx, 1] = 1.0
    if math.isfinite(cfg.storage_kwh):
        bounds[o_s:o_s + T, 1] = cfg.storage_kwh / d_ref
    return c, bounds
