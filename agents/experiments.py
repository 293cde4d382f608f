"""The paper's experiments on the batched simulator core, against the closed forms (MODEL.md 5).

* ``regimes``: cumulative auxiliary and unused baseline energy versus T (log-log) under
  under-supply, the critical point and over-supply (O3, O4, O6), with fitted slopes.
* ``routing-error``: cumulative auxiliary energy versus T for several per-task prediction
  errors delta (O5), with the crossover T* = sigma^2 / (lambda delta)^2 marked.
* ``variance``: at the critical point, the auxiliary draw of ``mean_matching`` versus
  ``variance_aware`` against the ratio of their sigmas (O2, O8).

Each writes a PNG and a CSV into its output directory and returns a text report of measured
versus predicted values. Run them as ``python evaluate.py --experiment NAME --out DIR``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.files import atomic_savefig, atomic_write_text, pyplot, write_csv
from agents.heuristics import DEFAULT_ACCURACY_SLACK
from agents.lp import max_accuracy, max_value_mixture, min_second_moment_mixture, routing_model
from envs.config import PRESETS, FleetConfig
from envs.dynamics import FleetCore
from envs.outcomes import reference_mixture
from envs.theory import (
    crossover_slots,
    expected_aux_critical,
    expected_aux_drift,
    net_energy,
    saturation,
)

#: Chunk of episodes simulated at once (bounds memory: the core holds whole episodes).
CHUNK = 50


@dataclasses.dataclass
class StaticRun:
    """Per-episode paths of a static mixture on the batched core.

    Attributes:
        cum_aux: Cumulative auxiliary energy, shape (episodes, T) [kWh].
        unused: Unused baseline energy S_t + cumulative waste, shape (episodes, T) [kWh].
    """

    cum_aux: np.ndarray
    unused: np.ndarray


def simulate_static(config: FleetConfig, mixture: np.ndarray, episodes: int, seed: int,
                    chunk: int = CHUNK, progress: Callable[[int], None] | None = None
                    ) -> StaticRun:
    """Run ``episodes`` episodes of a fixed mixture (C, J) on :class:`FleetCore`.

    Episode k's generators come from ``SeedSequence(seed)`` child k, so two mixtures run on the
    same seed face the same tasks and harvest (common random numbers).
    """
    children = np.random.SeedSequence(seed).spawn(episodes)
    cum_aux = np.empty((episodes, config.horizon))
    unused = np.empty((episodes, config.horizon))
    for start in range(0, episodes, chunk):
        b = min(chunk, episodes - start)
        core = FleetCore(config, batch_size=b)
        for k in range(b):
            core.reset_copy(k, *np.random.default_rng(children[start + k]).spawn(3))
        mix = np.broadcast_to(mixture, (b, *mixture.shape))
        aux = np.zeros(b)
        waste = np.zeros(b)
        for t in range(config.horizon):
            res = core.step(mixtures=mix)
            aux += res.aux_kwh
            waste += res.waste_kwh
            cum_aux[start:start + b, t] = aux
            unused[start:start + b, t] = waste + res.storage_kwh - config.initial_storage_kwh
        if progress is not None:
            progress(b)
    return StaticRun(cum_aux=cum_aux, unused=unused)


def loglog_slope(t: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log t."""
    return float(np.polyfit(np.log(t), np.log(y), 1)[0])


def jackknife_slope_se(t: np.ndarray, y_ep: np.ndarray, groups: int = 10) -> float:
    """Jackknife standard error of the log-log slope of the episode mean (episodes in groups)."""
    n = y_ep.shape[0]
    g = min(groups, n)
    if g < 2:
        return math.nan
    parts = np.array_split(np.arange(n), g)
    est = np.array([loglog_slope(t, np.delete(y_ep, p, axis=0).mean(axis=0)) for p in parts])
    return float(math.sqrt((g - 1) / g * np.sum((est - est.mean()) ** 2)))


def _grid(horizon: int, t_min: int) -> np.ndarray:
    return np.unique(np.geomspace(t_min, horizon, 24).astype(int))


