"""Compiled slot step of the queue rules (deadlines, deferral, throughput caps) for every copy.

One numba function, :func:`queue_step`, runs one slot of the rules of ``envs.realistic`` (see
its module docstring) for each copy of a ``RealisticCore``, as a loop over copies: pending
tasks, deferral of the newest non-due tasks, each task's configuration, outcome and tokens,
earliest-deadline-first admission under the caps, drops, the served/dropped flags, the queue
lengths and the per-copy sums the slot's ledger needs. It also decodes the env's raw actions
(continuous queue actions with their defer weights, discrete actions in [0, 2J)), so a step is
one call for B = 1 as for B = 1024. It then closes each copy's slot with the core kernel's
own functions (``envs.kernel``: the ledger, running statistics and clock of
``envs.kernel._close``, the observation features of ``FleetCore.observe``) and writes the queue
features, so that a single env's step is one call.

Every float operation is the one of the numpy expressions the rules were first written in, in
the same order (the trajectories of every id are recorded bit for bit in
``tests/fixtures/trajectory_hashes.json``): token sums are exact integers; the demand adds
``j_per_token[m] * tokens[m]`` over m in order to 0.0, then ``idle + energy / J_PER_KWH``; the
value adds ``values[c] * correct[c]`` over c in order to 0.0; a task of assignment quantile u
(float32, compared as float64) goes to the number of running sums of its class's mixture that
are <= u; a continuous action's row sums are numpy's pairwise sums (:func:`pairwise_sum`).

Arguments are few and packed (numba's dispatch costs per argument): the queue constants of a
core in one array (:func:`pack_constants`), the defer fractions (if any) after the actions;
results go to the core's result rows ``res_f`` and ``res_i`` in the layout of ``envs.kernel``
(so ``FleetCore.result`` reads them as for any other id; the bound entries also return copy
0's as one tuple, for ``info.slot_result``). The step's
scratch space is one array the core keeps (:func:`scratch_size`): a step allocates nothing.
"""

from __future__ import annotations

import numba
import numpy as np

from envs.bound import pointer
from envs.kernel import (
    F_S0,
    I_LOSSLESS,
    N_F_SCALARS,
    N_RES_I,
    _close,
    _observe,
    _result_of_one,
    _write_slot,
    bound_arrays,
)
from envs.outcomes import J_PER_KWH

#: How :func:`queue_step` reads its action argument ``act``.
#: ``act`` is float64, or float32 for BOX (each dtype compiles the function once more; integer
#: actions are passed as float64, which holds them exactly).
MIXTURES = 0  # (B*C*J,): non-negative mixture weights per copy and class
CONFIGS = 1  # (B,): one configuration per copy, an integer in [0, J)
BOX = 2  # (B*C*(J+1),): raw continuous queue actions in [-1, 1]
DISCRETE = 3  # (B,): raw discrete queue actions, integers in [0, 2J)

#: Status codes of :func:`queue_step` (nothing is changed unless it returns OK).
OK = 0
ENDED = 1  # a copy's episode has ended (t == horizon)
OUT_OF_RANGE = 2  # an entry of a BOX action is outside [-1, 1] or NaN
BAD_INDEX = 3  # a configuration (CONFIGS) or discrete action (DISCRETE) not an integer in range
BAD_SIZE = 4  # act has the wrong number of entries


# Flags of a pending task in queue_step.
CAND = 1  # not deferred: a candidate
SRV = 2  # served
FIN = 4  # correct if served

# Layout of the packed constants (see pack_constants): integers W, omega, capped, J, M,
# then deadlines (C), model_of (J), budget_of (J); then, as the bits of float64 values,
# idle_kwh, J_PER_KWH, caps (M), solvable (M*C), j_per_token (M), values (C).
_INT_HEAD = 5
_FLOAT_HEAD = 2


