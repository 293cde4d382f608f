"""Fit of the task classes to a real reasoning-length distribution (ServeGen DeepSeek-R1).

The reasoning length of a task of class c on model i is omega x K with K ~ NegBin(m_c, r_i)
(MODEL.md section 3). The *fleet length distribution* is the mixture over classes (shares
phi_c) and models (uniform, the reference mixture) of these lengths, without budget cap. The
fit cuts the target PMF at quantile bands, one class per band: the class share is the band's
probability, and its skill count m_c is the band's conditional mean length divided by
omega x mean_i(1 / r_i) (rounded), so the fleet's mean length matches the target's mean up to
the rounding of m_c. Quantiles are reported, not fitted. Imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.outcomes import negbin_pmf
from envs.traces import LengthPMF

#: Quantile bands of the default fit (4 classes).
DEFAULT_BANDS = (0.0, 0.5, 0.8, 0.95, 1.0)
#: Quantiles reported by :func:`length_stats`.
REPORT_QUANTILES = (0.1, 0.5, 0.9, 0.99)


@dataclass(frozen=True)
class ClassFit:
    """Fitted classes and the statistics of fit and target.

    Attributes:
        class_skills: m_c per class.
        class_shares: phi_c per class (sum 1).
        fleet: Mean and quantiles of the fitted fleet length [tokens].
        target: Mean and quantiles of the target PMF [tokens].
    """

    class_skills: tuple[int, ...]
    class_shares: tuple[float, ...]
    fleet: dict[str, float]
    target: dict[str, float]


def _band_mean(pmf: LengthPMF, q0: float, q1: float) -> float:
    """Mean of the target restricted to its quantile band [q0, q1) (bins split linearly)."""
    cdf = np.concatenate([[0.0], np.cumsum(pmf.prob)])
    lo_c, hi_c = cdf[:-1], cdf[1:]
    w = np.clip(np.minimum(hi_c, q1) - np.maximum(lo_c, q0), 0.0, None)
    # Inside a bin the mass is uniform, so the part in the band has its own midpoint.
    frac_lo = np.clip((np.maximum(lo_c, q0) - lo_c) / np.maximum(pmf.prob, 1e-300), 0, 1)
    frac_hi = np.clip((np.minimum(hi_c, q1) - lo_c) / np.maximum(pmf.prob, 1e-300), 0, 1)
    width = pmf.bin_hi - pmf.bin_lo
    mid = pmf.bin_lo + 0.5 * (frac_lo + frac_hi) * width
    return float((w * mid).sum() / w.sum())


def fleet_length_pmf(class_skills: tuple[int, ...], class_shares: tuple[float, ...],
                     step_success: tuple[float, ...], step_tokens: int, n_max: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fleet length distribution: lengths omega*k [tokens] and probabilities, k <= n_max."""
    prob = np.zeros(n_max + 1)
    for m, phi in zip(class_skills, class_shares):
        for r in step_success:
            p = negbin_pmf(m, r, n_max)
            prob[m:m + p.size] += phi * p / len(step_success)
    return step_tokens * np.arange(n_max + 1, dtype=np.float64), prob


def length_stats(lengths: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Mean and :data:`REPORT_QUANTILES` of a discrete distribution [tokens]."""
    prob = prob / prob.sum()
    cdf = np.cumsum(prob)
    out = {"mean": float(prob @ lengths)}
    for q in REPORT_QUANTILES:
        out[f"p{round(100 * q)}"] = float(lengths[np.searchsorted(cdf, q)])
    return out


def pmf_stats(pmf: LengthPMF) -> dict[str, float]:
    """Mean and :data:`REPORT_QUANTILES` of a binned PMF [tokens]."""
    out = {"mean": pmf.mean()}
    for q in REPORT_QUANTILES:
        out[f"p{round(100 * q)}"] = pmf.quantile(q)
    return out


def fit_classes(pmf: LengthPMF, step_success: tuple[float, ...], step_tokens: int,
                bands: tuple[float, ...] = DEFAULT_BANDS) -> ClassFit:
    """Fit class skills and shares so the fleet length distribution follows ``pmf``.

    Args:
        pmf: Target output-length PMF (e.g. ServeGen DeepSeek-R1, whole day).
        step_success: r_i of the fleet's models.
        step_tokens: Tokens per reasoning step omega.
        bands: Quantile cut points, from 0 to 1; one class per band.

    Returns:
        The fitted classes with fleet and target statistics.
    """
    if bands[0] != 0.0 or bands[-1] != 1.0 or any(b <= a for a, b in zip(bands, bands[1:])):
        raise ValueError(f"bands must increase from 0 to 1, got {bands}")
    per_step = step_tokens * float(np.mean([1.0 / r for r in step_success]))
    skills, shares = [], []
    for q0, q1 in zip(bands, bands[1:]):
        skills.append(max(1, int(round(_band_mean(pmf, q0, q1) / per_step))))
        shares.append(round(q1 - q0, 12))
    n_max = int(pmf.bin_hi.max() * 4 / step_tokens)
    lengths, prob = fleet_length_pmf(tuple(skills), tuple(shares), step_success, step_tokens,
                                     n_max)
    return ClassFit(tuple(skills), tuple(shares), length_stats(lengths, prob), pmf_stats(pmf))
