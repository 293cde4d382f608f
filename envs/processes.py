"""Exogenous random processes: task arrivals, harvested baseline energy, task latents.

Each process takes its own ``numpy.random.Generator`` (a child of the environment's
``np_random``) and draws a whole episode at once, before any action is taken. Because the
number of variates drawn never depends on actions, two policies run on one seed face the
same tasks and the same supply (common random numbers).

Imports numpy only. New processes register themselves in :data:`ARRIVAL_PROCESSES` or
:data:`HARVEST_PROCESSES` under the name used by ``FleetConfig.arrival_process`` /
``FleetConfig.harvest_process``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from envs.config import ARRIVAL_PROCESS_FIELDS, HARVEST_PROCESS_FIELDS, FleetConfig


class ArrivalProcess(Protocol):
    """Draws task arrivals per slot and class."""

    #: Largest expected number of arrivals in one slot (all classes) [tasks/slot].
    max_rate: float
    #: FleetConfig fields that only this kind of process reads (optional class attribute;
    #: the config refuses them away from their defaults with a process that ignores them).
    config_fields: tuple[str, ...]

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        """Return arrival counts, shape ``(horizon, C)``, dtype int64 [tasks]."""


class HarvestProcess(Protocol):
    """Draws the harvested baseline energy per slot."""

    #: Mean harvest per slot [kWh].
    mean_kwh: float
    #: Variance of the harvest in one slot [kWh^2].
    var_kwh2: float
    #: FleetConfig fields that only this kind of process reads (see ArrivalProcess).
    config_fields: tuple[str, ...]

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        """Return the harvest of every slot, shape ``(horizon,)``, float64 [kWh]."""


class PoissonArrivals:
    """I.i.d. Poisson arrivals (the paper's model): class c gets Poisson(rate * phi_c) per slot."""

    config_fields = ARRIVAL_PROCESS_FIELDS["poisson"]

    def __init__(self, config: FleetConfig) -> None:
        self.rates = config.arrival_rate * np.asarray(config.class_shares, dtype=np.float64)
        self.max_rate = float(config.arrival_rate)

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        return rng.poisson(self.rates, size=(horizon, self.rates.size)).astype(np.int64)


class GammaHarvest:
    """I.i.d. gamma-distributed harvest with a given mean and coefficient of variation.

    A coefficient of variation of 0 gives a constant supply (no variates drawn).
    """

    config_fields = HARVEST_PROCESS_FIELDS["iid_gamma"]

    def __init__(self, config: FleetConfig, mean_kwh: float) -> None:
        self.mean_kwh = float(mean_kwh)
        self.cv = float(config.harvest_cv)
        self.var_kwh2 = (self.cv * self.mean_kwh) ** 2

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        if self.cv == 0.0 or self.mean_kwh == 0.0:
            return np.full(horizon, self.mean_kwh, dtype=np.float64)
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, self.mean_kwh / shape, size=horizon)


ARRIVAL_PROCESSES: dict[str, type] = {"poisson": PoissonArrivals}
HARVEST_PROCESSES: dict[str, type] = {"iid_gamma": GammaHarvest}

# Trace-driven processes (real solar, wind and request traces) live in their own module.
from envs import trace_processes as _trace_processes  # noqa: E402

ARRIVAL_PROCESSES.update(_trace_processes.ARRIVAL_TRACES)
HARVEST_PROCESSES.update(_trace_processes.HARVEST_TRACES)


def make_arrival_process(config: FleetConfig) -> ArrivalProcess:
    """Instantiate the arrival process named by ``config.arrival_process``."""
    return ARRIVAL_PROCESSES[config.arrival_process](config)


def make_harvest_process(config: FleetConfig, mean_kwh: float) -> HarvestProcess:
    """Instantiate the harvest process named by ``config.harvest_process``.

    Args:
        config: The fleet config.
        mean_kwh: Target mean harvest per slot [kWh] (provisioning x reference demand).
    """
    return HARVEST_PROCESSES[config.harvest_process](config, mean_kwh)


#: Number of uniform latent variates drawn per task: step-count quantile, solvability
#: quantile, configuration-assignment quantile.
N_TASK_LATENTS = 3


def sample_task_latents(rng: np.random.Generator, n_tasks: int,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Draw the latent uniforms of ``n_tasks`` tasks, shape ``(n_tasks, 3)``, float32 in [0, 1).

    Column 0 fixes the task's step count under every model (inverse negative-binomial CDF,
    comonotone across models), column 1 its solvability under every model, column 2 the
    configuration a mixture assigns it to. Drawing them when the task arrives fixes its outcome
    under every configuration before any policy acts.

    Args:
        rng: The task generator.
        n_tasks: Number of tasks.
        out: Optional C-contiguous float32 array of shape ``(n_tasks, 3)`` to draw into (the
            same values as a new array).
    """
    if out is None:
        return rng.random((n_tasks, N_TASK_LATENTS), dtype=np.float32)
    if out.shape != (n_tasks, N_TASK_LATENTS):
        raise ValueError(f"out must have shape {(n_tasks, N_TASK_LATENTS)}, got {out.shape}")
    return rng.random(out=out, dtype=np.float32)


def poisson_upper(rate: float, tail: float = 1e-12) -> int:
    """Smallest n with P(Poisson(rate) > n) < tail (buffer sizing; numpy only)."""
    if rate <= 0:
        return 0
    if rate > 500:  # normal approximation, generous; the core grows its buffers if exceeded
        return int(rate + 10.0 * math.sqrt(rate) + 10)
    # Walk the pmf in log space from 0; rates are small enough here for a direct scan.
    n, log_p = 0, -rate
    cdf = math.exp(log_p)
    while 1.0 - cdf >= tail and n < 10 * rate + 1000:
        n += 1
        log_p += math.log(rate) - math.log(n)
        cdf += math.exp(log_p)
    return n