def pack_constants(W: int, omega: int, deadlines: np.ndarray, model_of: np.ndarray,
                   budget_of: np.ndarray, caps: np.ndarray, solvable: np.ndarray,
                   j_per_token: np.ndarray, values: np.ndarray, idle_kwh: float
                   ) -> np.ndarray:
    """The constants of a core as :func:`queue_step`'s ``consts``: one int64 array, the
    integers first, then the float64 values bit for bit (``view(np.float64)`` reads them).

    Args:
        W: Slots a task can be pending (largest deadline + 1).
        omega: Tokens per reasoning step.
        deadlines: Deadline of each class [slots], shape (C,).
        model_of, budget_of: Model and token budget of each configuration, shape (J,).
        caps: Tokens per slot each model may run (inf = no cap), shape (M,).
        solvable: Solvability threshold per (model, class), shape (M, C), float64.
        j_per_token: Energy per token of each model [J], shape (M,).
        values: Value of a correct answer per class, shape (C,).
        idle_kwh: Idle energy per slot [kWh].
    """
    caps = np.asarray(caps, dtype=np.float64)
    ints = np.concatenate([
        [W, omega, int(np.isfinite(caps).any()), len(model_of), len(caps)],
        np.asarray(deadlines), np.asarray(model_of), np.asarray(budget_of)]).astype(np.int64)
    floats = np.concatenate([
        [idle_kwh, J_PER_KWH], caps, np.asarray(solvable, dtype=np.float64).ravel(),
        np.asarray(j_per_token, dtype=np.float64), np.asarray(values, dtype=np.float64)])
    return np.concatenate([ints, floats.view(np.int64)])


@numba.njit(cache=True)
def pairwise_sum(x: np.ndarray, lo: int, n: int) -> float:
    """``np.add.reduce`` of the float64 row ``x[lo:lo + n]`` (n <= 128), bit for bit.

    numpy adds the row's pairwise sum to 0.0; below 8 entries the pairwise sum is sequential,
    else 8 running partial sums over blocks of 8, combined as a tree, then the entries left
    over (numpy splits rows longer than 128 further; callers do not pass them).
    """
    if n < 8:
        res = 0.0
        for k in range(n):
            res += x[lo + k]
        return 0.0 + res
    r0, r1, r2, r3 = x[lo], x[lo + 1], x[lo + 2], x[lo + 3]
    r4, r5, r6, r7 = x[lo + 4], x[lo + 5], x[lo + 6], x[lo + 7]
    k = 8
    stop = n - n % 8
    while k < stop:
        r0 += x[lo + k]
        r1 += x[lo + k + 1]
        r2 += x[lo + k + 2]
        r3 += x[lo + k + 3]
        r4 += x[lo + k + 4]
        r5 += x[lo + k + 5]
        r6 += x[lo + k + 6]
        r7 += x[lo + k + 7]
        k += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while k < n:
        res += x[lo + k]
        k += 1
    return 0.0 + res


@numba.njit(cache=True)
def decode_box(act: np.ndarray, C: int, J: int, thr: np.ndarray, f: np.ndarray,
               w: np.ndarray) -> None:
    """Decode one copy's continuous queue action ``act`` (C*(J+1) entries in [-1, 1]) into
    the J - 1 assignment thresholds per class ``thr`` (C*(J-1)) and the defer fractions
    ``f`` (C), as ``envs.actions.decode_continuous`` followed by the step's clip and running
    sums: weights ``w = (a + 1) / 2`` (``w`` is scratch space of J + 1 entries), defer
    fraction ``w_defer / sum(w)`` (0 if the sum is 0), mixture ``w_j / sum(w_j)`` (uniform if
    that sum is 0). Needs J + 1 <= 128 (:func:`pairwise_sum`)."""
    for c in range(C):
        base = c * (J + 1)
        for k in range(J + 1):
            w[k] = (np.float64(act[base + k]) + 1.0) * 0.5
        total = pairwise_sum(w, 0, J + 1)
        fc = w[J] / total if total > 0.0 else 0.0
        f[c] = 1.0 if fc > 1.0 else (0.0 if fc < 0.0 else fc)
        s = pairwise_sum(w, 0, J)
        acc = 0.0
        for q in range(J - 1):
            mix = w[q] / s if s > 0.0 else 1.0 / J
            acc = mix if q == 0 else acc + mix
            thr[c * (J - 1) + q] = acc


