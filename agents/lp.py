"""Static routing mixtures as linear programs (MODEL.md O2 and O8), solved with scipy's HiGHS.

A static mixture sends each task of class c to configuration j with probability pi[c, j]. Its
mean slot demand, the second moment of its slot demand and its accuracy are linear in pi, so
"best accuracy at a given mean demand" (certainty equivalent) and "smallest second moment at a
given mean demand and an accuracy floor" (variance-aware, O8) are linear programs.

Two action types share this module:

* ``continuous``: the variables are pi (C x J); the second moment of the demand is
  ``lambda * sum_c phi_c sum_j pi_cj (v_cj + m_cj^2) + E[D]^2`` (compound Poisson, O2).
* ``discrete``: one configuration serves every task of a slot, so the policy can only draw a
  configuration per slot with probabilities q (J,) (class-blind). Given j, the slot demand has
  mean ``lambda mbar_j`` and second moment ``lambda sbar_j + (lambda mbar_j)^2``; both are
  linear in q, so the same programs apply with one row of variables.

All energies are in kWh per slot. Only the config is used (public model parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from envs.config import FleetConfig
from envs.outcomes import config_moments, idle_energy_kwh, reference_demand_kwh
from envs.processes import make_harvest_process


@dataclass(frozen=True)
class RoutingModel:
    """Linear coefficients of a static routing decision.

    Attributes:
        class_blind: True for the discrete action type (one variable row, shape (1, J)).
        mean: Mean slot demand per unit of each variable [kWh], shape (R, J) with R = C or 1.
        second: Second moment of the slot demand per unit of each variable [kWh^2].
        accuracy: Fraction of tasks answered correctly per unit of each variable.
        value: Expected value of correct answers per task per unit of each variable.
        idle_kwh: Idle energy of a slot [kWh] (added to every mean).
        mean_harvest_kwh: Mean harvest per slot from the config [kWh].
        var_harvest_kwh2: Variance of the harvest per slot [kWh^2].
        energy_mean_kwh: Per-task energy means m[c, j] [kWh] (for reporting).
    """

    class_blind: bool
    mean: np.ndarray
    second: np.ndarray
    accuracy: np.ndarray
    value: np.ndarray
    idle_kwh: float
    mean_harvest_kwh: float
    var_harvest_kwh2: float
    energy_mean_kwh: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the decision variables (rows, J)."""
        return self.mean.shape  # type: ignore[return-value]

    def demand_range(self) -> tuple[float, float]:
        """Smallest and largest achievable mean slot demand [kWh]."""
        lo = float(self.mean.min(axis=1).sum()) + self.idle_kwh
        hi = float(self.mean.max(axis=1).sum()) + self.idle_kwh
        return lo, hi

    def stats(self, x: np.ndarray) -> dict[str, float]:
        """Mean and standard deviation of the slot demand, accuracy and value of ``x``."""
        x = np.asarray(x, dtype=np.float64).reshape(self.shape)
        mean = float(np.sum(self.mean * x)) + self.idle_kwh
        second = float(np.sum(self.second * x))
        if not self.class_blind:
            second += (mean - self.idle_kwh) ** 2
        var = max(second - (mean - self.idle_kwh) ** 2, 0.0)
        return {"mean_kwh": mean, "std_kwh": var**0.5,
                "sigma_kwh": (var + self.var_harvest_kwh2) ** 0.5,
                "accuracy": float(np.sum(self.accuracy * x)),
                "value": float(np.sum(self.value * x))}


