"""Compiled kernel of the simulator core: the slot step of every copy and the episode fill.

``numba.njit(cache=True)`` loops over copies, called by :class:`envs.dynamics.FleetCore` for
any number of copies B (a single env is B = 1). The arithmetic follows the order of the
model's definition so that results do not depend on B: token sums are integers, float terms
are added in a fixed order (models, then classes, from index 0), and ``np.maximum(a, b)`` /
``np.minimum(a, b)`` are written as ``a if a > b else b`` / ``a if a < b else b`` (numpy's
semantics, signed zeros included). Random draws stay with numpy's generators (the core makes
them); the kernel only transforms them.

Arguments are packed to keep the cost of a call low: the constants of a config in one int64
and one float64 array (layout: :func:`pack_params`), the per-copy float state in one (7, B)
array (rows :data:`STATE_ROWS`), results in one (B, :data:`N_RES_F`) float64 and one
(B, :data:`N_RES_I` + C + M) int64 array. (Views of one byte buffer instead of separate
arrays cost as much: numba's view and reshape take about the time of unboxing an argument.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit

from envs.bound import SLOT, pointer

#: Rows of the packed float state, shape (9, B): the ledger's, then the ``-v1`` harvest
#: trend's (``harvest_prev``: harvest_last / mean harvest at the last slot; ``harvest_trend``).
STATE_ROWS = ("storage", "last_harvest", "last_demand", "last_aux", "last_waste", "net_mean",
              "net_m2", "harvest_prev", "harvest_trend")

# Packed integer parameters: scalars, then model_of (J), budget_of (J), class_skills (C).
# I_V1: features of the -v1 observation at the end of the vector (0 or 9).
I_C, I_J, I_M, I_T, I_OMEGA, I_STORE_MODE, I_LOSSLESS, I_DIM, I_V1 = range(9)
N_I_SCALARS = 9
# Packed float parameters: scalars, then solvability (M C, model-major), J/token (M),
# class values (C), 1 / class rate (C), sin and cos of the time of day (T + 1 each), the
# config's -v1 features (N_V1_STATIC: capacity_log .. arrival_rate_log).
(F_IDLE, F_SMAX, F_ETA_C, F_ETA_D, F_DREF, F_HREF, F_SREF, F_JKWH, F_S0, F_W_VALUE, F_W_AUX,
 F_W_WASTE, F_W_LEFT, F_W_DROP, F_INV_DREF) = range(15)
N_F_SCALARS = 15
N_V1_STATIC = 6
#: Weight of the newest change in the ``-v1`` ``harvest_trend`` and the ``slots_left`` unit
#: (``envs.observation.TREND_WEIGHT``, ``DAY_SLOTS``).
TREND_WEIGHT = 0.3
DAY_SLOTS = 288.0

#: Columns of the float results: the slot's ledger [kWh], value of the correct answers,
#: the ``leftover_kwh`` reward term and the reward (then 2 J scratch columns of the step).
RES_F = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
         "value_correct", "leftover_kwh", "reward")
N_RES_F = len(RES_F)
#: Columns of the integer results (``queued``: tasks waiting after the slot, 0 without a
#: queue), then correct answers per class (C) and tokens per model (M).
RES_I = ("arrived", "served", "correct", "dropped", "t", "truncated", "queued")
N_RES_I = len(RES_I)

#: Step modes: mixture weights (B, C, J) given; raw continuous actions (B, C J) in [-1, 1]
#: (validated, weight a + 1, a class of all -1 uniform); one configuration per copy (B,).
MODE_WEIGHTS, MODE_ACTION, MODE_CONFIG = 0, 1, 2
#: Return codes of :func:`step`.
OK, BAD_ACTION, ENDED = 0, 1, 2


def pack_params(config, model_of, budget_of, solvable, j_per_token, values, idle_kwh,
                ref_demand_kwh, h_ref, s_ref, inv_rates, weights, time_sin, time_cos,
                store_mode, dim, j_per_kwh, v1_static=()):  # noqa: ANN001 - plain values
    """The (int64, float64) parameter arrays of a config (layout in the module constants);
    ``v1_static``: the config's -v1 features (none for a -v0 observation)."""
    cfg = config
    C, J, M = cfg.n_classes, cfg.n_configs, cfg.n_models
    lossless = cfg.charge_efficiency == 1.0 and cfg.discharge_efficiency == 1.0
    ip = np.concatenate([
        np.array([C, J, M, cfg.horizon, cfg.step_tokens, store_mode, int(lossless), dim,
                  N_V1_STATIC + 3 if len(v1_static) else 0], dtype=np.int64),
        np.asarray(model_of, dtype=np.int64), np.asarray(budget_of, dtype=np.int64),
        np.asarray(cfg.class_skills, dtype=np.int64)])
    scalars = np.array([idle_kwh, cfg.storage_kwh, cfg.charge_efficiency,
                        cfg.discharge_efficiency, ref_demand_kwh, h_ref, s_ref, j_per_kwh,
                        cfg.initial_storage_kwh, weights["value_correct"], weights["aux_kwh"],
                        weights["waste_kwh"], weights["leftover_kwh"], weights["dropped"],
                        1.0 / ref_demand_kwh], dtype=np.float64)
    fp = np.concatenate([scalars, np.asarray(solvable, dtype=np.float64).ravel(),
                         np.asarray(j_per_token, dtype=np.float64),
                         np.asarray(values, dtype=np.float64),
                         np.asarray(inv_rates, dtype=np.float64),
                         np.asarray(time_sin, dtype=np.float64),
                         np.asarray(time_cos, dtype=np.float64),
                         np.zeros(N_V1_STATIC) if not len(v1_static)
                         else np.asarray(v1_static, dtype=np.float64)])
    return ip, fp


