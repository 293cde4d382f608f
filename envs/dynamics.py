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

from dataclasses import dataclass

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
        self.omega = config.step_tokens
        self.s_max = float(config.storage_kwh)
        self.eta_c = float(config.charge_efficiency)
        self.eta_d = float(config.discharge_efficiency)
        k_cap = self.tables.n_max + 1
        self._k_dtype = np.int16 if k_cap < np.iinfo(np.int16).max else np.int32
        self.A = max(1, poisson_upper(self.arrival_process.max_rate))
        self._alloc(self.A)
        B = self.B
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
        self._rows = np.arange(B)

    # ------------------------------------------------------------------ buffers
    def _alloc(self, a: int) -> None:
        B, T = self.B, self.T
        self.cls = np.full((B, T, a), self.C, dtype=np.int8 if self.C < 127 else np.int16)
        self.u_solve = np.zeros((B, T, a), dtype=np.float32)
        self.u_assign = np.zeros((B, T, a), dtype=np.float32)
        self.steps = np.zeros((B, T, a, self.M), dtype=self._k_dtype)

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
    def reset_copy(self, b: int, arrivals_rng: np.random.Generator,
                   harvest_rng: np.random.Generator, tasks_rng: np.random.Generator) -> None:
        """Start a new episode in copy ``b``, drawing it from the three generators."""
        cfg, T, C = self.config, self.T, self.C
        counts = np.asarray(self.arrival_process.sample(arrivals_rng, T), dtype=np.int64)
        harvest = np.asarray(self.harvest_process.sample(harvest_rng, T), dtype=np.float64)
        per_slot = counts.sum(axis=1)
        n_tasks = int(per_slot.sum())
        lat = sample_task_latents(tasks_rng, n_tasks)
        if per_slot.size and int(per_slot.max()) > self.A:
            self._grow(int(per_slot.max()))
        slot = np.repeat(np.arange(T), per_slot)
        start = np.concatenate([[0], np.cumsum(per_slot)[:-1]])
        pos = np.arange(n_tasks) - np.repeat(start, per_slot)
        cls = np.repeat(np.tile(np.arange(C), T), counts.ravel())
        steps = np.empty((n_tasks, self.M), dtype=self._k_dtype)
        u_steps = lat[:, 0].astype(np.float64)
        k_cap = self.tables.n_max + 1
        for c, m in enumerate(cfg.class_skills):
            sel = cls == c
            u_c = u_steps[sel]
            for i in range(self.M):
                cdf = self.tables.cdf[i][c]
                k = m + np.searchsorted(cdf, u_c, side="left")
                steps[sel, i] = np.minimum(k, k_cap)
        self.cls[b].fill(C)
        self.cls[b, slot, pos] = cls
        self.u_solve[b].fill(0.0)
        self.u_solve[b, slot, pos] = lat[:, 1]
        self.u_assign[b].fill(0.0)
        self.u_assign[b, slot, pos] = lat[:, 2]
        self.steps[b].fill(0)
        self.steps[b, slot, pos] = steps
        self.arrivals[b] = counts
        self.harvest[b] = harvest
        self.t[b] = 0
        self.storage[b] = cfg.initial_storage_kwh
        self.last_harvest[b] = 0.0
        self.last_demand[b] = 0.0
        self.last_aux[b] = 0.0
        self.last_waste[b] = 0.0
        self.net_mean[b] = 0.0
        self.net_m2[b] = 0.0

    # ------------------------------------------------------------------ step
    def current_arrivals(self) -> np.ndarray:
        """Arrivals per class in each copy's current slot, shape (B, C) [tasks]."""
        t = np.minimum(self.t, self.T - 1)
        return self.arrivals[self._rows, t]

    def assign(self, mixtures: np.ndarray) -> np.ndarray:
        """Configuration index of every task slot of the current slot, shape (B, A).

        Args:
            mixtures: Mixture weights per class, shape (B, C, J), rows summing to 1.
        """
        rows, t = self._rows, self.t
        cls = self.cls[rows, t].astype(np.intp)
        np.minimum(cls, self.C - 1, out=cls)
        cum = np.cumsum(mixtures, axis=-1)[:, :, :-1]  # (B, C, J-1)
        cum_task = cum[rows[:, None], cls]  # (B, A, J-1)
        u = self.u_assign[rows, t]
        return (u[..., None] >= cum_task).sum(axis=-1)

    def step(self, mixtures: np.ndarray | None = None, configs: np.ndarray | None = None
             ) -> SlotResult:
        """Advance every copy by one slot.

        Exactly one of ``mixtures`` (shape (B, C, J), rows summing to 1: each task of class c
        goes to configuration j with probability mixtures[b, c, j], drawn from its latent
        assignment quantile) or ``configs`` (shape (B,), integer: every task of the slot goes
        to that configuration) must be given.
        """
        if np.any(self.t >= self.T):
            raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
        rows, t = self._rows, self.t
        cls_raw = self.cls[rows, t]
        valid = cls_raw < self.C
        if configs is not None:
            j = np.broadcast_to(np.asarray(configs, dtype=np.intp)[:, None], cls_raw.shape)
        else:
            j = self.assign(mixtures)
        cls = np.minimum(cls_raw, self.C - 1).astype(np.intp)
        i = self.model_of[j]
        budget = self.budget_of[j]
        k = np.take_along_axis(self.steps[rows, t], i[..., None], axis=-1)[..., 0]
        solv = self.u_solve[rows, t] < self.solvable[i, cls]
        step_tok = self.omega * k.astype(np.int64)
        finished = solv & (step_tok <= budget)
        tokens = np.where(finished, step_tok, budget)
        tokens *= valid
        correct = finished & valid

        tokens_by_model = np.zeros((self.B, self.M), dtype=np.int64)
        demand = np.full(self.B, self.idle_kwh)
        energy_j = np.zeros(self.B)
        for m in range(self.M):
            tok_m = np.where(i == m, tokens, 0).sum(axis=1)
            tokens_by_model[:, m] = tok_m
            energy_j += self.j_per_token[m] * tok_m
        demand += energy_j / J_PER_KWH
        correct_by_class = np.zeros((self.B, self.C), dtype=np.int64)
        value = np.zeros(self.B)
        for c in range(self.C):
            n_c = (correct & (cls_raw == c)).sum(axis=1)
            correct_by_class[:, c] = n_c
            value += self.values[c] * n_c
        arrived = valid.sum(axis=1)

        harvest = self.harvest[rows, t]
        aux, waste, loss, storage = self._ledger(self.storage, harvest, demand)

        self.storage = storage
        self.last_harvest = harvest
        self.last_demand = demand
        self.last_aux = aux
        self.last_waste = waste
        net = (harvest - demand) / self.ref_demand_kwh
        n = (self.t + 1).astype(np.float64)
        delta = net - self.net_mean
        self.net_mean = self.net_mean + delta / n
        self.net_m2 = self.net_m2 + delta * (net - self.net_mean)
        self.t = self.t + 1
        return SlotResult(
            harvest_kwh=harvest, demand_kwh=demand, aux_kwh=aux, waste_kwh=waste,
            loss_kwh=loss, storage_kwh=storage, arrived=arrived, served=arrived.copy(),
            correct=correct.sum(axis=1), dropped=np.zeros(self.B, dtype=np.int64),
            value_correct=value, correct_by_class=correct_by_class,
            tokens_by_model=tokens_by_model)

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
