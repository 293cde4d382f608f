"""Trace statistics that the realistic scenarios reproduce (source file vs simulator).

Run from the repository root: ``python docs/realistic_stats.py``; prints Markdown tables.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.calibration import fit_classes  # noqa: E402
from envs.config import PRESETS, FleetConfig  # noqa: E402
from envs.dynamics import FleetCore  # noqa: E402
from envs.trace_processes import ARRIVAL_TRACES, wind_power_curve  # noqa: E402
from envs.traces import (  # noqa: E402
    load_azure_per_second,
    load_nsrdb_ghi,
    load_servegen_pmf,
    load_servegen_rate,
    MONTH_START_DAY,
    load_wind_80m,
    months_mean,
)

N_EP = 200


def supply_rows() -> list[str]:
    rows = []
    ghi = load_nsrdb_ghi()
    for name in ("solar_day", "solar_winter"):
        cfg = PRESETS[name]
        core = FleetCore(cfg, 1)
        hp = core.harvest_process
        rng = np.random.default_rng(0)
        h = np.stack([hp.sample(rng, cfg.horizon) for _ in range(N_EP)])
        src = months_mean(ghi, cfg.harvest_months)
        sim = h.mean() / hp.scale
        days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                               for m in cfg.harvest_months])
        mean_day = ghi.values.reshape(365, 48)[days].mean(0)
        peak_src = mean_day.argmax() / 2
        prof = h.mean(0)
        rows.append(f"| {name} | mean GHI, months {cfg.harvest_months} [W/m2] | {src:.1f} | "
                    f"{sim:.1f} ({N_EP} seeded days) |")
        rows.append(f"| {name} | hour of peak of the mean day | {peak_src:.1f} | "
                    f"{(cfg.trace_start_hour + prof.argmax() * cfg.slot_minutes / 60) % 24:.1f} |")
    w = load_wind_80m()
    cfg = dataclasses.replace(PRESETS["wind_day"], harvest_months=(), trace_start_day=0,
                              horizon=288 * 364, harvest_reference_months=())
    hp = FleetCore(cfg, 1).harvest_process
    h = hp.sample(np.random.default_rng(0), cfg.horizon)
    cf = h.mean() / (hp.capacity_kw * cfg.slot_minutes / 60)
    rows.append(f"| wind (year) | capacity factor, generic curve | "
                f"{wind_power_curve(w.values).mean():.3f} | {cf:.3f} |")
    for name in ("wind_day", "wind_winter"):
        cfg = PRESETS[name]
        hp = FleetCore(cfg, 1).harvest_process
        rng = np.random.default_rng(0)
        h = np.stack([hp.sample(rng, cfg.horizon) for _ in range(N_EP)])
        src = months_mean(FleetCore(cfg, 1).harvest_process.series, cfg.harvest_months)
        rows.append(f"| {name} | capacity factor, months {cfg.harvest_months} | {src:.3f} | "
                    f"{h.mean() / hp.scale:.3f} ({N_EP} seeded days) |")
    return rows


def arrival_rows() -> list[str]:
    rows = []
    rate = load_servegen_rate()
    for name in ("r1_trace", "r1_trace_bursty"):
        cfg = PRESETS[name]
        proc = ARRIVAL_TRACES["servegen_r1"](cfg)
        rng = np.random.default_rng(0)
        c = np.stack([proc.sample(rng, cfg.horizon).sum(1) for _ in range(N_EP)])
        start = int(cfg.trace_start_hour)
        hourly = np.roll(c.reshape(N_EP, 24, 12).sum(2).mean(0), start)  # by hour of day
        src_h = rate.reshape(24, 6).mean(1)
        corr = np.corrcoef(hourly, src_h)[0, 1]
        rows.append(f"| {name} | mean tasks / slot (target arrival_rate) | "
                    f"{cfg.arrival_rate:.2f} | {c.mean():.2f} |")
        rows.append(f"| {name} | hourly peak / trough | {src_h.max() / src_h.min():.2f} | "
                    f"{hourly.max() / hourly.min():.2f} |")
        rows.append(f"| {name} | peak hour; correlation of hourly profiles | "
                    f"{src_h.argmax()} | {hourly.argmax()}; r = {corr:.3f} |")
        mu = proc.expected_counts(cfg.horizon)
        idx = ((c - mu) ** 2).mean() / mu.mean()
        rows.append(f"| {name} | index of dispersion per slot (model: CV^2 of gaps) | "
                    f"{cfg.arrival_cv ** 2:.2f} | {idx:.2f} |")
    az = load_azure_per_second()
    for trace in ("conv", "code"):
        src = az[trace].astype(float)
        n = src.size // 60
        per_min = src[:n * 60].reshape(n, 60).sum(1)
        cfg = FleetConfig(arrival_process=f"azure_{trace}", slot_minutes=1.0, horizon=n)
        proc = ARRIVAL_TRACES[f"azure_{trace}"](cfg)
        rng = np.random.default_rng(0)
        sim = np.stack([proc.sample(rng, n).sum(1) for _ in range(N_EP)])
        rows.append(f"| azure_{trace} | CV of counts per minute | "
                    f"{per_min.std() / per_min.mean():.3f} | "
                    f"{(sim.std(1) / sim.mean(1)).mean():.3f} (arrival_rate 20) |")
        rows.append(f"| azure_{trace} | max / mean per minute | "
                    f"{per_min.max() / per_min.mean():.2f} | "
                    f"{(sim.max(1) / sim.mean(1)).mean():.2f} |")
    return rows


def fit_rows() -> list[str]:
    rows = []
    cfg = PRESETS["r1_trace"]
    for window, label in (("all", "whole day (R1Trace)"), ("21600", "06-12 h (R1TraceHeavy)")):
        f = fit_classes(load_servegen_pmf("output_tokens", window), cfg.model_step_success,
                        cfg.step_tokens)
        for k in ("mean", "p10", "p50", "p90", "p99"):
            rows.append(f"| output tokens, {label} | {k} | {f.target[k]:,.0f} | "
                        f"{f.fleet[k]:,.0f} |")
        rows.append(f"| output tokens, {label} | class skills m_c; shares | | "
                    f"{f.class_skills}; {f.class_shares} |")
    return rows


if __name__ == "__main__":
    print("| scenario | statistic | source file | simulator |")
    print("|---|---|---|---|")
    for r in supply_rows() + arrival_rows() + fit_rows():
        print(r)
