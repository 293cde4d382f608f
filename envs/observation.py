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

Every feature is written by the compiled kernel with the rest of the observation
(``envs.kernel._observe``, for any number of copies: a single env and a vector env give the
same bits): ``store_log`` as ``log1p(S * (1 / D_ref))``, the config's features computed once
(:func:`v1_static`), ``slots_left`` as ``(T - t) / 288``, and the trend updated at each slot's
close from the core's state rows ``harvest_prev`` and ``harvest_trend`` (zero at reset):
``trend = (1 - 0.3) trend + 0.3 (h - h_prev)`` with ``h`` = harvest_last / mean harvest.
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


def v1_static(core) -> list[float]:  # noqa: ANN001 - a FleetCore
    """The features the config fixes (``capacity_log`` .. ``arrival_rate_log``) of a core, as
    float64; the compiled kernel writes them with the store, time and trend features
    (``envs.kernel._observe``)."""
    cfg = core.config
    d_ref = reference_demand_kwh(cfg, core.moments)
    proc = core.harvest_process
    mean = float(proc.mean_kwh)
    var = float(getattr(proc, "var_kwh2", 0.0))
    s_max = cfg.storage_kwh
    finite = math.isfinite(s_max)
    return [
        math.log1p(s_max / d_ref) if finite else 0.0,
        1.0 if finite else 0.0,
        mean / d_ref,
        math.sqrt(var) / mean if mean > 0 else 0.0,
        demand_std_kwh(cfg) / d_ref,
        math.log1p(cfg.arrival_rate),
    ]
