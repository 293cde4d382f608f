"""Task outcomes under oracle stopping: step-count tables and exact per-configuration moments.

A task of class c needs m_c successful reasoning steps of omega tokens; on model i each step
succeeds with probability r_i, so the number of steps is negative binomial,
K ~ NegBin(m_c, r_i) (trials to m_c successes). The task is solvable at all with probability
gamma_i ** m_c. Under budget b_k it runs min(omega K, b_k) tokens if solvable, b_k otherwise,
and is correct iff solvable and omega K <= b_k.

Imports numpy only: shared by the simulator core and by :mod:`envs.theory`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.config import FleetConfig

J_PER_KWH = 3.6e6


def negbin_pmf(m: int, r: float, n_max: int) -> np.ndarray:
    """P(K = k) for k = m..n_max of K ~ NegBin(m, r) (trials to m successes).

    Returns an array of length ``max(0, n_max - m + 1)``; entry ``k - m`` is P(K = k).
    Computed in log space, so large m does not underflow.
    """
    if n_max < m:
        return np.zeros(0, dtype=np.float64)
    ks = np.arange(m + 1, n_max + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_q = np.log1p(-r) if r < 1.0 else -np.inf
        inc = np.log(ks - 1.0) - np.log(ks - m) + log_q
    log_p = m * np.log(r) + np.concatenate([[0.0], np.cumsum(inc)])
    return np.exp(log_p)


@dataclass(frozen=True)
class OutcomeTables:
    """Precomputed outcome tables of a config.

    Attributes:
        n_max: Largest step count that fits any budget, floor(max budget / omega) [steps].
        cdf: ``cdf[i][c]`` is P(K <= k) for k = m_c..n_max under model i, class c.
        solvable: ``solvable[i, c]`` = gamma_i ** m_c, shape (M, C).
        model_of: Model index of each configuration, shape (J,).
        budget_of: Token budget of each configuration [tokens], shape (J,).
        j_per_token_of: Energy per token of each configuration's model [J/token], shape (J,).
    """

    n_max: int
    cdf: tuple[tuple[np.ndarray, ...], ...]
    solvable: np.ndarray
    model_of: np.ndarray
    budget_of: np.ndarray
    j_per_token_of: np.ndarray


def build_tables(config: FleetConfig) -> OutcomeTables:
    """Build the step-count CDFs and configuration maps of ``config``."""
    n_max = max(config.token_budgets) // config.step_tokens
    cdf = tuple(
        tuple(np.cumsum(negbin_pmf(m, r, n_max)) for m in config.class_skills)
        for r in config.model_step_success
    )
    gam = np.asarray(config.model_skill_coverage, dtype=np.float64)[:, None]
    skills = np.asarray(config.class_skills, dtype=np.float64)[None, :]
    n_b = len(config.token_budgets)
    model_of = np.repeat(np.arange(config.n_models), n_b)
    budget_of = np.tile(np.asarray(config.token_budgets, dtype=np.int64), config.n_models)
    e = np.asarray(config.model_j_per_token, dtype=np.float64)
    return OutcomeTables(n_max=n_max, cdf=cdf, solvable=gam**skills, model_of=model_of,
                         budget_of=budget_of, j_per_token_of=e[model_of])


@dataclass(frozen=True)
class ConfigMoments:
    """Exact per-task moments of every (class, configuration) pair.

    Attributes:
        energy_mean_kwh: E[task energy], shape (C, J) [kWh].
        energy_var_kwh2: Var[task energy], shape (C, J) [kWh^2].
        tokens_mean: E[tokens run], shape (C, J) [tokens].
        accuracy: P(correct), shape (C, J).
    """

    energy_mean_kwh: np.ndarray
    energy_var_kwh2: np.ndarray
    tokens_mean: np.ndarray
    accuracy: np.ndarray


def config_moments(config: FleetConfig, tables: OutcomeTables | None = None) -> ConfigMoments:
    """Exact energy mean and variance, mean tokens and accuracy per (class, configuration)."""
    tables = tables or build_tables(config)
    omega = config.step_tokens
    n_c, n_j = config.n_classes, config.n_configs
    t1 = np.zeros((n_c, n_j))
    t2 = np.zeros((n_c, n_j))
    acc = np.zeros((n_c, n_j))
    for j in range(n_j):
        i, b = int(tables.model_of[j]), float(tables.budget_of[j])
        n = int(tables.budget_of[j]) // omega
        for c, m in enumerate(config.class_skills):
            g = float(tables.solvable[i, c])
            pmf = negbin_pmf(m, config.model_step_success[i], n)
            tok = omega * np.arange(m, m + pmf.size, dtype=np.float64)
            p_fin = float(pmf.sum())
            s1 = float(pmf @ tok) + (1.0 - p_fin) * b
            s2 = float(pmf @ tok**2) + (1.0 - p_fin) * b * b
            t1[c, j] = g * s1 + (1.0 - g) * b
            t2[c, j] = g * s2 + (1.0 - g) * b * b
            acc[c, j] = g * p_fin
    e = tables.j_per_token_of[None, :] / J_PER_KWH
    mean = e * t1
    var = np.maximum(e**2 * (t2 - t1**2), 0.0)
    return ConfigMoments(energy_mean_kwh=mean, energy_var_kwh2=var, tokens_mean=t1, accuracy=acc)


def reference_mixture(config: FleetConfig) -> np.ndarray:
    """The reference mixture that defines ``provisioning``: every class uniform over configs.

    Returns:
        Mixture weights, shape (C, J), rows summing to 1.
    """
    return np.full((config.n_classes, config.n_configs), 1.0 / config.n_configs)


def idle_energy_kwh(config: FleetConfig) -> float:
    """Idle energy of the fleet in one slot [kWh]."""
    return config.idle_power_kw * config.slot_minutes / 60.0


def mean_demand_kwh(config: FleetConfig, mixture: np.ndarray,
                    moments: ConfigMoments | None = None) -> float:
    """Expected fleet demand per slot under a static mixture [kWh] (idle energy included)."""
    moments = moments or config_moments(config)
    phi = np.asarray(config.class_shares)[:, None]
    per_task = float(np.sum(phi * mixture * moments.energy_mean_kwh))
    return config.arrival_rate * per_task + idle_energy_kwh(config)


def reference_demand_kwh(config: FleetConfig, moments: ConfigMoments | None = None) -> float:
    """Mean demand per slot of the reference mixture [kWh]: the unit of ``provisioning``."""
    return mean_demand_kwh(config, reference_mixture(config), moments)