@numba.njit(cache=True)
def scratch_size(W: int, A: int, C: int, J: int, M: int) -> int:
    """Entries (int64) of :func:`queue_step`'s scratch space for a core whose tasks can be
    pending for ``W`` slots with up to ``A`` tasks a slot (see the layout in ``queue_step``)."""
    return 8 * W * A + (W + 1) + 4 * C + 3 * M + C * (J - 1) + (J + 1) + 2 * C


@numba.njit(cache=True)
def queue_step(us_tm, ua_tm, steps_tm, done, arrivals, harvest, t_now, first_open, queue_len,
               consts, mode, act, ip, fp, fs, res_f, res_i, forecast, obs, scratch
               ):  # noqa: ANN001
    """One slot of the queue rules for every copy b (each at its own slot ``t_now[b]``).

    Args:
        us_tm, ua_tm, steps_tm: The core's slot-major task buffers (T, B, A[, M]):
            solvability and assignment quantiles (float32), steps per model. A slot's tasks
            are stored class by class, each class in arrival order (``FleetCore`` writes them
            so), so class c of slot s holds the positions from ``arrivals[b, s, :c].sum()``
            on: the step reads the classes whose deadline keeps them pending, not every task
            of the window.
        done: (B, T + W - 1, A) served-or-dropped flag of each task, slot s at s + W - 1;
            updated.
        arrivals: (B, T, C) tasks per slot and class (at most A a slot). harvest: (B, T)
            harvest per slot [kWh].
        t_now: (B,) slot of each copy; advanced by one.
        first_open: (B,) oldest slot that may hold a pending task; updated.
        queue_len: (B, C) tasks waiting after the slot; updated.
        consts: The core's constants (:func:`pack_constants`).
        mode: How ``act`` is read: :data:`MIXTURES`, :data:`CONFIGS`, :data:`BOX`,
            :data:`DISCRETE`.
        act: The actions (see the modes); for MIXTURES and CONFIGS optionally followed by
            B*C defer fractions (clipped to [0, 1]; none = nothing deferred). BOX and
            DISCRETE actions hold their defer fractions.
        ip, fp, fs: The core kernel's parameters and packed float state (``envs.kernel``);
            the state is updated as the core kernel's slot close (``envs.kernel._close``) updates it.
        res_f, res_i: The core's result rows (``envs.kernel.RES_F``; ``RES_I``, correct
            answers per class, tokens per model); the reward with the ``dropped`` term and
            ``leftover_kwh`` as ``envs.reward.slot_terms`` and ``combine_scalar`` give them.
        forecast: (B, T, F) forecast features of the core.
        obs: (B, dim) observations: as ``FleetCore.observe`` writes them (``envs.kernel``:
            the paper features, the forecast, the -v1 features), and the queue lengths /
            class rates.
        scratch: int64 scratch space of :func:`scratch_size` entries, kept by the core so
            that a step allocates nothing (a smaller one is replaced by a new array).

    Returns:
        A status code; the state is changed only when it is :data:`OK`.
    """
    T, B, A, M = steps_tm.shape
    C = queue_len.shape[1]
    W, omega, capped, J = consts[0], consts[1], consts[2], consts[3]
    deadlines = consts[_INT_HEAD:_INT_HEAD + C]
    model_of = consts[_INT_HEAD + C:_INT_HEAD + C + J]
    budget_of = consts[_INT_HEAD + C + J:_INT_HEAD + C + 2 * J]
    f0 = _INT_HEAD + C + 2 * J  # the float64 values
    fc = consts.view(np.float64)
    idle_kwh, j_per_kwh = fc[f0], fc[f0 + 1]
    f0 += _FLOAT_HEAD
    caps = fc[f0:f0 + M]
    solvable = fc[f0 + M:f0 + M + M * C]
    j_per_token = fc[f0 + M + M * C:f0 + 2 * M + M * C]
    values = fc[f0 + 2 * M + M * C:f0 + 2 * M + M * C + C]
    lossless = ip[I_LOSSLESS] != 0
    o_rates = N_F_SCALARS + M * C + M + C  # 1 / class rate in fp (envs.kernel's layout)

    # Checks first: nothing changes unless the whole batch can step.
    per_copy = C * J if mode == MIXTURES else (C * (J + 1) if mode == BOX else 1)
    use_defer = (mode == MIXTURES or mode == CONFIGS) and act.size == B * (per_copy + C)
    if act.size != B * per_copy and not use_defer:
        return BAD_SIZE
    d0 = B * per_copy  # first defer fraction in act
    for b in range(B):
        t = t_now[b]
        if t >= T or t < 0:
            return ENDED
    if mode == BOX:
        for k in range(act.size):
            if not abs(act[k]) <= 1.0:  # also NaN
                return OUT_OF_RANGE
    elif mode == CONFIGS or mode == DISCRETE:
        hi = J if mode == CONFIGS else 2 * J
        for b in range(B):
            x = act[b]
            if not (x >= 0 and x < hi and x == np.floor(x)):  # also NaN
                return BAD_INDEX

    # Scratch space, one block (numba's dispatch and allocations cost per array). Per
    # pending task, in window order (slot, then position: the oldest first), at most W
    # slots of at most A tasks: arrival slot, position in the slot, class, deadline slot,
    # model of its configuration, tokens it runs if served, flags (CAND: not deferred, FIN:
    # correct if served, SRV: served); then the next candidate of the same deadline (step 3).
    # Then the integer and the float64 (bits) scratch of the slot.
    if scratch.size < scratch_size(W, A, C, J, M):
        scratch = np.empty(scratch_size(W, A, C, J, M), dtype=np.int64)
    n_cap = W * A
    p_s, p_a = scratch[:n_cap], scratch[n_cap:2 * n_cap]
    p_c, p_dl = scratch[2 * n_cap:3 * n_cap], scratch[3 * n_cap:4 * n_cap]
    p_i, p_tok = scratch[4 * n_cap:5 * n_cap], scratch[5 * n_cap:6 * n_cap]
    p_flag, p_next = scratch[6 * n_cap:7 * n_cap], scratch[7 * n_cap:8 * n_cap]
    o = 8 * n_cap
    head = scratch[o:o + W + 1]  # first candidate of each deadline (step 3)
    o += W + 1
    n_pend = scratch[o:o + C]
    rank = scratch[o + C:o + 2 * C]
    cor_by = scratch[o + 2 * C:o + 3 * C]
    wait_by = scratch[o + 3 * C:o + 4 * C]
    o += 4 * C
    used = scratch[o:o + M]  # running tokens per model
    tok_by = scratch[o + M:o + 2 * M]  # tokens served per model
    tok_cand = scratch[o + 2 * M:o + 3 * M]  # tokens of the candidates per model
    o += 3 * M
    fscr = scratch.view(np.float64)
    n_thr = C * (J - 1)
    thr = fscr[o:o + n_thr]  # assignment thresholds per class
    o += n_thr
    wbox = fscr[o:o + J + 1]  # weights of a continuous action's class
    f = fscr[o + J + 1:o + J + 1 + C]  # defer fraction per class
    n_def = fscr[o + J + 1 + C:o + J + 1 + 2 * C]  # tasks to defer per class

    for b in range(B):
        t = t_now[b]
        # The copy's action: thresholds per class (mixtures) or one configuration, and the
        # defer fraction per class.
        j_all = -1
        if mode == BOX:
            decode_box(act[b * C * (J + 1):(b + 1) * C * (J + 1)], C, J, thr, f, wbox)
        elif mode == MIXTURES:
            for c in range(C):
                base = (b * C + c) * J
                acc = 0.0
                for q in range(J - 1):  # running sums, left to right (np.cumsum)
                    x = np.float64(act[base + q])
                    acc = x if q == 0 else acc + x
                    thr[c * (J - 1) + q] = acc
        elif mode == CONFIGS:
            j_all = np.int64(act[b])
        else:  # DISCRETE: a < J serves on a; a >= J defers what is not due, due tasks on a - J
            j_all = np.int64(act[b]) % J
        if mode == MIXTURES or mode == CONFIGS:
            for c in range(C):
                x = np.float64(act[d0 + b * C + c]) if use_defer else 0.0
                f[c] = 1.0 if x > 1.0 else (0.0 if x < 0.0 else x)  # np.clip (NaN stays)
        elif mode == DISCRETE:
            for c in range(C):
                f[c] = 1.0 if np.int64(act[b]) >= J else 0.0

        # 1. Pending: neither served nor dropped, deadline slot min(s + d_c, T - 1) >= t;
        # with each task's configuration, outcome and tokens should it be a candidate (the
        # deferred ones, step 2, are then struck off).
        n = 0
        for c in range(C):
            n_pend[c] = 0
        for m in range(M):
            tok_cand[m] = 0
        for s in range(max(first_open[b], t - W + 1, 0), t + 1):
            start = 0  # first position of class c in the slot
            for c in range(C):
                n_sc = arrivals[b, s, c]
                dl = min(s + deadlines[c], T - 1)
                if dl >= t:
                    n0 = n
                    thr_c = thr[c * (J - 1):(c + 1) * (J - 1)]
                    for a in range(start, start + n_sc):
                        if done[b, s + W - 1, a]:
                            continue
                        if j_all >= 0:
                            j = j_all
                        else:
                            u = np.float64(ua_tm[s, b, a])
                            j = 0
                            for q in range(J - 1):
                                j += u >= thr_c[q]
                        i = model_of[j]
                        budget = budget_of[j]
                        step_tok = omega * np.int64(steps_tm[s, b, a, i])
                        fin = ((np.float64(us_tm[s, b, a]) < solvable[i * C + c])
                               & (step_tok <= budget))
                        tok = step_tok if fin else budget
                        p_s[n] = s
                        p_a[n] = a
                        p_c[n] = c
                        p_dl[n] = dl
                        p_i[n] = i
                        p_tok[n] = tok
                        p_flag[n] = CAND | SRV | (FIN if fin else 0)
                        tok_cand[i] += tok
                        n += 1
                    n_pend[c] += n - n0
                start += n_sc
        # 2. Defer the newest non-due tasks of each class: round(f * pending) of them.
        any_defer = False
        for c in range(C):
            n_def[c] = np.floor(f[c] * n_pend[c] + 0.5)
            rank[c] = 0
            any_defer = any_defer or n_def[c] > 0.0
        if any_defer:
            for k in range(n - 1, -1, -1):
                if p_dl[k] > t:
                    c = p_c[k]
                    rank[c] += 1
                    if rank[c] <= n_def[c]:
                        p_flag[k] = 0
                        tok_cand[p_i[k]] -= p_tok[k]

        # 3. Caps: candidates in earliest-deadline-first order (ties: window order), each
        # model admitting while its running tokens (rejected candidates included: a prefix
        # rule) stay within its cap. A model whose candidates' tokens all fit admits them
        # all, so only the candidates of the other models are ordered: one list per
        # deadline slot - t (< W), in window order, linked through ``p_next``.
        binding = False
        if capped:
            for m in range(M):
                binding = binding or tok_cand[m] > caps[m]
        if binding:
            for d in range(W):
                head[d] = -1
            for k in range(n - 1, -1, -1):
                i = p_i[k]
                if p_flag[k] and tok_cand[i] > caps[i]:
                    d = p_dl[k] - t
                    p_next[k] = head[d]
                    head[d] = k
            for m in range(M):
                used[m] = 0
            for d in range(W):
                k = head[d]
                while k >= 0:
                    i = p_i[k]
                    used[i] += p_tok[k]
                    if used[i] > caps[i]:
                        p_flag[k] &= ~SRV
                    k = p_next[k]

        # 4. Book-keeping: served and dropped tasks are done; the rest wait.
        for m in range(M):
            tok_by[m] = 0
        for c in range(C):
            cor_by[c] = 0
            wait_by[c] = 0
        n_served = 0
        n_dropped = 0
        first = t + 1  # oldest slot still holding a waiting task (else the next slot)
        for k in range(n):
            c = p_c[k]
            if p_flag[k] & SRV:
                n_served += 1
                tok_by[p_i[k]] += p_tok[k]
                if p_flag[k] & FIN:
                    cor_by[c] += 1
                done[b, p_s[k] + W - 1, p_a[k]] = True
            elif p_dl[k] <= t:  # due and not served: dropped
                n_dropped += 1
                done[b, p_s[k] + W - 1, p_a[k]] = True
            else:
                wait_by[c] += 1
                if p_s[k] < first:
                    first = p_s[k]
        first_open[b] = first
        energy_j = 0.0
        n_correct = 0
        for m in range(M):
            energy_j += j_per_token[m] * np.float64(tok_by[m])
            res_i[b, N_RES_I + C + m] = tok_by[m]
        value = 0.0
        for c in range(C):
            value += values[c] * np.float64(cor_by[c])
            n_correct += cor_by[c]
            res_i[b, N_RES_I + c] = cor_by[c]
            queue_len[b, c] = wait_by[c]
        n_arrived = 0
        for c in range(C):
            n_arrived += arrivals[b, t, c]
        h = harvest[b, t]
        demand = idle_kwh + energy_j / j_per_kwh
        # The slot's close and observation, by the core kernel's own functions.
        aux, waste, loss, storage = _close(b, h, demand, fs, t_now, fp, lossless)
        _observe(b, ip, fp, fs, t_now, arrivals, forecast, obs)
        for c in range(C):  # queue features: float64 products rounded to float32
            obs[b, 10 + C + c] = queue_len[b, c] * fp[o_rates + c]
        truncated = t_now[b] >= T
        over = storage - fp[F_S0]
        leftover = (over if over > 0.0 else 0.0) if truncated else 0.0
        n_queued = 0
        for c in range(C):
            n_queued += wait_by[c]
        _write_slot(b, fp, h, demand, aux, waste, loss, storage, value, leftover, truncated,
                    t_now[b], n_arrived, n_served, n_correct, n_dropped, n_queued, res_f,
                    res_i)
    return OK


