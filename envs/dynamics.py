"""Batched simulator core: B independent copies of the fleet, stepped together.

No Gymnasium. A single environment is the case B = 1. Each copy owns its episode: arrivals,
harvest and every task's latent draws are generated at reset from the copy's own generators
(numpy), so a copy's trajectory does not depend on B or on the other copies. The per-task
work of a step and of a reset runs in the compiled kernel :mod:`envs.kernel`, one loop over
copies (sums over tasks in integer tokens, float terms in a fixed order).

Per slot and copy (MODEL.md section 4)::

    y   = S_{t-1} + H_t - D_t
    U_t = max(0, -y)                 auxiliary energy covers the shortfall
    W_t = max(0, y - S_max)          baseline energy that cannot be stored is wasted
    S_t = min(S_max, max(0, y))

With charge/discharge efficiencies below 1 the conversion losses are reported separately
(``loss_kwh``), and ``sum H - sum D = S_T - S_0 + sum W - sum U + sum loss`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs import kernel
from envs.bound import table
from envs.config import FleetConfig
from envs.layout import extra_feature_names
from envs.observation import V1_FEATURES, v1_static
from envs.outcomes import (
    J_PER_KWH,
    build_tables,
    config_moments,
    idle_energy_kwh,
    reference_demand_kwh,
)
from envs.processes import (
    make_arrival_process,
    make_harvest_process,
    poisson_upper,
    sample_task_latents,
)
from envs.reward import reward_weights


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



def _state_row(row: int, name: str) -> property:
    """State array ``name`` of :class:`FleetCore`, shape (B,): a row of the packed float state
    the kernel updates (assigning to it writes into the row)."""

    def get(self: FleetCore) -> np.ndarray:
        return self._fs[row]

    def set(self: FleetCore, value: np.ndarray) -> None:
        self._fs[row][...] = value

    return property(get, set, doc=f"State array ``{name}``, shape (B,).")


def _task_buffer(key: str, doc: str) -> property:
    """A (B, T, ...) view of the slot-major task buffer ``key`` of :class:`FleetCore`."""

    def get(self: FleetCore) -> np.ndarray:
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
        n_slot: (B, T) tasks arriving in each slot (all classes) [tasks].
        obs: (B, dim) observation of every copy after the last step or reset (float32).

    Raises:
        ValueError: If an episode's task buffers would exceed :attr:`MAX_EPISODE_BYTES`
            (``horizon`` x the most tasks a slot can hold, from ``arrival_rate``).
    """

    #: Largest task buffers of one copy's episode [bytes].
    MAX_EPISODE_BYTES = 2**30

    storage = _state_row(0, "storage")
    last_harvest = _state_row(1, "last_harvest")
    last_demand = _state_row(2, "last_demand")
    last_aux = _state_row(3, "last_aux")
    last_waste = _state_row(4, "last_waste")
    net_mean = _state_row(5, "net_mean")
    net_m2 = _state_row(6, "net_m2")
    harvest_prev = _state_row(7, "harvest_prev")
    harvest_trend = _state_row(8, "harvest_trend")

    def __init__(self, config: FleetConfig, batch_size: int = 1) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.config = config
        self.B = B = int(batch_size)
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
        self.omega = config.step_tokens
        self.s_max = float(config.storage_kwh)
        self.eta_c = float(config.charge_efficiency)
        self.eta_d = float(config.discharge_efficiency)
        k_cap = self.tables.n_max + 1
        self._k_dtype = np.int16 if k_cap < np.iinfo(np.int16).max else np.int32
        self.A = max(1, poisson_upper(self.arrival_process.max_rate))
        self._check_size(self.A)
        self._build_guides()
        #: Calls of :meth:`reset_copies` so far (observers key per-episode tables on it).
        self.resets = 0
        self._alloc(self.A)
        self._fs = np.zeros((len(kernel.STATE_ROWS), B))
        self.t = np.zeros(B, dtype=np.int64)
        self.harvest = np.zeros((B, self.T))
        self.arrivals = np.zeros((B, self.T, self.C), dtype=np.int64)
        self.n_slot = np.zeros((B, self.T), dtype=np.int64)
        #: (B, T, F) forecast features of every slot (F = 0 here; ``RealisticCore``).
        self.forecast = np.zeros((B, self.T, 0))
        self._rows = np.arange(B)
        self._pack()
        self._bind()

    def _check_size(self, a: int) -> None:
        cfg = self.config
        per_task = (1 if self.C < 127 else 2) + 8 + self.M * np.dtype(self._k_dtype).itemsize
        need = self.T * a * per_task
        if need > self.MAX_EPISODE_BYTES:
            raise ValueError(
                f"FleetConfig.horizon={cfg.horizon} with arrival_rate={cfg.arrival_rate} is too "
                f"large: an episode's task buffers need {need / 2**30:.1f} GiB per copy "
                f"({cfg.horizon} slots x up to {a} tasks per slot x {per_task} bytes), above the "
                f"limit of {self.MAX_EPISODE_BYTES / 2**30:.0f} GiB; lower horizon or "
                f"arrival_rate")

    def _pack(self) -> None:
        """Packed parameters and result buffers of the kernel (see :mod:`envs.kernel`)."""

        cfg = self.config
        d_ref = self.ref_demand_kwh
        rates = cfg.arrival_rate * np.asarray(cfg.class_shares, dtype=np.float64)
        #: 1 / class rate (0 for a class that never arrives): scales the arrival features.
        self.inv_rates = np.where(rates > 0, 1.0 / np.maximum(rates, 1e-300), 0.0)
        #: Mean harvest per slot that scales the harvest feature [kWh].
        self.h_ref = max(self.harvest_process.mean_kwh, 1e-12 * d_ref)
        #: Scale of the store feature of an unbounded store [kWh] (spaces.STORE_SCALE_SLOTS).
        self.s_ref = 12.0 * d_ref
        start_slot = cfg.trace_start_hour * 60.0 / cfg.slot_minutes
        t = np.arange(self.T + 1)
        phase = 2.0 * math.pi * (t + start_slot) / (24.0 * 60.0 / cfg.slot_minutes)
        store_mode = 2 if math.isinf(self.s_max) else (1 if self.s_max > 0 else 0)
        self.n_extra = len(extra_feature_names(cfg))
        v1 = v1_static(self) if cfg.observation_version >= 1 else ()
        self.dim = 10 + self.C + self.n_extra + (len(V1_FEATURES) if len(v1) else 0)
        self._ip, self._fp = kernel.pack_params(
            cfg, self.model_of, self.budget_of, self.solvable, self.j_per_token, self.values,
            self.idle_kwh, d_ref, self.h_ref, self.s_ref, self.inv_rates, reward_weights(self),
            np.sin(phase), np.cos(phase), store_mode, self.dim, J_PER_KWH, v1)
        B = self.B
        self.res_f = np.zeros((B, kernel.N_RES_F + 2 * self.J))
        self.res_i = np.zeros((B, kernel.N_RES_I + self.C + self.M), dtype=np.int64)
        self.obs = np.zeros((B, self.dim), dtype=np.float32)
        #: The configuration of each copy in a ``MODE_CONFIG`` step (bound in the kernel table).
        self._configs = np.zeros(B, dtype=np.int64)
        self._no_configs = self._configs
        self._no_act = np.zeros(1)

    def _bind(self) -> None:
        """The table of the arrays the kernel step reads and writes (``envs.bound``); called
        whenever one of them is allocated."""
        self._tab = table([
            self._ip, self._fp, self._fs, self.t, self.harvest, self.arrivals, self._us_tm,
            self._ua_tm, self._steps_tm, self._configs, self.res_f, self.res_i, self.obs,
            self.forecast])
        #: The kernel entry of this core's step-count type (int16 or int32).
        self._step = (kernel.step_bound16 if self._steps_tm.dtype == np.int16
                      else kernel.step_bound32)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in ("_tab", "_step", "_qtab", "_qstep"):  # rebuilt by _bind
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()  # a copy's table must name its own arrays

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
        self._check_size(a)
        old = (self.cls, self.u_solve, self.u_assign, self.steps)
        a_old = self.A
        self._alloc(a)
        self.cls[:, :, :a_old] = old[0]
        self.u_solve[:, :, :a_old] = old[1]
        self.u_assign[:, :, :a_old] = old[2]
        self.steps[:, :, :a_old] = old[3]
        self.A = a
        self._bind()

    # ------------------------------------------------------------------ reset
    #: Most bins per (model, class) of the guide tables of the step-count inversion.
    GUIDE_BINS = 16384

    def _guide_bins(self) -> int:
        """Bins G per (model, class): a power of two (so u G is exact for a float32 u) of
        about four per CDF entry, at least 256 and at most :attr:`GUIDE_BINS`; small tables
        stay in the CPU's caches, and any G gives the same step counts."""
        want = 4 * (self.tables.n_max + 1)
        return min(self.GUIDE_BINS, max(256, 1 << (want - 1).bit_length()))

    def _build_guides(self) -> None:
        """Guide tables that make the inverse-CDF step draw O(1) per task (exact).

        For class c, model i and bin g = floor(u G): ``_k0[i, c G + g]`` is the step count
        ``m_c + searchsorted(cdf[i][c], g / G)`` (the answer for u = g / G) and
        ``_cdf_at[i, c G + g]`` the CDF value at that index. A bin holding at most one CDF
        entry then gives ``k0 + (cdf_at < u)`` exactly; bins holding several (rare, in the
        tails) are marked by a NaN ``cdf_at`` and use a binary search in the CDF
        (``_cdf``, the CDF of (i, c) at ``_cdf_off[i C + c]`` up to ``_cdf_off[i C + c + 1]``).
        """
        G, C, M = self._guide_bins(), self.C, self.M
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
        # Model-major (M, C G): a draw reads one row per model.
        self._k0 = np.ascontiguousarray(k0.reshape(C * G, M).T.astype(self._k_dtype))
        # The quantiles u are float32, so ``cdf_at < u`` (float64) equals ``at32 < u`` with
        # at32 the largest float32 <= cdf_at: if cdf_at is a float32 they are equal, else no
        # float32 lies strictly between at32 and cdf_at. Half the bytes to read; NaN stays.
        at32 = cdf_at.astype(np.float32)
        high = at32.astype(np.float64) > cdf_at
        at32[high] = np.nextafter(at32[high], np.float32(-np.inf))
        self._cdf_at = np.ascontiguousarray(at32.reshape(C * G, M).T)
        flat = [self.tables.cdf[i][c] for i in range(M) for c in range(C)]
        self._cdf = np.concatenate(flat).astype(np.float64)
        self._cdf_off = np.concatenate([[0], np.cumsum([x.size for x in flat])]).astype(np.int64)

    def reset_copy(self, b: int, arrivals_rng: np.random.Generator,
                   harvest_rng: np.random.Generator, tasks_rng: np.random.Generator) -> None:
        """Start a new episode in copy ``b``, drawing it from the three generators."""
        self.reset_copies([b], [(arrivals_rng, harvest_rng, tasks_rng)])

    def reset_copies(self, copies: Sequence[int],
                     rngs: Sequence[tuple[np.random.Generator, np.random.Generator,
                                          np.random.Generator]]) -> None:
        """Start a new episode in each of ``copies``, copy ``copies[r]`` drawing from the
        generators ``rngs[r] = (arrivals_rng, harvest_rng, tasks_rng)``.

        Each copy draws its arrivals (T, C), its harvest (T,) and the three latent uniforms of
        each of its tasks (float32, in arrival order) from its own generators, so the result
        does not depend on which copies reset together; the kernel then writes the tasks into
        the task buffers.
        """
        if len(copies) != len(rngs):
            raise ValueError(f"copies and rngs must have the same length, got {len(copies)} "
                             f"and {len(rngs)}")
        self.resets += 1
        for lo in range(0, len(copies), self.RESET_CHUNK):
            self._reset_chunk(list(copies[lo:lo + self.RESET_CHUNK]),
                              rngs[lo:lo + self.RESET_CHUNK])

    #: Copies whose tasks are drawn and written together by :meth:`reset_copies` (bounds the
    #: memory of the draws).
    RESET_CHUNK = 256

    def _reset_chunk(self, copies: list[int], rngs: Sequence[tuple[np.random.Generator, ...]]
                     ) -> None:
        T = self.T
        counts_of, harvest_of, lats = [], [], []
        for arrivals_rng, harvest_rng, tasks_rng in rngs:
            counts = self.arrival_process.sample(arrivals_rng, T)
            counts_of.append(counts)
            harvest_of.append(self.harvest_process.sample(harvest_rng, T))
            lats.append(sample_task_latents(tasks_rng, int(counts.sum())))
        if len(copies) == 1:  # views, no copies
            counts, harvest, lat = counts_of[0][None], harvest_of[0][None], lats[0]
        else:
            counts, harvest, lat = np.stack(counts_of), np.stack(harvest_of), np.concatenate(lats)
        rows = np.asarray(copies, dtype=np.int64)
        while True:
            most = kernel.start_episodes(
                self._ip, self._fp, rows, counts, harvest, lat, self._cls_tm, self._us_tm,
                self._ua_tm, self._steps_tm, self._k0, self._cdf_at, self._cdf, self._cdf_off,
                self.arrivals, self.n_slot, self.harvest, self.t, self._fs, self.forecast,
                self.obs)
            if not most:
                break
            self._grow(most)

    # ------------------------------------------------------------------ step
    def current_arrivals(self) -> np.ndarray:
        """Arrivals per class in each copy's current slot, shape (B, C) [tasks]."""
        t = np.minimum(self.t, self.T - 1)
        return self.arrivals[self._rows, t]

    def assign(self, mixtures: np.ndarray) -> np.ndarray:
        """Configuration index of every task slot of the current slot, shape (B, A).

        Args:
            mixtures: Non-negative mixture weights per class, shape (B, C, J), each row with a
                positive sum: a task goes to the number of the row's thresholds (running sums
                over the total, see :meth:`step`) at or below its assignment quantile.
        """
        rows, t = self._rows, np.minimum(self.t, self.T - 1)
        cls = np.minimum(self.cls[rows, t], self.C - 1).astype(np.intp)  # (B, A)
        w = np.asarray(mixtures, dtype=np.float64)
        cum = np.cumsum(w, axis=-1)
        thr = cum[..., :-1] / cum[..., -1:]  # (B, C, J - 1)
        u = self.u_assign[rows, t].astype(np.float64)
        return (u[..., None] >= thr[rows[:, None], cls]).sum(axis=-1)

    def run(self, mode: int, act: np.ndarray, configs: np.ndarray) -> int:
        """One kernel step of every copy (:func:`envs.kernel.step`); results in ``res_f``,
        ``res_i`` and ``obs``. Returns the kernel's code (``kernel.OK`` on success).

        ``configs`` (B,) is read in ``MODE_CONFIG`` only (copied into the bound buffer
        ``_configs`` unless it is that buffer)."""
        if configs is not self._configs:
            self._configs[...] = configs
        return self._step(self._tab, mode, act)[0]

    def step(self, mixtures: np.ndarray | None = None, configs: np.ndarray | None = None
             ) -> SlotResult:
        """Advance every copy by one slot.

        Exactly one of ``mixtures`` or ``configs`` must be given.

        Args:
            mixtures: Non-negative weights, shape (B, C, J), each row with a positive sum: a
                task of class c goes to configuration j with probability
                ``mixtures[b, c, j] / mixtures[b, c].sum()``: its latent assignment quantile u
                picks the j with ``thr[j-1] <= u < thr[j]``, where ``thr`` holds the running
                sums of the row, left to right, divided by its total.
            configs: Shape (B,), integer: every task of the slot goes to that configuration.
        """
        B, C, J = self.B, self.C, self.J
        if configs is not None:
            cfgs = np.ascontiguousarray(configs, dtype=np.int64).reshape(B)
            if cfgs.size and not (cfgs.min() >= 0 and cfgs.max() < J):
                raise ValueError(f"configs must be integers in [0, {J - 1}], got {configs!r}")
            code = self.run(kernel.MODE_CONFIG, self._no_act, cfgs)
        else:
            w = np.ascontiguousarray(mixtures, dtype=np.float64)
            if w.shape != (B, C, J):
                raise ValueError(f"mixtures must have shape {(B, C, J)}, got {w.shape}")
            code = self.run(kernel.MODE_WEIGHTS, w.reshape(-1), self._no_configs)
        if code == kernel.ENDED:
            raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
        return self.result()

    def result(self) -> SlotResult:
        """The :class:`SlotResult` of the last kernel step (new arrays)."""
        rf = self.res_f[:, :kernel.N_RES_F].T.copy()
        ri = self.res_i.T.copy()
        C, n = self.C, kernel.N_RES_I
        return SlotResult(
            harvest_kwh=rf[0], demand_kwh=rf[1], aux_kwh=rf[2], waste_kwh=rf[3],
            loss_kwh=rf[4], storage_kwh=rf[5], arrived=ri[0], served=ri[1], correct=ri[2],
            dropped=ri[3], value_correct=rf[6], correct_by_class=ri[n:n + C].T.copy(),
            tokens_by_model=ri[n + C:].T.copy())

    def observe(self) -> np.ndarray:
        """Observation of every copy into :attr:`obs` (see ``envs.spaces.Observer``; the
        queue lengths of a ``RealisticCore`` are left to it); returns :attr:`obs`."""
        kernel.observe(self._ip, self._fp, self._fs, self.t, self.arrivals, self.forecast,
                       self.obs)
        return self.obs

    # ------------------------------------------------------------------ features
    def net_std(self) -> np.ndarray:
        """Running standard deviation of (H - D) / D_ref over the episode so far."""
        n = np.maximum(self.t, 1).astype(np.float64)
        return np.sqrt(np.maximum(self.net_m2 / n, 0.0))