@njit(cache=True)
def _max(a, b):  # np.maximum(a, b) for non-NaN floats
    return a if a > b else b


@njit(cache=True)
def _min(a, b):  # np.minimum(a, b) for non-NaN floats
    return a if a < b else b


@njit(cache=True)
def ledger(s, h, d, s_max, eta_c, eta_d, lossless):
    """Energy balance of one slot (MODEL.md section 4): (aux, waste, loss, new storage)."""
    if lossless:
        y = s + h - d
        return _max(0.0, -y), _max(0.0, y - s_max), 0.0, _min(s_max, _max(0.0, y))
    net = h - d
    surplus = _max(net, 0.0)
    deficit = _max(-net, 0.0)
    # Charging: eta_c of the surplus reaches the store, up to its free room.
    charged_in = _min(surplus, (s_max - s) / eta_c)  # energy taken from the surplus
    stored = charged_in * eta_c
    waste = surplus - charged_in
    # Discharging: the store delivers eta_d of what it gives up.
    delivered = _min(deficit, s * eta_d)
    drawn = delivered / eta_d
    aux = deficit - delivered
    storage = _min(s_max, _max(0.0, s + stored - drawn))
    loss = (charged_in - stored) + (drawn - delivered)
    return aux, waste, loss, storage


@njit(cache=True)
def _close(b, h, d, fs, t, fp, lossless):
    """Ledger, running statistics of (H - D) / D_ref, harvest trend and clock of copy b;
    returns the ledger."""
    aux, waste, loss, storage = ledger(fs[0, b], h, d, fp[F_SMAX], fp[F_ETA_C], fp[F_ETA_D],
                                       lossless)
    fs[0, b] = storage
    fs[1, b] = h
    fs[2, b] = d
    fs[3, b] = aux
    fs[4, b] = waste
    net = (h - d) / fp[F_DREF]
    t1 = t[b] + 1
    mean = fs[5, b]
    delta = net - mean
    mean = mean + delta / float(t1)
    fs[5, b] = mean
    fs[6, b] = fs[6, b] + delta * (net - mean)
    h_n = h / fp[F_HREF]
    fs[8, b] = (1.0 - TREND_WEIGHT) * fs[8, b] + TREND_WEIGHT * (h_n - fs[7, b])
    fs[7, b] = h_n
    t[b] = t1
    return aux, waste, loss, storage


