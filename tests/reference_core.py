"""A plain numpy statement of the simulator's slot step and observation, for tests only.

The readable specification the compiled kernel (:mod:`envs.kernel`) is checked against, bit
for bit: :func:`reference_step` advances a :class:`~envs.dynamics.FleetCore`'s state with
whole-array numpy operations (no loop over copies or tasks), :func:`reference_observe` builds
the paper features from that state and :func:`reference_observe_v1` the ``-v1`` features. Per slot and copy (MODEL.md section 4)::

    y   = S_{t-1} + H_t - D_t
    U_t = max(0, -y)                 auxiliary energy covers the shortfall
    W_t = max(0, y - S_max)          baseline energy that cannot be stored is wasted
    S_t = min(S_max, max(0, y))

(with charge/discharge efficiencies below 1, the conversion losses are reported apart).
"""

from __future__ import annotations

import math

import numpy as np

from envs.dynamics import FleetCore, SlotResult
from envs.observation import DAY_SLOTS, TREND_WEIGHT, v1_static
from envs.outcomes import J_PER_KWH


def thresholds(w: np.ndarray) -> np.ndarray:
    """Assignment thresholds of weight rows w (R, J), shape (R, J - 1), float64: the running
    sums of each row, left to right, divided by its total."""
    J = w.shape[1]
    cum = np.empty((J, w.shape[0]))
    cum[0] = w[:, 0]
    for q in range(1, J):
        cum[q] = cum[q - 1] + w[:, q]
    return (cum[:J - 1] / cum[J - 1]).T


