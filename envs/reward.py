"""Reward of a slot as a weighted sum of named components, batched over copies.

The functions read the few quantities they need from the simulator core and its slot result
(:class:`envs.dynamics.FleetCore`, :class:`envs.dynamics.SlotResult`), named by the two
protocols below: the core packs the weights into its kernel, so this module does not import it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from envs.config import FleetConfig


class CoreScales(Protocol):
    """What the reward reads of a core: its config and reference demand per slot [kWh]."""

    config: FleetConfig
    ref_demand_kwh: float


class SlotAmounts(Protocol):
    """What the reward reads of a slot's result, shape (B,) each, natural units."""

    value_correct: np.ndarray
    aux_kwh: np.ndarray
    waste_kwh: np.ndarray
    storage_kwh: np.ndarray
    dropped: np.ndarray

#: Keys of ``info["reward_terms"]``, in natural units.
REWARD_TERMS = ("value_correct", "aux_kwh", "waste_kwh", "leftover_kwh", "dropped")


def reward_weights(core: CoreScales) -> dict[str, float]:
    """Effective weight of each reward term: reward = sum(weights[k] * terms[k]).

    The config weights are divided by natural scales so that a slot's reward is of order 1:
    the value of the correct answers by the expected value of a slot if every task were
    answered correctly, energies by the reference demand per slot D_ref, dropped tasks (past
    their deadline; queue only) by the mean arrivals per slot.
    """
    cfg = core.config
    value_ref = cfg.arrival_rate * float(np.dot(cfg.class_shares, cfg.class_values))
    value_ref = value_ref if value_ref > 0 else 1.0
    return {
        "value_correct": cfg.w_correct / value_ref,
        "aux_kwh": -cfg.w_aux / core.ref_demand_kwh,
        "waste_kwh": -cfg.w_waste / core.ref_demand_kwh,
        "leftover_kwh": -cfg.w_leftover / core.ref_demand_kwh,
        "dropped": -cfg.w_dropped / cfg.arrival_rate,
    }


def reward_terms(core: CoreScales, res: SlotAmounts, truncated: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Reward components of a slot for every copy, shape (B,) each, natural units.

    ``leftover_kwh`` is non-zero only on a copy's last slot: the energy left in the store
    above the initial level S_0 (unused baseline energy of the episode).
    """
    leftover = np.where(truncated, np.maximum(
        0.0, res.storage_kwh - core.config.initial_storage_kwh), 0.0)
    return {"value_correct": res.value_correct, "aux_kwh": res.aux_kwh,
            "waste_kwh": res.waste_kwh, "leftover_kwh": leftover,
            "dropped": res.dropped.astype(np.float64)}


def combine(weights: dict[str, float], terms: dict[str, np.ndarray]) -> np.ndarray:
    """Weighted sum of the terms, in the fixed order of :data:`REWARD_TERMS`."""
    total = np.zeros_like(terms["aux_kwh"], dtype=np.float64)
    for k in REWARD_TERMS:
        total = total + weights[k] * terms[k]
    return total