#: Arrays of a queue core's table after those of ``envs.kernel.BOUND``.
BOUND = ("done", "first_open", "queue_len", "consts", "scratch")


@numba.njit(cache=True)
def _queue_arrays(tab):  # noqa: ANN001 - numba
    """The arrays of a queue core's table after ``envs.kernel.BOUND``'s (:data:`BOUND`)."""
    done = numba.carray(pointer(tab[70]), (tab[71], tab[72], tab[73]), np.bool_)
    first_open = numba.carray(pointer(tab[75]), (tab[76],), np.int64)
    queue_len = numba.carray(pointer(tab[80]), (tab[81], tab[82]), np.int64)
    consts = numba.carray(pointer(tab[85]), (tab[86],), np.int64)
    scratch = numba.carray(pointer(tab[90]), (tab[91],), np.int64)
    return done, first_open, queue_len, consts, scratch


@numba.njit(cache=True)
def queue_step_bound16(tab, mode, act):  # noqa: ANN001 - numba
    """:func:`queue_step` with the arrays of a core bound in ``tab`` (``envs.kernel.BOUND``,
    then :data:`BOUND`, as ``envs.bound.table`` lays them out; int16 step counts): one call
    unboxes two arrays instead of seventeen. Returns the status with copy 0's results as one
    tuple, as ``envs.kernel.step_bound16`` does (a single env reads its slot from it)."""
    ip, fp, fs, t, harvest, arrivals, us, ua, _, res_f, res_i, obs, forecast = \
        bound_arrays(tab)
    done, first_open, queue_len, consts, scratch = _queue_arrays(tab)
    steps = numba.carray(pointer(tab[40]), (tab[41], tab[42], tab[43], tab[44]), np.int16)
    status = queue_step(us, ua, steps, done, arrivals, harvest, t, first_open, queue_len,
                        consts, mode, act, ip, fp, fs, res_f, res_i, forecast, obs, scratch)
    return _result_of_one(status, res_f, res_i)


@numba.njit(cache=True)
def queue_step_bound32(tab, mode, act):  # noqa: ANN001 - numba
    """:func:`queue_step_bound16` for int32 step counts."""
    ip, fp, fs, t, harvest, arrivals, us, ua, _, res_f, res_i, obs, forecast = \
        bound_arrays(tab)
    done, first_open, queue_len, consts, scratch = _queue_arrays(tab)
    steps = numba.carray(pointer(tab[40]), (tab[41], tab[42], tab[43], tab[44]), np.int32)
    status = queue_step(us, ua, steps, done, arrivals, harvest, t, first_open, queue_len,
                        consts, mode, act, ip, fp, fs, res_f, res_i, forecast, obs, scratch)
    return _result_of_one(status, res_f, res_i)
