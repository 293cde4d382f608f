"""Closed-form predictions of the fleet model (MODEL.md section 5): the simulator's test oracles.

Notation: X_t = H_t - D_t is the net energy of slot t, mu = E[X] its drift and sigma^2 = Var X.
For a static mixture pi (shape (C, J): per class, the share of tasks sent to each configuration)
the demand is compound Poisson, so (O2)

    E[D_t]   = lambda * sum_c phi_c sum_j pi_cj m_cj  (+ idle energy)
    Var D_t  = lambda * sum_c phi_c sum_j pi_cj (v_cj + m_cj^2)
    sigma^2  = sigma_H^2 + Var D_t

All energies are in kWh per slot, times T in slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, ndtr

from envs.config import FleetConfig
from envs.outcomes import (
    ConfigMoments,
    config_moments,
    idle_energy_kwh,
    mean_demand_kwh,
    reference_demand_kwh,
    reference_mixture,
)

#: -zeta(1/2) / sqrt(2 pi): the overshoot correction of a Gaussian random walk's maximum.
OVERSHOOT = 0.5826


def _check_mixture(config: FleetConfig, mixture: np.ndarray) -> np.ndarray:
    pi = np.asarray(mixture, dtype=np.float64)
    shape = (config.n_classes, config.n_configs)
    if pi.shape != shape:
        raise ValueError(f"mixture must have shape {shape} (classes x configurations), "
                         f"got {pi.shape}")
    if np.any(~np.isfinite(pi)) or np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0):
        raise ValueError("mixture rows must be non-negative and sum to 1")
    return pi


def accuracy_closed_form(config: FleetConfig) -> np.ndarray:
    """O9 success law: P(correct) = gamma^m * I_r(m, floor(b/omega) - m + 1), shape (C, J)."""
    out = np.zeros((config.n_classes, config.n_configs))
    n_b = len(config.token_budgets)
    for i, (r, g) in enumerate(zip(config.model_step_success, config.model_skill_coverage)):
        for k, b in enumerate(config.token_budgets):
            n = b // config.step_tokens
            for c, m in enumerate(config.class_skills):
                p_fin = float(betainc(m, n - m + 1, r)) if n >= m else 0.0
                out[c, i * n_b + k] = g**m * p_fin
    return out


@dataclass(frozen=True)
class NetEnergy:
    """Drift and volatility of the net energy X_t = H_t - D_t under a static mixture.

    Attributes:
        mean_harvest: E[H_t] [kWh].
        var_harvest: Var H_t [kWh^2].
        mean_demand: E[D_t] [kWh].
        var_demand: Var D_t [kWh^2] (compound Poisson).
        var_within: Part of Var D_t from within-configuration variance (execution) [kWh^2].
        var_between: Part of Var D_t from the spread of configuration means (models) [kWh^2].
        mu: Drift E[X_t] [kWh].
        sigma: Standard deviation of X_t [kWh].
    """

    mean_harvest: float
    var_harvest: float
    mean_demand: float
    var_demand: float
    var_within: float
    var_between: float
    mu: float
    sigma: float


def demand_moments(config: FleetConfig, mixture: np.ndarray,
                   moments: ConfigMoments | None = None) -> tuple[float, float]:
    """O2: mean and variance of the demand in one slot [kWh, kWh^2]."""
    pi = _check_mixture(config, mixture)
    moments = moments or config_moments(config)
    phi = np.asarray(config.class_shares)[:, None]
    m, v = moments.energy_mean_kwh, moments.energy_var_kwh2
    mean = config.arrival_rate * float(np.sum(phi * pi * m)) + idle_energy_kwh(config)
    var = config.arrival_rate * float(np.sum(phi * pi * (v + m * m)))
    return mean, var


def net_energy(config: FleetConfig, mixture: np.ndarray | None = None,
               moments: ConfigMoments | None = None) -> NetEnergy:
    """Drift mu and volatility sigma of X = H - D for the i.i.d. harvest and a static mixture.

    Args:
        config: Fleet config (harvest taken as i.i.d. with mean provisioning x reference
            demand and coefficient of variation ``harvest_cv``).
        mixture: Static mixture (C, J); the reference mixture if None.
        moments: Precomputed :func:`envs.outcomes.config_moments`, optional.
    """
    moments = moments or config_moments(config)
    pi = reference_mixture(config) if mixture is None else _check_mixture(config, mixture)
    mean_h = config.provisioning * reference_demand_kwh(config, moments)
    var_h = (config.harvest_cv * mean_h) ** 2
    mean_d, var_d = demand_moments(config, pi, moments)
    phi = np.asarray(config.class_shares)[:, None]
    v = moments.energy_var_kwh2
    within = config.arrival_rate * float(np.sum(phi * pi * v))
    return NetEnergy(mean_harvest=mean_h, var_harvest=var_h, mean_demand=mean_d,
                     var_demand=var_d, var_within=within, var_between=var_d - within,
                     mu=mean_h - mean_d, sigma=math.sqrt(var_h + var_d))


def critical_provisioning(config: FleetConfig, mixture: np.ndarray,
                          moments: ConfigMoments | None = None) -> float:
    """Provisioning at which the mixture's mean demand equals the mean harvest (mu = 0)."""
    moments = moments or config_moments(config)
    pi = _check_mixture(config, mixture)
    return mean_demand_kwh(config, pi, moments) / reference_demand_kwh(config, moments)


