"""Shared helpers of the test suite: batched Monte Carlo on the core, env rollouts, cumulants."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.config import FleetConfig
from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH, build_tables, negbin_pmf, reference_demand_kwh

#: Per-slot fields of :class:`envs.dynamics.SlotResult` recorded by :func:`run_core`.
LEDGER = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
          "arrived", "correct", "value_correct")


def copy_generators(seed: int, n_copies: int) -> list[list[np.random.Generator]]:
    """(arrivals, harvest, tasks) generators of ``n_copies`` independent copies from one seed."""
    return [[np.random.default_rng(s) for s in child.spawn(3)]
            for child in np.random.SeedSequence(seed).spawn(n_copies)]


def run_core(config: FleetConfig, n_copies: int, seed: int, *, mixture: np.ndarray | None = None,
             configs: np.ndarray | None = None, chunk: int = 200) -> dict[str, np.ndarray]:
    """Run ``n_copies`` full episodes on the batched core under a static policy.

    Args:
        config: Fleet config.
        n_copies: Number of independent episodes.
        seed: Root seed; copy n uses child n of ``SeedSequence(seed)`` (so results do not
            depend on ``chunk``).
        mixture: Static mixture (C, J) applied to every copy, or
        configs: One configuration per copy, shape (n_copies,) (discrete action).
        chunk: Copies stepped together (bounds memory: the core holds whole episodes).

    Returns:
        Arrays of shape (n_copies, T) for :data:`LEDGER`, plus ``arrivals`` (n, T, C),
        ``correct_by_class`` (n, T, C) and ``tokens_by_model`` (n, T, M).
    """
    # LRM_TEST_SEED_OFFSET re-runs the statistical tests on other seeds (to check that the
    # tolerances do not pass by luck); the default suite uses offset 0.
    seed += int(os.environ.get("LRM_TEST_SEED_OFFSET", "0"))
    gens = copy_generators(seed, n_copies)
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, n_copies, chunk):
        hi = min(n_copies, lo + chunk)
        core = FleetCore(config, hi - lo)
        for b in range(hi - lo):
            core.reset_copy(b, *gens[lo + b])
        rec: dict[str, list[np.ndarray]] = {k: [] for k in (*LEDGER, "correct_by_class",
                                                             "tokens_by_model")}
        mix = None if mixture is None else np.broadcast_to(
            np.asarray(mixture, dtype=np.float64), (hi - lo, core.C, core.J))
        cfg_b = None if configs is None else np.asarray(configs)[lo:hi]
        for _ in range(config.horizon):
            res = core.step(mixtures=mix, configs=cfg_b)
            for k in rec:
                rec[k].append(np.array(getattr(res, k)))
        part = {k: np.stack(v, axis=1) for k, v in rec.items()}
        part["arrivals"] = core.arrivals.copy()
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rollout(env: gym.Env, actions: list[Any] | np.ndarray, seed: int | None
            ) -> dict[str, Any]:
    """Reset ``env`` with ``seed`` and play ``actions``; stack observations, rewards and infos.

    Returns:
        ``obs`` (n+1, dim), ``rewards`` (n,), ``terminated``/``truncated`` (n,), ``infos`` (list
        of n+1 info dicts: the reset's and one per step).
    """
    obs, info = env.reset(seed=seed)
    out: dict[str, Any] = {"obs": [obs], "rewards": [], "terminated": [], "truncated": [],
                           "infos": [info]}
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out["obs"].append(obs)
        out["rewards"].append(r)
        out["terminated"].append(term)
        out["truncated"].append(trunc)
        out["infos"].append(info)
        if term or trunc:
            break
    for k in ("obs", "rewards", "terminated", "truncated"):
        out[k] = np.asarray(out[k])
    return out


def info_array(infos: list[dict[str, Any]], key: str) -> np.ndarray:
    """One info field over a rollout (step infos only, the reset's dropped)."""
    return np.asarray([i[key] for i in infos[1:]])


def pure_mixture(config: FleetConfig, j: int) -> np.ndarray:
    """The mixture sending every task of every class to configuration ``j``, shape (C, J)."""
    pi = np.zeros((config.n_classes, config.n_configs))
    pi[:, j] = 1.0
    return pi


def task_energy_raw_moments(config: FleetConfig, order: int = 4) -> np.ndarray:
    """E[e^p] of one task's energy [kWh^p], p = 0..order, shape (order+1, C, J).

    Independent of :func:`envs.outcomes.config_moments` (same law, written out again), so it can
    give the higher cumulants the O4 model-error allowance needs.
    """
    tb = build_tables(config)
    out = np.zeros((order + 1, config.n_classes, config.n_configs))
    for j in range(config.n_configs):
        i, b = int(tb.model_of[j]), float(tb.budget_of[j])
        e = float(tb.j_per_token_of[j]) / J_PER_KWH
        for c, m in enumerate(config.class_skills):
            g = float(tb.solvable[i, c])
            pmf = negbin_pmf(m, config.model_step_success[i], int(b) // config.step_tokens)
            energy = e * config.step_tokens * np.arange(m, m + pmf.size, dtype=np.float64)
            p_fin = float(pmf.sum())
            for p in range(order + 1):
                out[p, c, j] = g * (pmf @ energy**p + (1 - p_fin) * (e * b) ** p) \
                    + (1 - g) * (e * b) ** p
    return out


def step_cumulants(config: FleetConfig, mixture: np.ndarray) -> tuple[float, float, float]:
    """(sigma, skewness, excess kurtosis) of the net energy X = H - D of one slot.

    Compound Poisson demand: kappa_n(D) = lambda E[e^n]; gamma harvest with shape k and scale
    theta: kappa_n(H) = k theta^n (n-1)!.
    """
    raw = task_energy_raw_moments(config)
    phi = np.asarray(config.class_shares)[:, None]
    k_d = [config.arrival_rate * float(np.sum(phi * mixture * raw[p])) for p in range(5)]
    mean_h = config.provisioning * reference_demand_kwh(config)
    if config.harvest_cv == 0:
        k_h = [0.0, mean_h, 0.0, 0.0, 0.0]
    else:
        shape = 1.0 / config.harvest_cv**2
        theta = mean_h / shape
        k_h = [0.0, shape * theta, shape * theta**2, 2 * shape * theta**3, 6 * shape * theta**4]
    k2, k3, k4 = k_h[2] + k_d[2], k_h[3] - k_d[3], k_h[4] + k_d[4]
    return math.sqrt(k2), k3 / k2**1.5, k4 / k2**2


def read_only_dir() -> Path:
    """A path under /sys, where even root cannot create files (file permissions do not stop
    root); skips the test where /sys is writable."""
    import pytest

    probe = Path("/sys/lrm-energy-gym-write-test")
    try:
        probe.mkdir()
    except OSError:
        return probe
    probe.rmdir()
    pytest.skip("/sys is writable here")