@njit(cache=True)
def _observe(b, ip, fp, fs, t, arrivals, forecast, obs):
    """Observation of copy b (``envs.spaces.observation_names``): features 0 .. 9 + C, the
    forecast (``forecast`` (B, T, F) at the slot) and the -v1 features; not the queue
    lengths (``envs.kernel_queue``)."""
    C, J, M, T = ip[I_C], ip[I_J], ip[I_M], ip[I_T]
    s = fs[0, b]
    mode = ip[I_STORE_MODE]
    if mode == 2:
        obs[b, 0] = s / (s + fp[F_SREF])
    elif mode == 1:
        obs[b, 0] = s / fp[F_SMAX]
    else:
        obs[b, 0] = 0.0
    d_ref = fp[F_DREF]
    obs[b, 1] = fs[1, b] / fp[F_HREF]
    obs[b, 2] = fs[2, b] / d_ref
    obs[b, 3] = fs[3, b] / d_ref
    obs[b, 4] = fs[4, b] / d_ref
    tb = t[b]
    ta = tb if tb < T - 1 else T - 1
    o_rates = N_F_SCALARS + M * C + M + C
    for c in range(C):
        obs[b, 5 + c] = float(arrivals[b, ta, c]) * fp[o_rates + c]
    o_sin = o_rates + C
    obs[b, 5 + C] = fp[o_sin + tb]
    obs[b, 6 + C] = fp[o_sin + T + 1 + tb]
    obs[b, 7 + C] = float(tb) / float(T)
    obs[b, 8 + C] = fs[5, b]
    n = float(tb if tb > 1 else 1)
    obs[b, 9 + C] = math.sqrt(_max(fs[6, b] / n, 0.0))
    n_v1 = ip[I_V1]
    n_f = forecast.shape[2]
    o = obs.shape[1] - n_v1 - n_f
    for h in range(n_f):
        obs[b, o + h] = forecast[b, ta, h]
    if n_v1:
        o = obs.shape[1] - n_v1
        obs[b, o] = np.log1p(s * fp[F_INV_DREF])
        o_v1 = o_sin + 2 * (T + 1)
        for k in range(N_V1_STATIC):
            obs[b, o + 1 + k] = fp[o_v1 + k]
        obs[b, o + 1 + N_V1_STATIC] = float(T - tb) / DAY_SLOTS
        obs[b, o + 2 + N_V1_STATIC] = fs[8, b]


@njit(cache=True)
def observe(ip, fp, fs, t, arrivals, forecast, obs):
    """Observation of every copy into obs (B, dim), float32 (:func:`_observe`)."""
    for b in range(t.size):
        _observe(b, ip, fp, fs, t, arrivals, forecast, obs)