def _save(fig: Any, path: Path) -> None:
    atomic_savefig(fig, path, dpi=80)


# --------------------------------------------------------------------------- regimes
def regimes(out_dir: str | Path | None = None, horizon: int = 4096, episodes: int = 100,
            seed: int = 0, t_min: int = 64, progress: bool = True) -> dict[str, Any]:
    """O3/O4/O6: cumulative auxiliary and unused energy versus T in the three regimes.

    The dispatcher is the reference mixture (uniform over configurations), so the drift is
    exactly (provisioning - 1) D_ref. Slopes are fitted on log-spaced T in [t_min, horizon].

    Returns:
        ``{"rows": [...], "slopes": {...}, "report": str}``.
    """
    cases = [("undersupply", "under-supply"), ("critical", "critical"),
             ("oversupply", "over-supply")]
    bar = _bar(progress, 3 * episodes, "regimes")
    t_grid = _grid(horizon, t_min)
    rows, slopes, curves = [], {}, {}
    for preset, label in cases:
        cfg = dataclasses.replace(PRESETS[preset], horizon=horizon)
        ne = net_energy(cfg)
        run = simulate_static(cfg, reference_mixture(cfg), episodes, seed, progress=bar.update)
        aux_ep, unused_ep = run.cum_aux[:, t_grid - 1], run.unused[:, t_grid - 1]
        aux, unused = aux_ep.mean(axis=0), unused_ep.mean(axis=0)
        mu, sigma = ne.mu, ne.sigma
        if abs(mu) < 1e-12 * sigma:
            aux_pred = unused_pred = expected_aux_critical(sigma, t_grid)
            expect = {"aux": 0.5, "unused": 0.5}
        elif mu < 0:
            aux_pred = -mu * t_grid + saturation(mu, sigma)
            unused_pred = np.full(t_grid.shape, saturation(mu, sigma))
            expect = {"aux": 1.0}
        else:
            aux_pred = np.full(t_grid.shape, saturation(mu, sigma))
            unused_pred = mu * t_grid + saturation(mu, sigma)
            expect = {"unused": 1.0}
        curves[label] = (aux, unused, aux_pred, unused_pred)
        for key, y, y_ep in (("aux", aux, aux_ep), ("unused", unused, unused_ep)):
            if key in expect:
                slopes[f"{label} {key}"] = {"measured": loglog_slope(t_grid, y),
                                            "se": jackknife_slope_se(t_grid, y_ep),
                                            "predicted": expect[key]}
        for k, t in enumerate(t_grid):
            rows.append({"regime": label, "T": int(t), "mu_kwh": mu, "sigma_kwh": sigma,
                         "aux_kwh": aux[k], "aux_pred_kwh": aux_pred[k],
                         "unused_kwh": unused[k], "unused_pred_kwh": unused_pred[k]})
    bar.close()
    lines = ["regimes (reference mixture; unused = S_T + sum W; log-log slopes on "
             f"T in [{t_min}, {horizon}], {episodes} episodes each):"]
    for name, s in slopes.items():
        lines.append(f"  {name:<22} slope measured {s['measured']:.3f} ± {s['se']:.3f} (SE)   "
                     f"predicted {s['predicted']:.3f}")
    for label, (aux, unused, ap, up) in curves.items():
        lines.append(f"  {label:<13} at T={t_grid[-1]}: aux {aux[-1] * 1e3:8.2f} Wh (pred "
                     f"{ap[-1] * 1e3:8.2f}), unused {unused[-1] * 1e3:8.2f} Wh (pred "
                     f"{up[-1] * 1e3:8.2f})")
    report = "\n".join(lines)
    if out_dir is not None:
        out = Path(out_dir)

        write_csv(out / "regimes.csv", rows)
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
        colors = {"under-supply": "tab:red", "critical": "tab:purple",
                  "over-supply": "tab:green"}
        for ax, idx, title in ((axes[0], (0, 2), "cumulative auxiliary energy"),
                               (axes[1], (1, 3), "unused baseline energy (S_T + sum W)")):
            for label, cur in curves.items():
                ax.loglog(t_grid, cur[idx[0]] * 1e3, "o", ms=3, color=colors[label],
                          label=f"{label} (sim)")
                ax.loglog(t_grid, np.maximum(cur[idx[1]], 1e-12) * 1e3, "-", lw=1,
                          color=colors[label], label=f"{label} (O3/O4/O6)")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("T [slots]", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].set_ylabel("energy [Wh]", fontsize=8)
        axes[0].legend(fontsize=6)
        fig.suptitle("Regimes: linear growth off the critical point, sqrt(T) at it", fontsize=9)
        fig.tight_layout()
        _save(fig, out / "regimes.png")
        plt.close(fig)
    return {"rows": rows, "slopes": slopes, "report": report}


