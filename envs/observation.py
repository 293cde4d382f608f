"""The ``-v1`` observation: the ``-v0`` features plus every public quantity a heuristic reads.

The heuristics of ``agents.heuristics`` read the public config (mean harvest, the store's
capacity, the volatility of supply and demand, the horizon) as well as the observation, and
``variance_feedback`` on queue envs also keeps a harvest trend from its own history. A
``-v1`` id (``FleetConfig.observation_version = 1``) appends these to the ``-v0`` vector, in
units a network can use (reference demand D_ref per slot as the energy unit):

| name | meaning | range |
|---|---|---|
| store_log | log(1 + S / D_ref): the store in slots of reference demand | [0, inf) |
| capacity_log | log(1 + S_max / D_ref); 0 for an unbounded store | [0, inf) |
| capacity_finite | 1 if the store is bounded, else 0 | {0, 1} |
| harvest_mean | mean harvest per slot / D_ref | [0, inf) |
| harvest_cv | standard deviation / mean of the slot harvest (reference months) | [0, inf) |
| demand_std | standard deviation of the slot demand of the reference mixture / D_ref | [0, inf) |
| arrival_rate_log | log(1 + mean tasks per slot) | [0, inf) |
| slots_left | slots left in the episode / 288 (days of 5-minute slots) | [0, inf) |
| harvest_trend | running average of the change of ``harvest_last`` (weight 0.3) | (-inf, inf) |

The store is log-scaled rather than clipped: the decisions that matter happen within a few
slots of demand of an empty (or full) store, where log(1 + x) is nearly x (slope 1 at 0), yet
a store of hundreds of slots (over-supply, unbounded) stays distinguishable (a flat squash
such as the ``-v0`` ``S / (S + 12 D_ref)`` is 0.96 at 300 slots and 0.99 at 1200). The trend
is the one ``variance_feedback`` keeps on queue envs (weight ``trend_weight`` = 0.3, reset at
the episode start; its first change is from the reset observation).

Every feature is computed by one numpy expression for all copies from the core's state arrays
(a single env is a core of one copy), so a single env and a vector env give the same bits.
"""

from __future__ import annotations

import math

import numpy as np

from envs.config import FleetConfig
from envs.outcomes import config_moments, reference_demand_kwh, reference_mixture

#: Names of the features a ``-v1`` observation appends to the ``-v0`` vector, in order.
V1_FEATURES: tuple[str, ...] = ("store_log", "capacity_log", "capacity_finite", "harvest_mean",
                                "harvest_cv", "demand_std", "arrival_rate_log", "slots_left",
                                "harvest_trend")
#: Weight of the newest change in ``harvest_trend`` (``variance_feedback``'s trend_weight).
TREND_WEIGHT = 0.3
#: Slots of the ``slots_left`` unit (one day of 5-minute slots).
DAY_SLOTS = 288.0


def v1_feature_names(config: FleetConfig) -> list[str]:
    """Names appended to the ``-v0`` observation (none for ``observation_version`` 0)."""
    return list(V1_FEATURES) if config.observation_version >= 1 else []