@njit(cache=True)
def step(ip, fp, fs, t, harvest, arrivals, us, ua, steps, mode, act, configs, res_f, res_i,
         forecast, obs):
    """Advance every copy by one slot; returns :data:`OK`, or :data:`BAD_ACTION` /
    :data:`ENDED` before any change.

    Args:
        ip, fp: Packed parameters (:func:`pack_params`).
        fs: Float state (9, B) (:data:`STATE_ROWS`); t: slots elapsed (B,), int64.
        harvest: (B, T) [kWh]; arrivals: (B, T, C) [tasks].
        us, ua: Solvability and assignment quantiles, (T, B, A) float32; steps: (T, B, A, M).
        mode: :data:`MODE_WEIGHTS` (act: weights, each row with a positive sum),
            :data:`MODE_ACTION` (act (B, C J) in [-1, 1]), both with act flat, shape (B C J,);
            or :data:`MODE_CONFIG` (configs (B,), int64).
        res_f, res_i: Results per copy (:data:`RES_F`, then 2 J scratch columns; :data:`RES_I`,
            then correct per class, tokens per model).
        forecast: (B, T, F) forecast features; obs: (B, dim) float32: the observation after
            the slot (:func:`_observe`).
    """
    C, J, M, T = ip[I_C], ip[I_J], ip[I_M], ip[I_T]
    omega = ip[I_OMEGA]
    B = t.size
    for b in range(B):
        if t[b] >= T:
            return ENDED
    if mode == MODE_ACTION:
        for b in range(B):
            for q in range(C * J):
                x = float(act[b * C * J + q])
                if not abs(x) <= 1.0:  # also NaN
                    return BAD_ACTION
    lossless = ip[I_LOSSLESS] != 0
    o_model, o_budget = N_I_SCALARS, N_I_SCALARS + J
    o_solv = N_F_SCALARS
    o_jpt = o_solv + M * C
    o_val = o_jpt + M
    for b in range(B):
        t0 = t[b]
        # Sums per class and model accumulate in the copy's result row; weights and
        # thresholds of a class use the row's scratch columns (no allocation).
        cor = res_i[b, N_RES_I:N_RES_I + C]
        tok = res_i[b, N_RES_I + C:N_RES_I + C + M]
        w = res_f[b, N_RES_F:N_RES_F + J]
        thr = res_f[b, N_RES_F + J:N_RES_F + 2 * J - 1]
        for c in range(C):
            cor[c] = 0
        for m in range(M):
            tok[m] = 0
        p = 0
        for c in range(C):
            n_c = arrivals[b, t0, c]
            if n_c == 0:
                continue
            if mode != MODE_CONFIG:
                # Thresholds of the class's row: running sums left to right over the total.
                base = (b * C + c) * J
                if mode == MODE_ACTION:
                    top = 0.0
                    for q in range(J):
                        w[q] = float(act[base + q]) + 1.0
                        top = _max(w[q], top)
                    if top <= 0.0:  # every entry -1: equal weights
                        for q in range(J):
                            w[q] = 1.0
                else:
                    for q in range(J):
                        w[q] = act[base + q]
                cum = w[0]
                for q in range(1, J):
                    thr[q - 1] = cum
                    cum = cum + w[q]
                for q in range(J - 1):
                    thr[q] = thr[q] / cum
            solv_c = o_solv + c
            for _ in range(n_c):
                if mode == MODE_CONFIG:
                    j = configs[b]
                else:
                    u = float(ua[t0, b, p])
                    j = 0
                    for q in range(J - 1):  # thresholds <= u (branch-free count)
                        j += np.int64(u >= thr[q])
                i = ip[o_model + j]
                budget = ip[o_budget + j]
                step_tok = np.int64(steps[t0, b, p, i]) * omega
                ok = np.int64(float(us[t0, b, p]) < fp[solv_c + i * C]) \
                    & np.int64(step_tok <= budget)
                tok[i] += budget + ok * (step_tok - budget)
                cor[c] += ok
                p += 1
        # Sums over models and classes in index order (as a loop from the first term).
        energy = float(tok[0]) * fp[o_jpt]
        for m in range(1, M):
            energy = energy + float(tok[m]) * fp[o_jpt + m]
        demand = fp[F_IDLE] + energy / fp[F_JKWH]
        value = float(cor[0]) * fp[o_val]
        n_cor = cor[0]
        for c in range(1, C):
            value = value + float(cor[c]) * fp[o_val + c]
            n_cor += cor[c]
        h = harvest[b, t0]
        aux, waste, loss, storage = _close(b, h, demand, fs, t, fp, lossless)
        truncated = t[b] >= T
        leftover = _max(0.0, storage - fp[F_S0]) if truncated else 0.0
        _write_slot(b, fp, h, demand, aux, waste, loss, storage, value, leftover, truncated,
                    t[b], p, p, n_cor, 0, 0, res_f, res_i)
        _observe(b, ip, fp, fs, t, arrivals, forecast, obs)
    return OK


#: Arrays of a core's kernel table (``envs.bound.table``), in order (:func:`bound_arrays`).
BOUND = ("ip", "fp", "fs", "t", "harvest", "arrivals", "us", "ua", "steps", "configs", "res_f",
         "res_i", "obs", "forecast")