def routing_model(config: FleetConfig, class_blind: bool | None = None,
                  energy_bias_kwh: float = 0.0) -> RoutingModel:
    """Coefficients of the routing LPs for ``config``.

    Args:
        config: Fleet config (public parameters only).
        class_blind: Force the discrete (True) or continuous (False) form; default from
            ``config.action_type``.
        energy_bias_kwh: Added to every per-task energy mean before building the model [kWh]
            (a router's prediction error; negative = the router underestimates energy).
    """
    if class_blind is None:
        class_blind = config.action_type == "discrete"
    mom = config_moments(config)
    lam = config.arrival_rate
    phi = np.asarray(config.class_shares, dtype=np.float64)[:, None]
    vals = np.asarray(config.class_values, dtype=np.float64)[:, None]
    m = mom.energy_mean_kwh + energy_bias_kwh
    s = mom.energy_var_kwh2 + m * m
    mean = lam * phi * m
    second = lam * phi * s
    acc = phi * mom.accuracy
    val = phi * vals * mom.accuracy
    if class_blind:
        mbar = mean.sum(axis=0, keepdims=True)
        second = second.sum(axis=0, keepdims=True) + mbar**2
        mean, acc, val = mbar, acc.sum(axis=0, keepdims=True), val.sum(axis=0, keepdims=True)
    harvest = make_harvest_process(config, config.provisioning
                                   * reference_demand_kwh(config, mom))
    return RoutingModel(class_blind=class_blind, mean=mean, second=second, accuracy=acc,
                        value=val, idle_kwh=idle_energy_kwh(config),
                        mean_harvest_kwh=float(harvest.mean_kwh),
                        var_harvest_kwh2=float(harvest.var_kwh2),
                        energy_mean_kwh=mom.energy_mean_kwh)


def _solve(model: RoutingModel, objective: np.ndarray, target_kwh: float,
           floor: float | None = None) -> np.ndarray:
    """Minimise ``objective . x`` over mixtures with mean demand = target, accuracy >= floor."""
    r, j = model.shape
    n = r * j
    a_eq = np.zeros((r + 1, n))
    for row in range(r):
        a_eq[row, row * j:(row + 1) * j] = 1.0
    scale = max(abs(target_kwh), 1e-300)
    a_eq[r] = model.mean.ravel() / scale
    b_eq = np.concatenate([np.ones(r), [(target_kwh - model.idle_kwh) / scale]])
    a_ub = b_ub = None
    if floor is not None:
        a_ub = -model.accuracy.ravel()[None, :]
        b_ub = np.array([-floor])
    res = linprog(objective.ravel(), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                  bounds=(0.0, 1.0), method="highs")
    if res.status != 0:
        raise ValueError(f"routing LP infeasible for mean demand {target_kwh:.6g} kWh "
                         f"(achievable {model.demand_range()}) and accuracy floor {floor}: "
                         f"{res.message}")
    x = np.clip(res.x.reshape(r, j), 0.0, None)
    return x / x.sum(axis=1, keepdims=True)


def clip_target(model: RoutingModel, target_kwh: float) -> float:
    """The achievable mean demand closest to ``target_kwh`` [kWh]."""
    lo, hi = model.demand_range()
    return float(min(max(target_kwh, lo), hi))


def max_value_mixture(model: RoutingModel, target_kwh: float) -> np.ndarray:
    """Certainty-equivalent mixture: the largest expected value at mean demand = target.

    Variance is deliberately ignored (this is the certainty equivalent).
    """
    return _solve(model, -model.value, clip_target(model, target_kwh))


def max_accuracy(model: RoutingModel, target_kwh: float) -> float:
    """Largest accuracy achievable at mean demand = target (clipped to the achievable range)."""
    x = _solve(model, -model.accuracy, clip_target(model, target_kwh))
    return float(np.sum(model.accuracy * x))


def min_second_moment_mixture(model: RoutingModel, target_kwh: float,
                              floor: float) -> np.ndarray:
    """O8: the mixture with the smallest demand second moment at mean = target, accuracy >= floor.

    The floor is lowered to the largest achievable accuracy at that mean if it is above it.
    """
    t = clip_target(model, target_kwh)
    floor = min(floor, max_accuracy(model, t) - 1e-9)
    return _solve(model, model.second, t, floor)
