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

Throughput caps (envs with ``model_tokens_per_slot``): the expected output tokens a mixture
puts on model i per slot, ``lambda * sum_c phi_c sum_{j on i} pi_cj tok_cj`` (tok = mean tokens
of a task, from the energy means), is linear in pi too; with caps every program adds
"expected load <= cap_fraction * cap" per capped model, leaving head room for the
fluctuations of the load around its mean. Without caps the programs are unchanged.

All energies are in kWh per slot. Only the config is used (public model parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from envs.config import FleetConfig
from envs.outcomes import J_PER_KWH, config_moments, idle_energy_kwh, reference_demand_kwh
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
        load: Expected tokens per slot on each capped model per unit of each variable, shape
            (K, R, J) for the K capped models; None without caps.
        load_limit: Largest admissible expected load of each capped model [tokens/slot],
            shape (K,) (``cap_fraction`` times its cap); None without caps.
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
    load: np.ndarray | None = None
    load_limit: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the decision variables (rows, J)."""
        return self.mean.shape  # type: ignore[return-value]

    def demand_range(self) -> tuple[float, float]:
        """Smallest and largest achievable mean slot demand [kWh] (within the load limits).

        With load limits this takes two linear programs, solved on the first call and kept
        (the model is frozen; its arrays are not meant to be changed in place).
        """
        if self.load is not None:
            cached = self.__dict__.get("_demand_range")
            if cached is None:
                cached = _capped_demand_range(self)
                object.__setattr__(self, "_demand_range", cached)
            return cached
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


#: Default share of each throughput cap a static mixture may fill on average (envs with caps).
#: Arrivals peak during the day and token counts are heavy-tailed, so a static mixture needs
#: wide head room: on lrm/R1Trace-v0 (seeds 1001-1003, disjoint from evaluate.py's) the
#: reward of mean_matching was flat for 0.25-0.35 and fell steeply above (0.7: -75 %).
DEFAULT_CAP_FRACTION = 0.3


def routing_model(config: FleetConfig, class_blind: bool | None = None,
                  energy_bias_kwh: float = 0.0,
                  cap_fraction: float = DEFAULT_CAP_FRACTION) -> RoutingModel:
    """Coefficients of the routing LPs for ``config``.

    Args:
        config: Fleet config (public parameters only).
        class_blind: Force the discrete (True) or continuous (False) form; default from
            ``config.action_type``.
        energy_bias_kwh: Added to every per-task energy mean before building the model [kWh]
            (a router's prediction error; negative = the router underestimates energy).
        cap_fraction: Share of each model's throughput cap the mixture may fill on average,
            in (0, 1]; used only if the config sets ``model_tokens_per_slot``. Raised to the
            smallest share some mixture achieves if it is below it.
    """
    if not 0.0 < cap_fraction <= 1.0:
        raise ValueError(f"cap_fraction must be in (0, 1], got {cap_fraction!r}")
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
    load = load_limit = None
    caps = np.asarray(config.model_tokens_per_slot, dtype=np.float64)
    if caps.size and np.isfinite(caps).any():
        model_of = np.repeat(np.arange(config.n_models), len(config.token_budgets))
        jpt = np.asarray(config.model_j_per_token, dtype=np.float64)
        tok = lam * phi * mom.energy_mean_kwh * J_PER_KWH / jpt[model_of][None, :]  # (C, J)
        capped = np.flatnonzero(np.isfinite(caps))
        load = np.stack([np.where(model_of[None, :] == m, tok, 0.0) for m in capped])
    if class_blind:
        mbar = mean.sum(axis=0, keepdims=True)
        second = second.sum(axis=0, keepdims=True) + mbar**2
        mean, acc, val = mbar, acc.sum(axis=0, keepdims=True), val.sum(axis=0, keepdims=True)
        if load is not None:
            load = load.sum(axis=1, keepdims=True)
    if load is not None:
        load_limit = max(cap_fraction, _min_cap_fraction(load, caps[capped])) * caps[capped]
    harvest = make_harvest_process(config, config.provisioning
                                   * reference_demand_kwh(config, mom))
    return RoutingModel(class_blind=class_blind, mean=mean, second=second, accuracy=acc,
                        value=val, idle_kwh=idle_energy_kwh(config),
                        mean_harvest_kwh=float(harvest.mean_kwh),
                        var_harvest_kwh2=float(harvest.var_kwh2),
                        energy_mean_kwh=mom.energy_mean_kwh, load=load, load_limit=load_limit)


def _min_cap_fraction(load: np.ndarray, caps: np.ndarray) -> float:
    """Smallest f such that some mixture keeps every expected load <= f * cap (a minimax LP),
    raised by 1e-3 relative so the programs stay feasible at it (solver tolerances)."""
    k, r, j = load.shape
    n = r * j
    a_eq = np.zeros((r, n + 1))
    for row in range(r):
        a_eq[row, row * j:(row + 1) * j] = 1.0
    a_ub = np.hstack([load.reshape(k, n) / caps[:, None], -np.ones((k, 1))])
    c = np.zeros(n + 1)
    c[-1] = 1.0
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=a_eq, b_eq=np.ones(r),
                  bounds=[(0.0, 1.0)] * n + [(0.0, None)], method="highs")
    if res.status != 0:  # pragma: no cover - the LP is always feasible
        raise RuntimeError(f"cap head-room LP failed: {res.message}")
    return float(res.x[-1]) * (1.0 + 1e-3)


def _load_rows(model: RoutingModel) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Inequality rows ``load . x <= load_limit`` (scaled to O(1)), or (None, None)."""
    if model.load is None:
        return None, None
    lim = np.maximum(model.load_limit, 1e-300)
    return model.load.reshape(len(lim), -1) / lim[:, None], np.ones(len(lim))


def _capped_demand_range(model: RoutingModel) -> tuple[float, float]:
    r, j = model.shape
    a_eq = np.zeros((r, r * j))
    for row in range(r):
        a_eq[row, row * j:(row + 1) * j] = 1.0
    a_ub, b_ub = _load_rows(model)
    out = []
    for sign in (1.0, -1.0):
        res = linprog(sign * model.mean.ravel(), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq,
                      b_eq=np.ones(r), bounds=(0.0, 1.0), method="highs")
        if res.status != 0:
            raise ValueError(f"no mixture keeps the expected load within the throughput caps "
                             f"(limits {model.load_limit} tokens/slot): {res.message}")
        out.append(float(model.mean.ravel() @ res.x) + model.idle_kwh)
    return out[0], out[1]


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
    if model.load is not None:
        l_ub, l_b = _load_rows(model)
        a_ub = l_ub if a_ub is None else np.vstack([a_ub, l_ub])
        b_ub = l_b if b_ub is None else np.concatenate([b_ub, l_b])
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