@njit(cache=True)
def bound_arrays(tab):
    """The arrays of a kernel table (:data:`BOUND`) but ``steps`` (whose item size picks
    :func:`step_bound16` or :func:`step_bound32`), in order."""
    ip = carray(pointer(tab[0]), (tab[1],), np.int64)
    fp = carray(pointer(tab[5]), (tab[6],), np.float64)
    fs = carray(pointer(tab[10]), (tab[11], tab[12]), np.float64)
    t = carray(pointer(tab[15]), (tab[16],), np.int64)
    harvest = carray(pointer(tab[20]), (tab[21], tab[22]), np.float64)
    arrivals = carray(pointer(tab[25]), (tab[26], tab[27], tab[28]), np.int64)
    us = carray(pointer(tab[30]), (tab[31], tab[32], tab[33]), np.float32)
    ua = carray(pointer(tab[35]), (tab[36], tab[37], tab[38]), np.float32)
    configs = carray(pointer(tab[45]), (tab[46],), np.int64)
    res_f = carray(pointer(tab[50]), (tab[51], tab[52]), np.float64)
    res_i = carray(pointer(tab[55]), (tab[56], tab[57]), np.int64)
    obs = carray(pointer(tab[60]), (tab[61], tab[62]), np.float32)
    forecast = carray(pointer(tab[65]), (tab[66], tab[67], tab[68]), np.float64)
    return ip, fp, fs, t, harvest, arrivals, us, ua, configs, res_f, res_i, obs, forecast


@njit(cache=True)
def step_bound16(tab, mode, act):
    """:func:`step` with the arrays of a core bound in ``tab`` (:data:`BOUND`; int16 step
    counts): one call unboxes two arrays instead of sixteen. Returns the status and copy 0's
    results as one tuple (:func:`_result_of_one`): a single env reads its slot from it."""
    ip, fp, fs, t, harvest, arrivals, us, ua, configs, res_f, res_i, obs, forecast = \
        bound_arrays(tab)
    steps = carray(pointer(tab[40]), (tab[41], tab[42], tab[43], tab[44]), np.int16)
    status = step(ip, fp, fs, t, harvest, arrivals, us, ua, steps, mode, act, configs, res_f,
                  res_i, forecast, obs)
    return _result_of_one(status, res_f, res_i)


@njit(cache=True)
def step_bound32(tab, mode, act):
    """:func:`step_bound16` for int32 step counts (a separate function: a process compiles
    only the one its cores use)."""
    ip, fp, fs, t, harvest, arrivals, us, ua, configs, res_f, res_i, obs, forecast = \
        bound_arrays(tab)
    steps = carray(pointer(tab[40]), (tab[41], tab[42], tab[43], tab[44]), np.int32)
    status = step(ip, fp, fs, t, harvest, arrivals, us, ua, steps, mode, act, configs, res_f,
                  res_i, forecast, obs)
    return _result_of_one(status, res_f, res_i)


@njit(cache=True)
def _result_of_one(status, res_f, res_i):
    """(status, copy 0's :data:`RES_F` columns, its :data:`RES_I` columns) as one tuple."""
    return (status, res_f[0, 0], res_f[0, 1], res_f[0, 2], res_f[0, 3], res_f[0, 4],
            res_f[0, 5], res_f[0, 6], res_f[0, 7], res_f[0, 8], res_i[0, 0], res_i[0, 1],
            res_i[0, 2], res_i[0, 3], res_i[0, 4], res_i[0, 5], res_i[0, 6])


