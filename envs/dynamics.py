"""Batched simulator core: B independent copies of the fleet, stepped together.

Pure numpy, no Gymnasium. A single environment is the case B = 1. Each copy owns its
episode: arrivals, harvest and every task's latent draws are generated at reset from the
copy's own generators, so a copy's trajectory does not depend on B or on the other copies
(sums over tasks are done in integer tokens, so even the rounding is independent of B).

Per slot and copy (MODEL.md section 4)::

    y   = S_{t-1} + H_t - D_t
    U_t = max(0, -y)                 auxiliary energy covers the shortfall
    W_t = max(0, y - S_max)          baseline energy that cannot be stored is wasted
    S_t = min(S_max, max(0, y))

With charge/discharge efficiencies below 1 the conversion losses are reported separately
(``loss_kwh``), and ``sum H - sum D = S_T - S_0 + sum W - sum U + sum loss`` holds.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from envs.config import FleetConfig
from envs.outcomes import (
    J_PER_KWH,
    build_tables,
    config_moments,
    idle_energy_kwh,
    reference_demand_kwh,
)
from envs.processes import (
    N_TASK_LATENTS,
    make_arrival_process,
    make_harvest_process,
    poisson_upper,
    sample_task_latents,
)


@dataclass
class SlotResult:
    """What happened in one slot, one entry per copy (arrays of shape (B,) unless stated).

    Attributes:
        harvest_kwh: Baseline energy harvested H_t [kWh].
        demand_kwh: Energy used by the fleet D_t [kWh] (tasks started, plus idle).
        aux_kwh: Auxiliary energy drawn U_t [kWh].
        waste_kwh: Baseline energy wasted W_t [kWh].
        loss_kwh: Storage conversion losses [kWh] (0 with unit efficiencies).
        storage_kwh: Energy in storage after the slot S_t [kWh].
        arrived: Tasks that arrived in the slot [tasks].
        served: Tasks dispatched in the slot [tasks].
        correct: Tasks answered correctly [tasks].
        dropped: Tasks dropped [tasks].
        value_correct: Value of the correct answers (sum of class values).
        correct_by_class: Correct answers per class, shape (B, C) [tasks].
        tokens_by_model: Output tokens run per model, shape (B, M) [tokens].
    """

    harvest_kwh: np.ndarray
    demand_kwh: np.ndarray
    aux_kwh: np.ndarray
    waste_kwh: np.ndarray
    loss_kwh: np.ndarray
    storage_kwh: np.ndarray
    arrived: np.ndarray
    served: np.ndarray
    correct: np.ndarray
    dropped: np.ndarray
    value_correct: np.ndarray
    correct_by_class: np.ndarray
    tokens_by_model: np.ndarray


    def single(self, b: int) -> tuple:
        """Copy ``b``'s slot as the tuple ``FleetCore.step_single`` returns: (harvest, demand,
        aux, waste, loss, storage [kWh], arrived, served, correct, dropped [tasks], value)."""
        return (float(self.harvest_kwh[b]), float(self.demand_kwh[b]), float(self.aux_kwh[b]),
                float(self.waste_kwh[b]), float(self.loss_kwh[b]), float(self.storage_kwh[b]),
                int(self.arrived[b]), int(self.served[b]), int(self.correct[b]),
                int(self.dropped[b]), float(self.value_correct[b]))


#: Per-copy state a B = 1 fast-path step keeps as Python scalars (``single_state``) until read.
SINGLE_STATE = ("t", "storage", "last_harvest", "last_demand", "last_aux", "last_waste",
                "net_mean", "net_m2")


def _state_array(name: str) -> property:
    """A state array of :class:`FleetCore` that first takes in the pending fast-path state."""
    key = "_" + name

    def get(self: FleetCore) -> np.ndarray:
        if self.single_state is not None:
            self._sync_single()
        return self.__dict__[key]

    def set(self: FleetCore, value: np.ndarray) -> None:
        if self.single_state is not None:
            self._sync_single()
        self.__dict__[key] = value

    return property(get, set, doc=f"State array ``{name}``, shape (B,).")


def _task_buffer(key: str, doc: str) -> property:
    """A (B, T, ...) view of the slot-major task buffer ``key`` of :class:`FleetCore`, written
    first if a reset left its tasks pending."""

    def get(self: FleetCore) -> np.ndarray:
        if self._pending is not None:
            self._fill_task_buffers()
        return np.swapaxes(self.__dict__[key], 0, 1)

    return property(get, doc=doc)


class FleetCore:
    """B copies of the fleet model held in arrays with a leading batch axis.

    Args:
        config: The fleet config (validated).
        batch_size: Number of copies B.

    Attributes (per copy, shape (B, ...)):
        t: Slots elapsed in the episode.
        storage: Energy in storage [kWh].
        last_harvest, last_demand, last_aux, last_waste: Previous slot's ledger [kWh].
        net_mean, net_m2: Welford running mean and sum of squares of (H - D) / D_ref.
        harvest: (B, T) harvest of every slot of the episode [kWh].
        arrivals: (B, T, C) arrivals per slot and class [tasks].
    """

    t = _state_array("t")
    storage = _state_array("storage")
    last_harvest = _state_array("last_harvest")
    last_demand = _state_array("last_demand")
    last_aux = _state_array("last_aux")
    last_waste = _state_array("last_waste")
    net_mean = _state_array("net_mean")
    net_m2 = _state_array("net_m2")

    def __init__(self, config: FleetConfig, batch_size: int = 1) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.config = config
        self.B = batch_size
        self.T = config.horizon
        self.C = config.n_classes
        self.M = config.n_models
        self.J = config.n_configs
        self.tables = build_tables(config)
        self.moments = config_moments(config, self.tables)
        #: Mean demand per slot of the reference mixture [kWh].
        self.ref_demand_kwh = reference_demand_kwh(config, self.moments)
        self.idle_kwh = idle_energy_kwh(config)
        self.arrival_process = make_arrival_process(config)
        self.harvest_process = make_harvest_process(
            config, config.provisioning * self.ref_demand_kwh)
        self.values = np.asarray(config.class_values, dtype=np.float64)
        self.j_per_token = np.asarray(config.model_j_per_token, dtype=np.float64)
        self.model_of = self.tables.model_of
        self.budget_of = self.tables.budget_of
        self.solvable = self.tables.solvable  # (M, C)
        # Solvability threshold of each (model i, class c) at index i * C + c, as the
        # smallest float32 >= the float64 value: for float32 quantiles u, u < s32 iff u < s.
        solv = self.solvable.ravel()
        s32 = solv.astype(np.float32)
        low = s32.astype(np.float64) < solv
        s32[low] = np.nextafter(s32[low], np.float32(np.inf))
        self._solv32_ic = s32
        self.omega = config.step_tokens
        self.s_max = float(config.storage_kwh)
        self.eta_c = float(config.charge_efficiency)
        self.eta_d = float(config.discharge_efficiency)
        self._lossless = self.eta_c == 1.0 and self.eta_d == 1.0
        k_cap = self.tables.n_max + 1
        self._k_dtype = np.int16 if k_cap < np.iinfo(np.int16).max else np.int32
        self.A = max(1, poisson_upper(self.arrival_process.max_rate))
        self._build_guides()
        #: Calls of :meth:`reset_copies` so far (observers key per-episode tables on it).
        self.resets = 0
        #: Tasks of the last reset not yet written to the task buffers (see _reset_chunk).
        self._pending: tuple | None = None
        self._alloc(self.A)
        B = self.B
        #: Copy 0's state after a B = 1 fast-path step, as Python scalars in the order of
        #: :data:`SINGLE_STATE`, not yet written to the state arrays (they take it in when
        #: read); None when the arrays are current.
        self.single_state: tuple | None = None
        self.t = np.zeros(B, dtype=np.int64)
        self.storage = np.zeros(B)
        self.last_harvest = np.zeros(B)
        self.last_demand = np.zeros(B)
        self.last_aux = np.zeros(B)
        self.last_waste = np.zeros(B)
        self.net_mean = np.zeros(B)
        self.net_m2 = np.zeros(B)
        self.harvest = np.zeros((B, self.T))
        self.arrivals = np.zeros((B, self.T, self.C), dtype=np.int64)
        #: (B, T) tasks arriving in each slot (all classes) [tasks].
        self.n_slot = np.zeros((B, self.T), dtype=np.int64)
        self._rows = np.arange(B)
        #: (B,): the first row of each copy in a (B * C, ...) table of per-class rows.
        self._class_row0 = self._rows * self.C
        # Episode of the B = 1 fast path as Python lists (see _build_single_lists); None when
        # the fast path is off (B > 1, an episode too large, or a subclass that needs step).
        self._single: tuple[list, ...] | None = None
        self._vals = [float(v) for v in self.values]
        self._jpt = [float(e) for e in self.j_per_token]
        self._model_l = self.model_of.tolist()
        self._budget_l = self.budget_of.tolist()
        #: Most steps within each configuration's budget, and a count above all of them.
        self._max_steps_l = [b // self.omega for b in self._budget_l]
        self._never_steps = max(self._max_steps_l) + 1
        self._max_budget = max(self._budget_l)

    # ------------------------------------------------------------------ buffers
    def _alloc(self, a: int) -> None:
        """Task buffers for up to ``a`` tasks per slot.

        Stored slot-major, shape (T, B, a[, M]), so that a step reads one contiguous block
        per slot; ``cls``, ``u_solve``, ``u_assign`` and ``steps`` are (B, T, a[, M]) views.
        """
        B, T = self.B, self.T
        self._cls_tm = np.full((T, B, a), self.C, dtype=np.int8 if self.C < 127 else np.int16)
        self._us_tm = np.zeros((T, B, a), dtype=np.float32)
        self._ua_tm = np.zeros((T, B, a), dtype=np.float32)
        self._steps_tm = np.zeros((T, B, a, self.M), dtype=self._k_dtype)
        #: Flat index of each copy's first task slot in one slot's block (B, a).
        self._first_task = np.arange(B) * a
        #: 0, 1, ..., B a - 1: the position of each task of a slot (see :meth:`step`).
        self._task_range = np.arange(B * a)

    # (B, T, A[, M]) views of the slot-major task buffers (properties, so that a copy of the
    # core, e.g. by pickling, keeps them views of its own buffers).
    cls = _task_buffer("_cls_tm", "Class of each task slot, shape (B, T, A); C marks an empty "
                       "slot.")
    u_solve = _task_buffer("_us_tm", "Solvability quantile of each task, shape (B, T, A), "
                           "float32.")
    u_assign = _task_buffer("_ua_tm", "Assignment quantile of each task, shape (B, T, A), "
                            "float32.")
    steps = _task_buffer("_steps_tm", "Step count of each task under each model, shape "
                         "(B, T, A, M).")

    def _grow(self, a: int) -> None:
        old = (self.cls, self.u_solve, self.u_assign, self.steps)
        a_old = self.A
        self._alloc(a)
        self.cls[:, :, :a_old] = old[0]
        self.u_solve[:, :, :a_old] = old[1]
        self.u_assign[:, :, :a_old] = old[2]
        self.steps[:, :, :a_old] = old[3]
        self.A = a

    # ------------------------------------------------------------------ reset
    #: Bins per (model, class) of the guide tables of the step-count inversion.
    GUIDE_BINS = 16384

    def _build_guides(self) -> None:
        """Guide tables that make the inverse-CDF step draw O(1) per task (exact).

        For class c, model i and bin g = floor(u G): ``_k0[i, c G + g]`` is the step count
        ``m_c + searchsorted(cdf[i][c], g / G)`` (the answer for u = g / G) and
        ``_cdf_at[i, c G + g]`` the CDF value at that index. A bin holding at most one CDF
        entry then gives ``k0 + (cdf_at < u)`` exactly; bins holding several (rare, in the
        tails) are marked by a NaN ``cdf_at`` and use searchsorted.
        """
        G, C, M = self.GUIDE_BINS, self.C, self.M
        grid = np.arange(G + 1) / G
        k0 = np.zeros((C, G, M), dtype=np.int64)
        cdf_at = np.zeros((C, G, M), dtype=np.float64)
        for i in range(M):
            for c in range(C):
                cdf = self.tables.cdf[i][c]
                idx = np.searchsorted(cdf, grid, side="left")
                padded = np.concatenate([cdf, [2.0]])
                k0[c, :, i] = self.config.class_skills[c] + idx[:-1]
                at = padded[idx[:-1]]
                at[idx[1:] - idx[:-1] > 1] = np.nan
                cdf_at[c, :, i] = at
        # Model-major (M, C G): a draw gathers one contiguous row per model.
        self._k0 = np.ascontiguousarray(k0.reshape(C * G, M).T.astype(self._k_dtype))
        # The quantiles u are float32, so ``cdf_at < u`` (float64) equals ``at32 < u`` with
        # at32 the largest float32 <= cdf_at: if cdf_at is a float32 they are equal, else no
        # float32 lies strictly between at32 and cdf_at. Half the bytes to gather; NaN stays.
        at32 = cdf_at.astype(np.float32)
        high = at32.astype(np.float64) > cdf_at
        at32[high] = np.nextafter(at32[high], np.float32(-np.inf))
        self._cdf_at = np.ascontiguousarray(at32.reshape(C * G, M).T)
        #: Whether bin g is wide (NaN) for some model, shape (C G,).
        self._wide_bin = np.isnan(self._cdf_at).any(axis=0)

    def _sample_steps(self, cls: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Step count of each task under every model, shape (M, n), by inverse CDF.

        ``k = m_c + searchsorted(cdf[i][c], u, side="left")`` (at most n_max + 1), computed
        with the guide tables of :meth:`_build_guides` (same result as the searchsorted).

        Args:
            cls: Class of each task, shape (n,).
            u: Step-count quantile of each task in [0, 1), float32 (the latents' type),
                shape (n,).
        """
        G = self.GUIDE_BINS
        u = np.asarray(u, dtype=np.float32)  # the latents are float32 (exact comparisons)
        # u * 2**14 is exact in float32; int32 (not int64) makes the conversion cheap.
        g = (u * np.float32(G)).astype(np.int32)
        g += np.multiply(cls, G, dtype=np.int32)
        at = self._cdf_at.take(g, axis=1)  # (M, n)
        k = self._k0.take(g, axis=1)
        k += at < u
        cols = np.flatnonzero(self._wide_bin.take(g))
        if cols.size:  # the few bins that hold several entries: plain searchsorted
            wide_i, wide_r = np.nonzero(np.isnan(at[:, cols]))
            wide_n = cols[wide_r]
            wide_c = cls[wide_n]
            for i, c in set(zip(wide_i.tolist(), wide_c.tolist())):
                sel = wide_n[(wide_i == i) & (wide_c == c)]
                k[i, sel] = self.config.class_skills[c] + np.searchsorted(
                    self.tables.cdf[i][c], u[sel].astype(np.float64), side="left")
        return k

    def reset_copy(self, b: int, arrivals_rng: np.random.Generator,
                   harvest_rng: np.random.Generator, tasks_rng: np.random.Generator) -> None:
        """Start a new episode in copy ``b``, drawing it from the three generators."""
        self.reset_copies([b], [(arrivals_rng, harvest_rng, tasks_rng)])

    #: Copies whose tasks are processed together by :meth:`reset_copies` (bounds its memory).
    RESET_CHUNK = 64

    def reset_copies(self, copies: Sequence[int],
                     rngs: Sequence[tuple[np.random.Generator, np.random.Generator,
                                          np.random.Generator]]) -> None:
        """Start a new episode in each of ``copies``, copy ``copies[r]`` drawing from the
        generators ``rngs[r] = (arrivals_rng, harvest_rng, tasks_rng)``.

        Each copy's draws are made from its own generators in the same order as a lone
        :meth:`reset_copy`, so the result does not depend on which copies reset together;
        the per-task work runs on all copies of a chunk at once.
        """
        if len(copies) != len(rngs):
            raise ValueError(f"copies and rngs must have the same length, got {len(copies)} "
                             f"and {len(rngs)}")
        self.resets += 1
        for lo in range(0, len(copies), self.RESET_CHUNK):
            self._reset_chunk(list(copies[lo:lo + self.RESET_CHUNK]),
                              rngs[lo:lo + self.RESET_CHUNK])

    def _reset_chunk(self, copies: list[int], rngs: Sequence[tuple[np.random.Generator, ...]]
                     ) -> None:
        cfg, T, C = self.config, self.T, self.C
        R = len(copies)
        counts_l, harvest_l = [], []
        for arrivals_rng, harvest_rng, _ in rngs:
            counts_l.append(np.asarray(self.arrival_process.sample(arrivals_rng, T),
                                       dtype=np.int64))
            harvest_l.append(np.asarray(self.harvest_process.sample(harvest_rng, T),
                                        dtype=np.float64))
        counts = np.stack(counts_l)  # (R, T, C)
        per_slot = counts.sum(axis=2)  # (R, T)
        # Every copy's task latents drawn from its own generator into one array.
        n_tasks = per_slot.sum(axis=1).tolist()
        lat = np.empty((sum(n_tasks), N_TASK_LATENTS), dtype=np.float32)
        lo = 0
        for (_, _, tasks_rng), n in zip(rngs, n_tasks):
            sample_task_latents(tasks_rng, n, out=lat[lo:lo + n])
            lo += n
        if per_slot.size and int(per_slot.max()) > self.A:
            self._grow(int(per_slot.max()))
        # Class of each task (int32: the guide-table index below stays int32).
        cls = np.repeat(np.tile(np.arange(C, dtype=np.int32), R * T), counts.ravel())
        steps = self._sample_steps(cls, lat[:, 0])
        rows = np.asarray(copies, dtype=np.intp)
        if R == 1 or np.array_equal(rows, np.arange(rows[0], rows[0] + R)):
            rows_sel: slice | np.ndarray = slice(int(rows[0]), int(rows[0]) + R)
        else:
            rows_sel = rows
        if self.B == 1:
            self._build_single_lists(counts[0], per_slot[0], cls, lat, steps, harvest_l[0])
        # The task buffers: written now, or (B = 1 fast path, which does not read them) when
        # first read.
        self._pending = (rows, rows_sel, per_slot, cls, lat, steps)
        if self._single is None:
            self._fill_task_buffers()
        self.arrivals[rows_sel] = counts
        self.n_slot[rows_sel] = per_slot
        self.harvest[rows_sel] = np.stack(harvest_l)
        self.t[rows_sel] = 0
        self.storage[rows_sel] = cfg.initial_storage_kwh
        self.last_harvest[rows_sel] = 0.0
        self.last_demand[rows_sel] = 0.0
        self.last_aux[rows_sel] = 0.0
        self.last_waste[rows_sel] = 0.0
        self.net_mean[rows_sel] = 0.0
        self.net_m2[rows_sel] = 0.0

    def _fill_task_buffers(self) -> None:
        """Write the tasks of the last reset (``_pending``) into the (T, B, A) buffers."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        rows, rows_sel, per_slot, cls, lat, steps = pending
        T = self.T
        flat = per_slot.ravel()
        start = np.cumsum(flat) - flat  # first task of each (copy, slot)
        # Flat index of each task's slot in the (T, B, A) buffers (1-D scatters are fast):
        # (t B + row) A + position in the slot, i.e. a per-(copy, slot) offset plus the
        # task's running index.
        base = (np.arange(T)[None, :] * self.B + rows[:, None]) * self.A
        flat_pos = np.repeat(base.ravel() - start, flat)
        flat_pos += np.arange(cls.size)
        # Only ``cls`` is cleared: a task slot holding class C is padding, and no reader uses
        # the latents or step counts of padding (the step reads a slot's tasks only), so those
        # buffers keep stale values there instead of being rewritten every reset.
        self._cls_tm[:, rows_sel] = self.C
        self._cls_tm.reshape(-1)[flat_pos] = cls
        self._us_tm.reshape(-1)[flat_pos] = lat[:, 1]
        self._ua_tm.reshape(-1)[flat_pos] = lat[:, 2]
        steps_flat = self._steps_tm.reshape(-1)
        flat_pos *= self.M
        for m in range(self.M):
            steps_flat[flat_pos + m] = steps[m]

    # ------------------------------------------------------------------ step
    def current_arrivals(self) -> np.ndarray:
        """Arrivals per class in each copy's current slot, shape (B, C) [tasks]."""
        t = np.minimum(self.t, self.T - 1)
        return self.arrivals[self._rows, t]

    def assign(self, mixtures: np.ndarray) -> np.ndarray:
        """Configuration index of every task slot of the current slot, shape (B, A).

        Args:
            mixtures: Non-negative mixture weights per class, shape (B, C, J), each row with a
                positive sum (normalised here; see :meth:`step`).
        """
        rows, t = self._rows, self.t
        cls = self.cls[rows, t].astype(np.intp)
        np.minimum(cls, self.C - 1, out=cls)
        B, C, J = self.B, self.C, self.J
        thr = self._thresholds32(np.asarray(mixtures, dtype=np.float64).reshape(B * C, J))
        idx = rows[:, None] * C + cls  # (B, A): row of the task's class in ``thr``
        return self._count_at_or_below(self.u_assign[rows, t], thr.take(idx, axis=0))

    @staticmethod
    def _thresholds_cm(w: np.ndarray) -> np.ndarray:
        """Assignment thresholds of weight rows w (R, J), column-major: shape (J - 1, R),
        float64, the running sums of each row, left to right, divided by its total, as
        :func:`mixture_thresholds` computes them."""
        J = w.shape[1]
        cum = np.empty((J, w.shape[0]))  # summed column by column: long contiguous rows
        cum[0] = w[:, 0]
        for q in range(1, J):
            np.add(cum[q - 1], w[:, q], out=cum[q])
        return np.divide(cum[:J - 1], cum[J - 1], out=cum[:J - 1])

    @classmethod
    def _thresholds(cls, w: np.ndarray) -> np.ndarray:
        """Assignment thresholds of weight rows w (R, J), shape (R, J - 1), float64 (see
        :meth:`_thresholds_cm`)."""
        return cls._thresholds_cm(w).T

    @classmethod
    def _thresholds32(cls, w: np.ndarray) -> np.ndarray:
        """:meth:`_thresholds` as rows (R, P) of float32, P = J - 1 rounded up to a multiple
        of 8, padded with +inf: each value is the smallest float32 >= the float64 threshold t,
        so for a float32 quantile u, ``u >= t32`` iff ``u >= t`` (no float32 lies in
        [t, t32)). Half the bytes to gather per task, and 8 comparisons fill one uint64.
        """
        thr = cls._thresholds_cm(w)  # (J-1, R), values in [0, 1]
        n_thr, rows = thr.shape
        t32 = thr.astype(np.float32)
        # Round up where the float32 fell below: for non-negative floats the next float32 up
        # is the next bit pattern.
        t32.view(np.int32)[...] += t32 < thr
        n_pad = -(-n_thr // 8) * 8
        out = np.empty((rows, n_pad), dtype=np.float32)
        if n_pad > n_thr:
            out[:, n_thr:] = np.inf
        out[:, :n_thr] = t32.T
        return out

    @staticmethod
    def _count_at_or_below(u: np.ndarray, thr: np.ndarray) -> np.ndarray:
        """Per task, how many of its thresholds are <= its quantile: u of any shape S,
        float32, thr of shape S + (P,), float32 with P a multiple of 8; returns integers of
        shape S."""
        shape = u.shape
        above = np.repeat(u, thr.shape[-1]).reshape(thr.shape) >= thr
        # Each group of 8 comparisons is one uint64 of 0/1 bytes; multiplying by 0x0101...01
        # sums the bytes into the top byte.
        words = above.view(np.uint64).reshape(*shape, thr.shape[-1] // 8)
        words *= np.uint64(0x0101010101010101)
        words >>= np.uint64(56)
        counts = words.view(np.int64)  # < 2**8: the same values, an index type for take
        return counts[..., 0] if counts.shape[-1] == 1 else counts.sum(axis=-1)

    def step(self, mixtures: np.ndarray | None = None, configs: np.ndarray | None = None
             ) -> SlotResult:
        """Advance every copy by one slot.

        Exactly one of ``mixtures`` or ``configs`` must be given.

        Args:
            mixtures: Non-negative weights, shape (B, C, J), each row with a positive sum: a
                task of class c goes to configuration j with probability
                ``mixtures[b, c, j] / mixtures[b, c].sum()``: its latent assignment quantile u
                picks the j with ``thr[j-1] <= u < thr[j]``, where ``thr`` holds the running
                sums of the row divided by its total (:func:`mixture_thresholds`).
            configs: Shape (B,), integer: every task of the slot goes to that configuration.
        """
        if self._pending is not None:
            self._fill_task_buffers()
        t, B, C, A = self.t, self.B, self.C, self.A
        t0 = int(t[0])
        if B == 1 or bool((t == t0).all()):
            # All copies in the same slot (the usual case): one slot of the per-slot arrays.
            if t0 >= self.T:
                raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
            n_now = self.n_slot[:, t0]
            harvest = self.harvest[:, t0].copy()
            first = self._first_task + t0 * (B * A)
        else:
            if np.any(t >= self.T):
                raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
            rows = self._rows
            n_now = self.n_slot[rows, t]
            harvest = self.harvest[rows, t]
            first = (t * B + rows) * A
        # The slot's tasks of all copies, copy after copy, without padding: the flat index of
        # each in the (T, B, A) task buffers is its copy's first task slot plus its position.
        ends = np.cumsum(n_now)
        n_tasks = int(ends[-1])
        starts = ends - n_now
        idx = np.repeat(first - starts, n_now)
        idx += self._task_range[:n_tasks]
        cls = self._cls_tm.reshape(-1).take(idx)
        u_solve = self._us_tm.reshape(-1).take(idx)
        J, M = self.J, self.M
        if configs is not None:
            j_b = np.asarray(configs, dtype=np.intp)
            i = np.repeat(self.model_of[j_b], n_now)
            budget = np.repeat(self.budget_of[j_b], n_now)
        else:
            # Thresholds as rows (B*C, P): gathering them for every task is one row take.
            thr32 = self._thresholds32(np.asarray(mixtures, dtype=np.float64).reshape(B * C, J))
            row = np.repeat(self._class_row0, n_now)
            row += cls
            j = self._count_at_or_below(self._ua_tm.reshape(-1).take(idx), thr32.take(row, axis=0))
            i = self.model_of.take(j)
            budget = self.budget_of.take(j)
        ic = i * C
        ic += cls
        idx *= M
        idx += i
        k = self._steps_tm.reshape(-1).take(idx)  # steps[b, t_b, p, i]: one flat take
        # Correct iff solvable by the model (u_solve < s) and k * omega <= budget; it then
        # runs k * omega tokens, else the budget.
        step_tok = np.multiply(k, self.omega, dtype=np.int64)
        correct = (u_solve < self._solv32_ic.take(ic)) & (step_tok <= budget)
        tokens = np.where(correct, step_tok, budget)

        a = int(n_now.max())
        segs = _Segments(starts, n_now, n_tasks)
        tokens_by_model = segs.sums_by_group(tokens, i, M, a * self._max_budget)
        # Sequential sums over models and classes, in the order of a loop from 0.
        energy_j = _sum_columns(tokens_by_model * self.j_per_token)
        demand = self.idle_kwh + energy_j / J_PER_KWH
        correct_by_class = segs.sums_by_group(correct, cls, C, a)
        value = _sum_columns(correct_by_class * self.values)
        arrived = n_now.copy()

        aux, waste, loss, storage = self.advance(harvest, demand)
        return SlotResult(
            harvest_kwh=harvest, demand_kwh=demand, aux_kwh=aux, waste_kwh=waste,
            loss_kwh=loss, storage_kwh=storage, arrived=arrived, served=arrived.copy(),
            correct=correct_by_class.sum(axis=1), dropped=np.zeros(B, dtype=np.int64),
            value_correct=value, correct_by_class=correct_by_class,
            tokens_by_model=tokens_by_model)

    def advance(self, harvest: np.ndarray, demand: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Close the slot of every copy: energy ledger, running statistics, clock.

        Args:
            harvest: Harvest of the slot per copy [kWh].
            demand: Fleet demand of the slot per copy [kWh].

        Returns:
            (aux, waste, loss, new storage) per copy [kWh].
        """
        aux, waste, loss, storage = self._ledger(self.storage, harvest, demand)
        self.storage = storage
        self.last_harvest = harvest
        self.last_demand = demand
        self.last_aux = aux
        self.last_waste = waste
        net = (harvest - demand) / self.ref_demand_kwh
        t1 = self.t + 1
        delta = net - self.net_mean
        self.net_mean = self.net_mean + delta / t1  # t1 (int64) is exact as a float64
        self.net_m2 = self.net_m2 + delta * (net - self.net_mean)
        self.t = t1
        return aux, waste, loss, storage

    # ------------------------------------------------------------------ B = 1 fast path
    #: Largest episode (tasks x models) the fast path holds as Python lists.
    SINGLE_LIST_MAX = 4_000_000

    def _build_single_lists(self, counts: np.ndarray, per_slot: np.ndarray, cls: np.ndarray,
                            lat: np.ndarray, steps: np.ndarray, harvest: np.ndarray) -> None:
        """Hold the episode as Python lists for :meth:`step_single` (B = 1 fast path).

        Per task (in arrival order: slot, then class), the assignment quantile and, per model
        i, the *effective steps* ``eff[i]``: the steps to the answer ``k_i`` if the model can
        solve the task, else more steps than any budget allows. Under a configuration of model
        i and budget b the task is correct iff ``eff[i] <= b // omega`` (i.e. it is solvable
        and ``k_i * omega <= b``) and then runs ``k_i * omega`` tokens, else b tokens: the rule
        of :meth:`step`. Steps rather than tokens: small ints make cheap lists.
        """
        n, M = cls.size, self.M
        if n * M > self.SINGLE_LIST_MAX:
            self._single = None
            return
        solvable = lat[:, 1] < self.solvable.take(cls, axis=1)  # (M, n)
        eff = np.where(solvable, steps, self._never_steps)
        eff_by_model = [eff[i].tolist() for i in range(M)]
        self._single = (lat[:, 2].tolist(), [eff_by_model[i] for i in self._model_l],
                        counts.tolist(), [0, *np.cumsum(per_slot).tolist()],
                        np.asarray(harvest).tolist())

    def _sync_single(self) -> None:
        """Write the pending fast-path state (``single_state``) into the state arrays."""
        state, self.single_state = self.single_state, None
        if state is not None:
            d = self.__dict__
            for name, value in zip(SINGLE_STATE, state):
                d["_" + name][0] = value

    def step_single(self, mixture: np.ndarray | None = None, config: int | None = None,
                    thresholds: list[list[float]] | None = None
                    ) -> tuple[float, ...]:
        """Advance a single copy (B = 1) by one slot; the fast path of :meth:`step`.

        Gives exactly (bit for bit) what ``step`` gives for the copy, as Python scalars, and
        updates the same state. Exactly one argument must be given.

        Args:
            mixture: Mixture weights per class, shape (C, J), as in :meth:`step`;
            config: Configuration every task of the slot goes to; or
            thresholds: Per class, the J - 1 assignment thresholds of the mixture
                (:func:`mixture_thresholds`).

        Returns:
            ``(harvest, demand, aux, waste, loss, storage, arrived, served, correct, dropped,
            value)``: the fields of :class:`SlotResult` of the copy (energies [kWh], counts
            [tasks], value of the correct answers).

        Valid while every task is served in its arrival slot; a feature that changes that
        must route copies through :meth:`step` (``self._single = None`` does so).
        """
        if self._single is None or self.B != 1:
            if thresholds is not None:
                raise ValueError("thresholds= needs the single-copy fast path")
            res = self.step(mixtures=None if mixture is None else mixture[None],
                            configs=None if config is None else np.array([config]))
            return res.single(0)
        t0, s_prev, mean, m2 = self._single_clock()
        u_l, eff_of, counts_l, start, _ = self._single
        k = start[t0]
        max_steps, model_of, budget_of = self._max_steps_l, self._model_l, self._budget_l
        # Per model: steps of the tasks it answers (each ran steps * omega tokens) and tokens
        # of the tasks it does not answer (each ran its budget). A task is correct iff its
        # effective steps e <= max_steps[j] of its configuration j.
        ok_steps = [0] * self.M
        failed_tokens = [0] * self.M
        correct = []
        if config is not None:
            kmax, i, b = max_steps[config], model_of[config], budget_of[config]
            effs = eff_of[config]
            n_fail = 0
            for n_c in counts_l[t0]:
                n_ok = 0
                for e in effs[k:k + n_c]:
                    if e <= kmax:
                        ok_steps[i] += e
                        n_ok += 1
                    else:
                        n_fail += 1
                correct.append(n_ok)
                k += n_c
            failed_tokens[i] = n_fail * b
        else:
            if thresholds is None:
                thresholds = mixture_thresholds(np.asarray(mixture, dtype=np.float64).tolist())
            for n_c, thr in zip(counts_l[t0], thresholds):
                n_ok = 0
                for kk in range(k, k + n_c):
                    j = bisect_right(thr, u_l[kk])  # = number of thresholds <= u
                    e = eff_of[j][kk]
                    if e <= max_steps[j]:
                        ok_steps[model_of[j]] += e
                        n_ok += 1
                    else:
                        failed_tokens[model_of[j]] += budget_of[j]
                correct.append(n_ok)
                k += n_c
        harvest, demand, aux, waste, loss, storage, value = self._close_single(
            t0, s_prev, mean, m2, ok_steps, failed_tokens, correct)
        n_arr = k - start[t0]
        return (harvest, demand, aux, waste, loss, storage, n_arr, n_arr, sum(correct), 0,
                value)

    def _single_clock(self) -> tuple[int, float, float, float]:
        """Copy 0's (slot, storage [kWh], running mean, running M2) as Python scalars, for a
        B = 1 fast-path step; raises if its episode has ended."""
        state = self.single_state
        if state is not None:
            t0, s_prev, _, _, _, _, mean, m2 = state
        else:
            d = self.__dict__
            t0, s_prev = int(d["_t"][0]), float(d["_storage"][0])
            mean, m2 = float(d["_net_mean"][0]), float(d["_net_m2"][0])
        if t0 >= self.T:
            raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
        return t0, s_prev, mean, m2

    def _close_single(self, t0: int, s_prev: float, mean: float, m2: float,
                      answered_steps: list[int], other_tokens: list[int], correct: list[int]
                      ) -> tuple[float, ...]:
        """End copy 0's slot t0 on Python scalars, as :meth:`step` and :meth:`advance` do for
        the arrays: demand of the tokens run per model (the steps of its answered tasks times
        omega plus the tokens of the others), value of the correct answers per class, energy
        ledger, running statistics and clock (kept in ``single_state``).

        Returns:
            (harvest, demand, aux, waste, loss, new storage [kWh], value of the correct
            answers).
        """
        omega = self.omega
        energy_j = 0.0
        for jpt, x, f in zip(self._jpt, answered_steps, other_tokens):
            energy_j += jpt * (x * omega + f)  # J/token x tokens of the model
        demand = self.idle_kwh + energy_j / J_PER_KWH
        value = 0.0
        for v, n in zip(self._vals, correct):
            value += v * n
        harvest = self._single[4][t0]
        if self._lossless:  # _ledger_scalar written out for unit efficiencies
            y = s_prev + harvest - demand
            aux = 0.0 if 0.0 > -y else -y
            over = y - self.s_max
            waste = 0.0 if 0.0 > over else over
            pos = 0.0 if 0.0 > y else y
            storage = self.s_max if self.s_max < pos else pos
            loss = 0.0
        else:
            aux, waste, loss, storage = self._ledger_scalar(s_prev, harvest, demand)
        net = (harvest - demand) / self.ref_demand_kwh
        delta = net - mean
        mean = mean + delta / float(t0 + 1)
        m2 = m2 + delta * (net - mean)
        self.single_state = (t0 + 1, storage, harvest, demand, aux, waste, mean, m2)
        return harvest, demand, aux, waste, loss, storage, value

    def _ledger_scalar(self, s: float, h: float, d: float) -> tuple[float, float, float, float]:
        """:meth:`_ledger` with efficiencies below 1 on Python floats, operation for
        operation (np.maximum(a, b) is ``a if a > b else b`` and np.minimum(a, b) is
        ``a if a < b else b``, signed zeros included); :meth:`_close_single` writes out the
        lossless case the same way."""
        s_max = self.s_max
        eta_c, eta_d = self.eta_c, self.eta_d
        net = h - d
        surplus = net if net > 0.0 else 0.0
        deficit = -net if -net > 0.0 else 0.0
        room = s_max - s
        lim = room / eta_c
        charged_in = surplus if surplus < lim else lim
        stored = charged_in * eta_c
        waste = surplus - charged_in
        avail = s * eta_d
        delivered = deficit if deficit < avail else avail
        drawn = delivered / eta_d
        aux = deficit - delivered
        y = s + stored - drawn
        pos = 0.0 if 0.0 > y else y
        storage = s_max if s_max < pos else pos
        loss = (charged_in - stored) + (drawn - delivered)
        return aux, waste, loss, storage

    def _ledger(self, s: np.ndarray, h: np.ndarray, d: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Energy balance of one slot; returns (aux, waste, loss, new storage) [kWh]."""
        if self.eta_c == 1.0 and self.eta_d == 1.0:
            y = s + h - d
            aux = np.maximum(0.0, -y)
            waste = np.maximum(0.0, y - self.s_max)
            storage = np.minimum(self.s_max, np.maximum(0.0, y))
            return aux, waste, np.zeros_like(y), storage
        net = h - d
        surplus = np.maximum(net, 0.0)
        deficit = np.maximum(-net, 0.0)
        # Charging: eta_c of the surplus reaches the store, up to its free room.
        room = self.s_max - s
        charged_in = np.minimum(surplus, room / self.eta_c)  # energy taken from the surplus
        stored = charged_in * self.eta_c
        waste = surplus - charged_in
        # Discharging: the store delivers eta_d of what it gives up.
        delivered = np.minimum(deficit, s * self.eta_d)
        drawn = delivered / self.eta_d
        aux = deficit - delivered
        storage = np.minimum(self.s_max, np.maximum(0.0, s + stored - drawn))
        loss = (charged_in - stored) + (drawn - delivered)
        return aux, waste, loss, storage

    # ------------------------------------------------------------------ features
    def net_std(self) -> np.ndarray:
        """Running standard deviation of (H - D) / D_ref over the episode so far."""
        n = np.maximum(self.t, 1).astype(np.float64)
        return np.sqrt(np.maximum(self.net_m2 / n, 0.0))


class _Segments:
    """The tasks of a slot as one flat array, copy after copy: copy b holds the ``n[b]``
    entries from ``starts[b]``; :meth:`sums_by_group` sums per copy and group."""

    def __init__(self, starts: np.ndarray, n: np.ndarray, total: int) -> None:
        self.n = n
        self.total = total
        self.empty = n == 0
        self.any_empty = bool(self.empty.any())
        # np.add.reduceat sums from each start to the next: only non-empty copies' starts.
        self.starts = starts[~self.empty] if self.any_empty else starts

    def sums_by_group(self, x: np.ndarray, group: np.ndarray, n_groups: int, bound: int
                      ) -> np.ndarray:
        """Per-copy sums of non-negative integers (or bools) x per group in [0, n_groups),
        shape (B, n_groups), int64; ``bound`` is an upper bound of any copy's sum.

        Each copy's sums are bit fields of one int64 sum (x shifted by its group's field)
        when n_groups fields of ``bound`` fit in 63 bits; otherwise a bincount. Exact either
        way.
        """
        B = self.n.size
        if self.total == 0:
            return np.zeros((B, n_groups), dtype=np.int64)
        width = max(int(bound), 1).bit_length()
        if width * n_groups > 63:
            copy = np.repeat(np.arange(B), self.n)  # float64 bincount of ints is exact < 2**53
            return np.bincount(copy * n_groups + group, weights=x, minlength=B * n_groups
                               ).astype(np.int64).reshape(B, n_groups)
        shifted = np.left_shift(x, np.multiply(group, width, dtype=np.int64), dtype=np.int64)
        sums = np.add.reduceat(shifted, self.starts)
        if self.any_empty:
            full = np.zeros(B, dtype=np.int64)
            full[~self.empty] = sums
            sums = full
        fields = sums[:, None] >> _field_shifts(n_groups, width)
        fields &= (1 << width) - 1
        return fields


@functools.lru_cache(maxsize=64)
def _field_shifts(n_groups: int, width: int) -> np.ndarray:
    """Bit offsets of the n_groups fields of ``width`` bits in :meth:`_Segments.sums_by_group`."""
    return np.arange(n_groups, dtype=np.int64) * width


def _sum_columns(x: np.ndarray) -> np.ndarray:
    """Row sums of a (B, K) float array added column by column (x[:, 0] + x[:, 1] + ...).

    The same sequential order as accumulating ``total += x[:, k]`` from zero for
    non-negative entries (0.0 + x == x), without a per-row reduction loop.
    """
    total = x[:, 0].copy()
    for k in range(1, x.shape[1]):
        total = total + x[:, k]
    return total


def mixture_thresholds(rows: list[list[float]]) -> list[list[float]]:
    """Assignment thresholds of mixture weight rows, on Python floats.

    For each row of non-negative weights ``w`` (positive sum), the J - 1 values
    ``(w[0] + ... + w[q]) / (w[0] + ... + w[J-1])`` for q < J - 1, summed left to right as
    the batched step sums them. A task with assignment quantile u goes to configuration
    ``bisect_right(thresholds, u)``.
    """
    out = []
    for w in rows:
        cum = list(accumulate(w))
        total = cum.pop()
        out.append([x / total for x in cum])
    return out