def regime_rates(mu: float) -> tuple[float, float]:
    """O3 (unbounded store): long-run (aux rate, waste rate) per slot = (max(0,-mu), max(0,mu)).

    With an unbounded store the unused baseline energy is held, so the "waste rate" is the
    growth rate of S_T / T.
    """
    return max(0.0, -mu), max(0.0, mu)


def expected_aux_critical(sigma: float, horizon: int | np.ndarray) -> float | np.ndarray:
    """O4 (mu = 0, unbounded store, S_0 = 0): E[sum_{t<=T} U_t] ~ sigma (sqrt(2T/pi) - 0.58).

    The same holds for E[S_T].
    """
    t = np.asarray(horizon, dtype=np.float64)
    out = sigma * (np.sqrt(2.0 * t / math.pi) - OVERSHOOT)
    return float(out) if out.ndim == 0 else out


def expected_aux_drift(sigma: float, drift: float,
                       horizon: int | np.ndarray) -> float | np.ndarray:
    """E[sum U] for a per-slot deficit drift ``drift`` >= 0 and volatility sigma (O5, smooth).

    The cumulative auxiliary draw of an unbounded store that starts empty is the running
    maximum of the cumulative deficit. For a Brownian motion with drift a and volatility sigma,
    E[max_{s<=T}] = a T Phi(x) + sigma sqrt(T) phi(x) + sigma^2/(2a) (2 Phi(x) - 1),
    x = a sqrt(T) / sigma; it is sigma sqrt(2T/pi) at a = 0 and a T + sigma^2/(2a) for T >> T*.
    The random walk's overshoot correction -0.58 sigma (O4) is applied as well.
    """
    t = np.asarray(horizon, dtype=np.float64)
    if drift <= 0:
        return expected_aux_critical(sigma, t)
    x = drift * np.sqrt(t) / sigma
    cdf = ndtr(x)
    pdf = np.exp(-x**2 / 2.0) / math.sqrt(2.0 * math.pi)
    out = (drift * t * cdf + sigma * np.sqrt(t) * pdf
           + sigma**2 / (2 * drift) * (2 * cdf - 1)) - OVERSHOOT * sigma
    return float(out) if np.ndim(out) == 0 else out


def expected_aux_routing_error(sigma: float, rate: float, delta: float,
                               horizon: int | np.ndarray) -> float | np.ndarray:
    """O5: a per-task energy error delta gives the drift -rate*delta, and E[sum U] bends from
    sigma sqrt(2T/pi) to about rate*delta*T + sigma^2 / (2 rate delta) around T* (see
    :func:`expected_aux_drift`)."""
    return expected_aux_drift(sigma, rate * max(delta, 0.0), horizon)


def crossover_slots(sigma: float, rate: float, delta: float) -> float:
    """O5: T* = sigma^2 / (rate delta)^2, the horizon where routing error starts to dominate."""
    return math.inf if delta <= 0 else sigma**2 / (rate * delta) ** 2


def saturation(mu: float, sigma: float) -> float:
    """O6 (unbounded store): with mu > 0 the total auxiliary draw converges to about
    sigma^2/(2 mu) - 0.58 sigma; with mu < 0 the store's stationary mean is the same
    expression in |mu|. Returns that limit [kWh]."""
    if mu == 0:
        return math.inf
    return sigma**2 / (2.0 * abs(mu)) - OVERSHOOT * sigma


def finite_store_rates(mu: float, sigma: float, storage_kwh: float) -> tuple[float, float]:
    """O7: long-run (aux rate, waste rate) per slot for a store of capacity S_max.

    aux = mu / (exp(2 mu C' / sigma^2) - 1), waste = aux + mu, C' = S_max + 1.166 sigma;
    at mu = 0 both are sigma^2 / (2 C').
    """
    c_eff = storage_kwh + 2.0 * OVERSHOOT * sigma
    if abs(mu) < 1e-12 * max(sigma, 1e-300):
        rate = sigma**2 / (2.0 * c_eff)
        return rate, rate
    x = 2.0 * mu * c_eff / sigma**2
    aux = mu / math.expm1(x) if x < 700 else 0.0
    return aux, aux + mu