def v1_bounds(config: FleetConfig, big: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 bounds of the appended features (``big`` stands for infinity)."""
    n = len(v1_feature_names(config))
    low = np.zeros(n, dtype=np.float32)
    high = np.full(n, big, dtype=np.float32)
    if n:
        high[V1_FEATURES.index("capacity_finite")] = 1.0
        low[V1_FEATURES.index("harvest_trend")] = -big
    return low, high


def demand_std_kwh(config: FleetConfig) -> float:
    """Standard deviation of the slot demand under the reference mixture [kWh]: a compound
    Poisson sum, variance = rate x E[E^2] over the class shares and configurations."""
    m = config_moments(config)
    second = m.energy_var_kwh2 + m.energy_mean_kwh**2
    phi = np.asarray(config.class_shares, dtype=np.float64)[:, None]
    return math.sqrt(config.arrival_rate * float(np.sum(phi * reference_mixture(config)
                                                        * second)))


class V1Features:
    """The appended features of every copy of a core (its config's public quantities, the
    store and time, and the per-copy harvest trend)."""

    def __init__(self, core) -> None:
        cfg = core.config
        self.core = core
        d_ref = reference_demand_kwh(cfg, core.moments)
        self.inv_d_ref = 1.0 / d_ref
        proc = core.harvest_process
        mean = float(proc.mean_kwh)
        var = float(getattr(proc, "var_kwh2", 0.0))
        s_max = cfg.storage_kwh
        finite = math.isfinite(s_max)
        #: The features the config fixes, as float64 (capacity_log .. arrival_rate_log).
        self.static = np.array([
            math.log1p(s_max / d_ref) if finite else 0.0,
            1.0 if finite else 0.0,
            mean / d_ref,
            math.sqrt(var) / mean if mean > 0 else 0.0,
            demand_std_kwh(cfg) / d_ref,
            math.log1p(cfg.arrival_rate),
        ])
        self.horizon = cfg.horizon
        self.h_ref = max(mean, 1e-12 * d_ref)  # the -v0 harvest_last unit
        B = core.B
        self.prev_t = np.full(B, -1, dtype=np.int64)
        self.prev_h = np.zeros(B)
        self.trend = np.zeros(B)

    def compute(self, t: np.ndarray, storage: np.ndarray, last_harvest: np.ndarray,
                rows: np.ndarray | None = None) -> np.ndarray:
        """Features (n, 9) of copies ``rows`` (all if None) at slot ``t`` with store
        ``storage`` [kWh] and previous-slot harvest ``last_harvest`` [kWh] (arrays (n,)).

        Updates the harvest trend of a copy once per slot (a repeated call at the same slot
        returns the same features; slot 0 restarts the trend).
        """
        idx = slice(None) if rows is None else rows
        t = np.asarray(t, dtype=np.int64)
        h = np.asarray(last_harvest, dtype=np.float64) / self.h_ref
        prev_t, prev_h, trend = self.prev_t[idx], self.prev_h[idx], self.trend[idx]
        new = t != prev_t
        start = new & (t == 0)
        step = new & (t != 0)
        trend = np.where(start, 0.0, np.where(
            step, (1.0 - TREND_WEIGHT) * trend + TREND_WEIGHT * (h - prev_h), trend))
        prev_h = np.where(new, h, prev_h)
        self.trend[idx], self.prev_h[idx], self.prev_t[idx] = trend, prev_h, t
        n = t.shape[0]
        out = np.empty((n, len(V1_FEATURES)))
        out[:, 0] = np.log1p(np.asarray(storage, dtype=np.float64) * self.inv_d_ref)
        out[:, 1:7] = self.static
        out[:, 7] = (self.horizon - t) / DAY_SLOTS
        out[:, 8] = trend
        return out

    def single(self, out: np.ndarray) -> None:
        """:meth:`compute` of a one-copy core's copy 0 into ``out`` (9,) float32, on Python
        floats: the same operations in the same order (bit-identical; ``store_log`` by the same
        ``np.log1p``), without a dozen array calls a step."""
        core = self.core
        t = int(core.t[0])
        h = float(core.last_harvest[0]) / self.h_ref
        trend = float(self.trend[0])
        if t != int(self.prev_t[0]):
            if t == 0:
                trend = 0.0
            else:
                trend = (1.0 - TREND_WEIGHT) * trend + TREND_WEIGHT * (h - float(self.prev_h[0]))
            self.trend[0], self.prev_h[0], self.prev_t[0] = trend, h, t
        out[0] = np.log1p(core.storage[0] * self.inv_d_ref)
        out[1:7] = self.static
        out[7] = (self.horizon - t) / DAY_SLOTS
        out[8] = trend

    def batch(self) -> np.ndarray:
        """Features of every copy from the core's arrays, shape (B, 9) float64."""
        core = self.core
        return self.compute(core.t, core.storage, core.last_harvest)


class V1Observer:
    """An observer of the ``-v1`` layout: the ``-v0`` observer's vector with
    :data:`V1_FEATURES` appended (the same ``observe`` / ``current`` interface)."""

    def __init__(self, base) -> None:
        self.base = base
        self.core = base.core
        self.features = V1Features(base.core)
        self.dim = base.dim + len(V1_FEATURES)

    def observe(self) -> np.ndarray:
        """Observation of every copy from the core's state, shape (B, dim), float32 (a new
        array)."""
        return np.concatenate([self.base.observe(),
                               self.features.batch().astype(np.float32)], axis=1)

    def current(self) -> np.ndarray:
        """Observation of every copy as the core's last step or reset left it, shape
        (B, dim), float32 (a new array)."""
        if self.core.B == 1:  # a single env's step: the scalar form of the features
            base = self.base.current()
            out = np.empty((1, self.dim), dtype=np.float32)
            n0 = self.base.dim
            out[0, :n0] = base[0]
            self.features.single(out[0, n0:])
            return out
        return np.concatenate([self.base.current(),
                               self.features.batch().astype(np.float32)], axis=1)