@njit(cache=True)
def _write_slot(b, fp, h, demand, aux, waste, loss, storage, value, leftover, truncated, t_b,
                arrived, served, correct, dropped, queued, res_f, res_i):
    """Copy b's reward (the weighted terms in the order of ``envs.reward.REWARD_TERMS``) and
    its result rows (columns :data:`RES_F`, :data:`RES_I`); for both kernels' slot steps."""
    reward = 0.0 + fp[F_W_VALUE] * value
    reward = reward + fp[F_W_AUX] * aux
    reward = reward + fp[F_W_WASTE] * waste
    reward = reward + fp[F_W_LEFT] * leftover
    reward = reward + fp[F_W_DROP] * np.float64(dropped)
    res_f[b, 0] = h
    res_f[b, 1] = demand
    res_f[b, 2] = aux
    res_f[b, 3] = waste
    res_f[b, 4] = loss
    res_f[b, 5] = storage
    res_f[b, 6] = value
    res_f[b, 7] = leftover
    res_f[b, 8] = reward
    res_i[b, 0] = arrived
    res_i[b, 1] = served
    res_i[b, 2] = correct
    res_i[b, 3] = dropped
    res_i[b, 4] = t_b
    res_i[b, 5] = 1 if truncated else 0
    res_i[b, 6] = queued


@njit(cache=True)
def start_episodes(ip, fp, copies, counts, draws_h, lat, cls, us, ua, steps, k0, cdf_at, cdf,
                   cdf_off, arrivals, n_slot, harvest, t, fs, forecast, obs):
    """Start a new episode in each of copies ``copies`` (R,) from its draws; returns 0, or
    (nothing written) the most tasks of one slot if the task buffers hold fewer: the caller
    grows them and calls again.

    Copy ``copies[r]`` gets arrivals ``counts[r]`` (T, C) and harvest ``draws_h[r]`` (T,)
    [kWh] in the core's buffers, an empty ledger, the store at S_0, the clock at 0 and its
    observation. Its tasks, in arrival order (slot, then class), are the next rows of ``lat``
    (step-count, solvability and assignment quantiles, float32; copies in order); they go into
    the slot-major task buffers (T, B, A[, M]) slot by slot (the writes of one slot are close
    together). Step count under model i: ``m_c + searchsorted(cdf[i][c], u, side="left")``,
    by the guide tables (``FleetCore._build_guides``: ``k0 + (cdf_at < u)``, or a binary
    search in the bins marked NaN).
    """
    C, M, T = ip[I_C], ip[I_M], ip[I_T]
    R = copies.size
    A = cls.shape[2]
    most = 0
    for r in range(R):
        for s in range(T):
            n = 0
            for c in range(C):
                n += counts[r, s, c]
            most = n if n > most else most
    if most > A:
        return most
    next_task = np.empty(R, dtype=np.int64)
    k = 0
    for r in range(R):
        next_task[r] = k
        b = copies[r]
        for s in range(T):
            n = 0
            for c in range(C):
                arrivals[b, s, c] = counts[r, s, c]
                n += counts[r, s, c]
            n_slot[b, s] = n
            harvest[b, s] = draws_h[r, s]
            k += n
        t[b] = 0
        for q in range(fs.shape[0]):
            fs[q, b] = 0.0
        fs[0, b] = fp[F_S0]
        _observe(b, ip, fp, fs, t, arrivals, forecast, obs)
    G = k0.shape[1] // C
    o_skill = N_I_SCALARS + 2 * ip[I_J]
    g_scale = np.float32(G)
    for s in range(T):
        for r in range(copies.size):
            b = copies[r]
            k = next_task[r]
            p = 0
            for c in range(C):
                for _ in range(counts[r, s, c]):
                    u = lat[k, 0]
                    g = c * G + int(u * g_scale)
                    for i in range(M):
                        at = cdf_at[i, g]
                        if at != at:  # NaN: a bin holding several CDF entries
                            lo = cdf_off[i * C + c]
                            hi = cdf_off[i * C + c + 1]
                            steps[s, b, p, i] = ip[o_skill + c] + np.searchsorted(
                                cdf[lo:hi], np.float64(u))
                        else:  # branch-free: the comparison is a coin flip
                            steps[s, b, p, i] = k0[i, g] + np.int64(at < u)
                    cls[s, b, p] = c
                    us[s, b, p] = lat[k, 1]
                    ua[s, b, p] = lat[k, 2]
                    p += 1
                    k += 1
            next_task[r] = k
            for q in range(p, A):
                cls[s, b, q] = C
    return 0