# --------------------------------------------------------------------------- routing error
def routing_error(out_dir: str | Path | None = None, horizon: int = 4096, episodes: int = 60,
                  seed: int = 0, crossovers: tuple[float, ...] = (30.0, 300.0, 3000.0),
                  progress: bool = True) -> dict[str, Any]:
    """O5: the scaling-law router with per-task energy underestimate delta at the critical point.

    delta is chosen so that T* = sigma^2/(lambda delta)^2 takes the values ``crossovers``
    (sigma of the error-free mean-matching mixture); delta = 0 is the reference curve. Each
    router picks the certainty-equivalent mixture on energies m - delta, so its real drift is
    exactly -lambda delta.
    """
    cfg = dataclasses.replace(PRESETS["critical"], horizon=horizon)
    lam = cfg.arrival_rate
    m0 = routing_model(cfg, class_blind=False)
    sigma0 = net_energy(cfg, max_value_mixture(m0, m0.mean_harvest_kwh)).sigma
    deltas = [0.0] + [sigma0 / (lam * math.sqrt(ts)) for ts in crossovers]
    bar = _bar(progress, len(deltas) * episodes, "routing-error")
    t_grid = _grid(horizon, 8)
    rows, curves, lines = [], [], [
        f"routing-error (critical point, {episodes} episodes, T up to {horizon}):"]
    for delta in deltas:
        pred_model = routing_model(cfg, class_blind=False, energy_bias_kwh=-delta)
        mix = max_value_mixture(pred_model, pred_model.mean_harvest_kwh)
        ne = net_energy(cfg, mix)
        run = simulate_static(cfg, mix, episodes, seed, progress=bar.update)
        aux = run.cum_aux.mean(axis=0)[t_grid - 1]
        sigma, drift = ne.sigma, -ne.mu
        t_star = crossover_slots(sigma, lam, delta)
        drift = drift if drift > 0 else 0.0
        diffusive = expected_aux_critical(sigma, t_grid)
        linear = (drift * t_grid + sigma**2 / (2 * drift)) if delta > 0 else None
        smooth = expected_aux_drift(sigma, drift, t_grid)
        curves.append((delta, t_star, aux, smooth))
        for k, t in enumerate(t_grid):
            rows.append({"delta_kwh": delta, "T": int(t), "T_star": t_star, "sigma_kwh": sigma,
                         "drift_kwh": drift, "aux_kwh": aux[k], "pred_kwh": smooth[k],
                         "pred_diffusive_kwh": diffusive[k],
                         "pred_linear_kwh": linear[k] if linear is not None else math.nan})
        at_star = ""
        if math.isfinite(t_star):
            k_star = int(np.argmin(np.abs(np.log(t_grid / min(t_star, t_grid[-1])))))
            at_star = (f"aux at T={t_grid[k_star]} {aux[k_star] * 1e3:7.2f} Wh "
                       f"(O5 {smooth[k_star] * 1e3:7.2f}), ")
        lines.append(
            f"  delta {delta * 1e3:6.4f} Wh/task (lambda delta {drift * 1e3:6.4f} Wh/slot, "
            f"T* {t_star:6.0f}): {at_star}at T={t_grid[-1]} {aux[-1] * 1e3:7.2f} Wh (O5 "
            f"{smooth[-1] * 1e3:7.2f}); slope over the last octave "
            f"{loglog_slope(t_grid[-6:], aux[-6:]):.2f}")
    bar.close()
    report = "\n".join(lines)
    if out_dir is not None:
        out = Path(out_dir)

        write_csv(out / "routing_error.csv", rows)
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        cmap = plt.get_cmap("viridis")
        for k, (delta, t_star, aux, smooth) in enumerate(curves):
            col = cmap(k / max(1, len(curves) - 1) * 0.85)
            lab = "delta = 0" if delta == 0 else f"delta = {delta * 1e3:.4f} Wh (T* = {t_star:.0f})"
            ax.loglog(t_grid, aux * 1e3, "o", ms=3, color=col, label=lab)
            ax.loglog(t_grid, smooth * 1e3, "-", lw=1, color=col)
            if math.isfinite(t_star) and t_grid[0] <= t_star <= t_grid[-1]:
                ax.axvline(t_star, color=col, ls=":", lw=1)
        ax.set_xlabel("T [slots]", fontsize=8)
        ax.set_ylabel("cumulative auxiliary energy [Wh]", fontsize=8)
        ax.set_title("Routing error: sqrt(T) bends to linear after T* (dotted); lines: O5",
                     fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, out / "routing_error.png")
        plt.close(fig)
    return {"rows": rows, "report": report}


