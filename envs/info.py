"""The ``info`` dict of the fleet environments: one definition for single and vector envs.

Every step's ``info`` holds the slot's energy ledger as floats (:data:`FLOAT_KEYS`, kWh),
its task counts and the slot index as ints (:data:`INT_KEYS`) and ``reward_terms`` (a dict of
floats keyed by :data:`envs.reward.REWARD_TERMS`). The single env builds it from the kernel's
slot tuple with :func:`slot_result` (:func:`slot_info` after a reset); the vector env batches
the same keys with :func:`kernel_batched_info` (:func:`batched_info` on the queue ids).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.reward import REWARD_TERMS

#: Float entries of ``info`` [kWh].
FLOAT_KEYS = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh")
#: Integer entries of ``info``: task counts [tasks] and ``t``, slots elapsed.
#: ``queued`` counts the tasks waiting in the queue after the slot (0 without a queue).
INT_KEYS = ("arrived", "served", "correct", "dropped", "queued", "t")
#: Every key of ``info``, in order.
INFO_KEYS = (*FLOAT_KEYS, *INT_KEYS, "reward_terms")


def slot_info(harvest: float, demand: float, aux: float, waste: float, loss: float,
              storage: float, arrived: int, served: int, correct: int, dropped: int,
              queued: int, t: int, terms: dict[str, float]) -> dict[str, Any]:
    """The ``info`` of one copy after a slot (a new dict every call)."""
    return {"harvest_kwh": harvest, "demand_kwh": demand, "aux_kwh": aux, "waste_kwh": waste,
            "loss_kwh": loss, "storage_kwh": storage, "arrived": arrived, "served": served,
            "correct": correct, "dropped": dropped, "queued": queued, "t": t,
            "reward_terms": terms}


def reset_info(storage: float) -> dict[str, Any]:
    """The ``info`` of one copy after ``reset`` (empty ledger, store at its initial level)."""
    return slot_info(0.0, 0.0, 0.0, 0.0, 0.0, storage, 0, 0, 0, 0, 0, 0,
                     dict.fromkeys(REWARD_TERMS, 0.0))


def batched_info(res: Any, t: np.ndarray, terms: dict[str, np.ndarray],
                 queued: np.ndarray | None = None) -> dict[str, Any]:
    """The ``info`` of every copy after a slot, arrays of shape (B,) per key.

    Args:
        res: The core's ``SlotResult`` of the slot.
        t: Slots elapsed in each copy after the slot.
        terms: Reward terms of each copy (see :func:`envs.reward.reward_terms`).
        queued: Tasks waiting in each copy's queue after the slot (None: no queue).
    """
    out: dict[str, Any] = {k: np.asarray(getattr(res, k), dtype=np.float64)
                           for k in FLOAT_KEYS}
    for k in ("arrived", "served", "correct", "dropped"):
        out[k] = np.asarray(getattr(res, k), dtype=np.int64)
    out["queued"] = (np.zeros(len(out["arrived"]), dtype=np.int64) if queued is None
                     else np.asarray(queued, dtype=np.int64))
    out["t"] = np.asarray(t, dtype=np.int64)
    out["reward_terms"] = {k: np.asarray(terms[k], dtype=np.float64) for k in REWARD_TERMS}
    return out


def slot_result(r: tuple) -> tuple[float, bool, dict[str, Any]]:
    """Reward, truncation flag and ``info`` of one copy's slot.

    Args:
        r: ``(status, *RES_F, *RES_I)`` of the copy as Python numbers (the kernel
            entries return it, e.g. :func:`envs.kernel.step_bound16`).
    """
    (_, harvest, demand, aux, waste, loss, storage, value, leftover, reward,
     arrived, served, correct, dropped, t, truncated, queued) = r
    # slot_info written out (one call less a step)
    info = {"harvest_kwh": harvest, "demand_kwh": demand, "aux_kwh": aux, "waste_kwh": waste,
            "loss_kwh": loss, "storage_kwh": storage, "arrived": arrived, "served": served,
            "correct": correct, "dropped": dropped, "queued": queued, "t": t,
            "reward_terms": {"value_correct": value, "aux_kwh": aux, "waste_kwh": waste,
                             "leftover_kwh": leftover, "dropped": float(dropped)}}
    return reward, truncated == 1, info


def kernel_batched_info(res_f: np.ndarray, res_i: np.ndarray,
                        queued: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`batched_info` of every copy from the kernel's results ``FleetCore.res_f``
    (B, ``envs.kernel.RES_F``) and ``res_i`` (B, ``envs.kernel.RES_I`` ...)."""
    rf = res_f[:, :9].T.copy()
    ri = res_i[:, :7].T.copy()
    out: dict[str, Any] = dict(zip(FLOAT_KEYS, rf[:6]))
    for k, row in zip(("arrived", "served", "correct", "dropped"), ri[:4]):
        out[k] = row
    out["queued"] = ri[6] if queued is None else np.asarray(queued, dtype=np.int64)
    out["t"] = ri[4]
    out["reward_terms"] = {"value_correct": rf[6], "aux_kwh": rf[2].copy(),
                           "waste_kwh": rf[3].copy(), "leftover_kwh": rf[7],
                           "dropped": ri[3].astype(np.float64)}
    return out