def ledger(core: FleetCore, s: np.ndarray, h: np.ndarray, d: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Energy balance of one slot; returns (aux, waste, loss, new storage) [kWh]."""
    s_max, eta_c, eta_d = core.s_max, core.eta_c, core.eta_d
    if eta_c == 1.0 and eta_d == 1.0:
        y = s + h - d
        aux = np.maximum(0.0, -y)
        waste = np.maximum(0.0, y - s_max)
        storage = np.minimum(s_max, np.maximum(0.0, y))
        return aux, waste, np.zeros_like(y), storage
    net = h - d
    surplus = np.maximum(net, 0.0)
    deficit = np.maximum(-net, 0.0)
    charged_in = np.minimum(surplus, (s_max - s) / eta_c)
    stored = charged_in * eta_c
    waste = surplus - charged_in
    delivered = np.minimum(deficit, s * eta_d)
    drawn = delivered / eta_d
    aux = deficit - delivered
    storage = np.minimum(s_max, np.maximum(0.0, s + stored - drawn))
    loss = (charged_in - stored) + (drawn - delivered)
    return aux, waste, loss, storage


def _sum_columns(x: np.ndarray) -> np.ndarray:
    """Row sums of a (B, K) array added column by column, from the first column."""
    total = x[:, 0].copy()
    for k in range(1, x.shape[1]):
        total = total + x[:, k]
    return total


def reference_step(core: FleetCore, mixtures: np.ndarray | None = None,
                   configs: np.ndarray | None = None) -> SlotResult:
    """``FleetCore.step`` in numpy: the same results, and the same update of the core's state."""
    B, C, J, M, T = core.B, core.C, core.J, core.M, core.T
    rows, t = np.arange(B), core.t.copy()
    if np.any(t >= T):
        raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
    n_now = core.n_slot[rows, t]
    harvest = core.harvest[rows, t].copy()
    # Every task of the slot, copy after copy: (copy, position) pairs.
    copy_of = np.repeat(rows, n_now)
    pos = np.arange(copy_of.size) - np.repeat(np.cumsum(n_now) - n_now, n_now)
    slot = t[copy_of]
    cls = core.cls[copy_of, slot, pos].astype(np.intp)
    if configs is not None:
        j = np.asarray(configs, dtype=np.intp)[copy_of]
    else:
        thr = thresholds(np.asarray(mixtures, dtype=np.float64).reshape(B * C, J))
        u = core.u_assign[copy_of, slot, pos].astype(np.float64)
        j = (u[:, None] >= thr[copy_of * C + cls]).sum(axis=1)
    i = core.model_of[j]
    budget = core.budget_of[j]
    k = core.steps[copy_of, slot, pos, i].astype(np.int64)
    step_tok = k * core.omega
    solvable = core.u_solve[copy_of, slot, pos].astype(np.float64) < core.solvable[i, cls]
    correct = solvable & (step_tok <= budget)
    tokens = np.where(correct, step_tok, budget)
    tokens_by_model = np.zeros((B, M), dtype=np.int64)
    np.add.at(tokens_by_model, (copy_of, i), tokens)
    correct_by_class = np.zeros((B, C), dtype=np.int64)
    np.add.at(correct_by_class, (copy_of, cls), correct.astype(np.int64))
    energy_j = _sum_columns(tokens_by_model * core.j_per_token)
    demand = core.idle_kwh + energy_j / J_PER_KWH
    value = _sum_columns(correct_by_class * core.values)
    aux, waste, loss, storage = ledger(core, core.storage.copy(), harvest, demand)
    core.storage = storage
    core.last_harvest = harvest
    core.last_demand = demand
    core.last_aux = aux
    core.last_waste = waste
    net = (harvest - demand) / core.ref_demand_kwh
    t1 = t + 1
    delta = net - core.net_mean
    core.net_mean = core.net_mean + delta / t1
    core.net_m2 = core.net_m2 + delta * (net - core.net_mean)
    # -v1 harvest trend: running average of the change of harvest_last / mean harvest.
    h_n = harvest / max(core.harvest_process.mean_kwh, 1e-12 * core.ref_demand_kwh)
    core.harvest_trend = ((1.0 - TREND_WEIGHT) * core.harvest_trend
                          + TREND_WEIGHT * (h_n - core.harvest_prev))
    core.harvest_prev = h_n
    core.t[:] = t1
    return SlotResult(
        harvest_kwh=harvest, demand_kwh=demand, aux_kwh=aux, waste_kwh=waste, loss_kwh=loss,
        storage_kwh=storage, arrived=n_now.copy(), served=n_now.copy(),
        correct=correct_by_class.sum(axis=1), dropped=np.zeros(B, dtype=np.int64),
        value_correct=value, correct_by_class=correct_by_class,
        tokens_by_model=tokens_by_model)


def reference_observe(core: FleetCore) -> np.ndarray:
    """The paper features (0 .. 9 + C) of every copy, shape (B, 10 + C), float32."""
    cfg = core.config
    d_ref = core.ref_demand_kwh
    out = np.empty((core.B, 10 + core.C), dtype=np.float32)
    s = core.storage
    if math.isinf(cfg.storage_kwh):
        out[:, 0] = s / (s + 12.0 * d_ref)
    elif cfg.storage_kwh > 0:
        out[:, 0] = s / cfg.storage_kwh
    else:
        out[:, 0] = 0.0
    out[:, 1] = core.last_harvest / max(core.harvest_process.mean_kwh, 1e-12 * d_ref)
    out[:, 2] = core.last_demand / d_ref
    out[:, 3] = core.last_aux / d_ref
    out[:, 4] = core.last_waste / d_ref
    rates = cfg.arrival_rate * np.asarray(cfg.class_shares, dtype=np.float64)
    inv_rates = np.where(rates > 0, 1.0 / np.maximum(rates, 1e-300), 0.0)
    n_c = core.C
    out[:, 5:5 + n_c] = core.current_arrivals() * inv_rates
    start = cfg.trace_start_hour * 60.0 / cfg.slot_minutes
    phase = 2.0 * math.pi * (core.t + start) / (24.0 * 60.0 / cfg.slot_minutes)
    out[:, 5 + n_c] = np.sin(phase)
    out[:, 6 + n_c] = np.cos(phase)
    out[:, 7 + n_c] = core.t / core.T
    out[:, 8 + n_c] = core.net_mean
    out[:, 9 + n_c] = core.net_std()
    return out


def reference_observe_v1(core: FleetCore) -> np.ndarray:
    """The ``-v1`` features (``envs.observation.V1_FEATURES``) of every copy, shape (B, 9),
    float32: store_log, the config's six (``envs.observation.v1_static``), slots_left and the
    harvest trend of the state (zero at reset)."""
    out = np.empty((core.B, 9), dtype=np.float32)
    out[:, 0] = np.log1p(core.storage * (1.0 / core.ref_demand_kwh))
    out[:, 1:7] = np.asarray(v1_static(core))
    out[:, 7] = (core.T - core.t) / DAY_SLOTS
    out[:, 8] = core.harvest_trend
    return out


def reference_leftover_and_reward(core: FleetCore, res: SlotResult
                                  ) -> tuple[np.ndarray, np.ndarray]:
    """``leftover_kwh`` term and reward of every copy after :func:`reference_step`."""
    from envs.reward import combine, reward_terms, reward_weights

    terms = reward_terms(core, res, core.t >= core.T)
    return terms["leftover_kwh"], combine(reward_weights(core), terms)