# --------------------------------------------------------------------------- variance
def variance_mixtures(cfg: FleetConfig, accuracy_slack: float = DEFAULT_ACCURACY_SLACK
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The static mixtures of ``mean_matching`` and ``variance_aware`` (continuous actions)."""
    model = routing_model(cfg, class_blind=False)
    target = model.mean_harvest_kwh
    mm = max_value_mixture(model, target)
    va = min_second_moment_mixture(model, target, max_accuracy(model, target) - accuracy_slack)
    return mm, va


def ratio_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Ratio of means mean(a)/mean(b) of paired samples and its standard error (delta method)."""
    r = float(a.mean() / b.mean())
    se = float(np.std(a - r * b, ddof=1) / (math.sqrt(a.size) * b.mean()))
    return r, se


def variance(out_dir: str | Path | None = None, episodes: int = 600, seed: int = 0,
             harvest_cvs: tuple[float, ...] = (0.0, 0.3, 0.6), horizon: int = 288,
             progress: bool = True) -> dict[str, Any]:
    """O2/O8 at the critical point: aux(variance_aware) / aux(mean_matching) vs sigma ratio.

    Both mixtures have mean demand = mean harvest, so O4 gives E[sum U] proportional to sigma
    and the ratio of their auxiliary draws is sigma_va / sigma_mm. Run for several harvest
    coefficients of variation (harvest variance dilutes the ratio towards 1).
    """
    bar = _bar(progress, 2 * len(harvest_cvs) * episodes, "variance")
    rows, lines = [], [f"variance (critical point, T = {horizon}, {episodes} paired episodes):"]
    paths = {}
    for cv in harvest_cvs:
        cfg = dataclasses.replace(PRESETS["critical"], harvest_cv=cv, horizon=horizon)
        mm, va = variance_mixtures(cfg)
        ne_mm, ne_va = net_energy(cfg, mm), net_energy(cfg, va)
        run_mm = simulate_static(cfg, mm, episodes, seed, progress=bar.update)
        run_va = simulate_static(cfg, va, episodes, seed, progress=bar.update)
        a_mm, a_va = run_mm.cum_aux[:, -1], run_va.cum_aux[:, -1]
        ratio, se = ratio_ci(a_va, a_mm)
        pred = ne_va.sigma / ne_mm.sigma
        rows.append({"harvest_cv": cv, "T": horizon, "episodes": episodes,
                     "sigma_mm_kwh": ne_mm.sigma, "sigma_va_kwh": ne_va.sigma,
                     "aux_mm_kwh": a_mm.mean(), "aux_va_kwh": a_va.mean(),
                     "aux_mm_pred_kwh": expected_aux_critical(ne_mm.sigma, horizon),
                     "aux_va_pred_kwh": expected_aux_critical(ne_va.sigma, horizon),
                     "ratio": ratio, "ratio_se": se, "ratio_pred": pred})
        paths[cv] = (run_mm.cum_aux.mean(axis=0), run_va.cum_aux.mean(axis=0), ne_mm, ne_va)
        lines.append(
            f"  harvest_cv {cv:.1f}: aux mean_matching {a_mm.mean() * 1e3:6.2f} Wh (O4 "
            f"{rows[-1]['aux_mm_pred_kwh'] * 1e3:6.2f}), variance_aware {a_va.mean() * 1e3:6.2f}"
            f" Wh (O4 {rows[-1]['aux_va_pred_kwh'] * 1e3:6.2f}); ratio {ratio:.3f} ± "
            f"{1.96 * se:.3f} (95%), predicted sigma ratio {pred:.3f}")
    bar.close()
    report = "\n".join(lines)
    if out_dir is not None:
        out = Path(out_dir)

        write_csv(out / "variance.csv", rows)
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
        t = np.arange(1, horizon + 1)
        cmap = plt.get_cmap("tab10")
        for k, (cv, (mm_c, va_c, ne_mm, ne_va)) in enumerate(paths.items()):
            col = cmap(k)
            axes[0].plot(t, mm_c * 1e3, "-", color=col, lw=1.2, label=f"mean_matching, cv {cv}")
            axes[0].plot(t, va_c * 1e3, "--", color=col, lw=1.2,
                         label=f"variance_aware, cv {cv}")
            axes[0].plot(t, expected_aux_critical(ne_mm.sigma, t) * 1e3, ":", color="k", lw=0.7)
            axes[0].plot(t, expected_aux_critical(ne_va.sigma, t) * 1e3, ":", color="k", lw=0.7)
        axes[0].set_xlabel("T [slots]", fontsize=8)
        axes[0].set_ylabel("cumulative auxiliary energy [Wh]", fontsize=8)
        axes[0].set_title("aux draw at the critical point (dotted: O4)", fontsize=9)
        axes[0].legend(fontsize=6)
        axes[0].tick_params(labelsize=7)
        x = np.arange(len(rows))
        axes[1].bar(x - 0.18, [r["ratio"] for r in rows], 0.36,
                    yerr=[1.96 * r["ratio_se"] for r in rows], capsize=3, label="measured")
        axes[1].bar(x + 0.18, [r["ratio_pred"] for r in rows], 0.36,
                    label="sigma_va / sigma_mm (O2)")
        axes[1].set_xticks(x)
        axes[1].set_xticklabels([f"cv {r['harvest_cv']}" for r in rows], fontsize=8)
        axes[1].set_ylim(0.0, 1.1)
        axes[1].axhline(1.0, color="k", lw=0.5)
        axes[1].set_title("aux(variance_aware) / aux(mean_matching)", fontsize=9)
        axes[1].legend(fontsize=7, loc="lower right")
        axes[1].tick_params(labelsize=7)
        fig.tight_layout()
        _save(fig, out / "variance.png")
        plt.close(fig)
    return {"rows": rows, "report": report}


# --------------------------------------------------------------------------- dispatch
def _bar(progress: bool, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, unit="ep", leave=False)


EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "regimes": regimes,
    "routing-error": routing_error,
    "variance": variance,
}


def run_experiment(name: str, out_dir: str | Path, seed: int = 0, progress: bool = True,
                   **kwargs: Any) -> str:
    """Run experiment ``name`` writing PNG and CSV into ``out_dir``; return its report."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    result = EXPERIMENTS[name](out_dir=out_dir, seed=seed, progress=progress, **kwargs)
    atomic_write_text(Path(out_dir) / f"{name.replace('-', '_')}.txt", result["report"] + "\n")
    return result["report"]
