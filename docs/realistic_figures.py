"""One day of each realistic scenario (supply, demand, storage, tasks) as small PNGs.

Policy: the reference mixture (every class split uniformly over all configurations), nothing
deferred; it is the mixture that ``provisioning`` is defined against. Run from the repository
root: ``python docs/realistic_figures.py`` (writes ``docs/figures/realistic_*.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gymnasium as gym  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import envs  # noqa: E402,F401
from agents.files import atomic_savefig  # noqa: E402
from envs.actions import mixture_to_action, queued_action  # noqa: E402
from envs.outcomes import reference_mixture  # noqa: E402

OUT = Path(__file__).resolve().parent / "figures"
IDS = ["lrm/SolarDay-v0", "lrm/SolarWinter-v0", "lrm/WindDay-v0", "lrm/R1Trace-v0"]


def run_day(env_id: str, seed: int) -> dict[str, np.ndarray]:
    env = gym.make(env_id)
    cfg = env.unwrapped.config
    mix = reference_mixture(cfg)
    if cfg.queue_enabled:
        action = queued_action(mix, np.zeros(cfg.n_classes))
    else:
        action = mixture_to_action(mix)
    env.reset(seed=seed)
    keys = ("harvest_kwh", "demand_kwh", "storage_kwh", "aux_kwh", "waste_kwh", "arrived",
            "served", "dropped", "queued")
    rows = []
    for _ in range(cfg.horizon):
        _, _, _, _, info = env.step(action)
        rows.append([info[k] for k in keys])
    out = dict(zip(keys, np.array(rows, dtype=float).T))
    out["cfg"] = cfg
    return out


def plot(env_id: str, seed: int = 0) -> Path:
    d = run_day(env_id, seed)
    cfg = d["cfg"]
    hours = cfg.trace_start_hour + np.arange(cfg.horizon) * cfg.slot_minutes / 60
    fig, ax = plt.subplots(3, 1, figsize=(6.0, 4.6), sharex=True, dpi=100)
    ax[0].plot(hours, 1e3 * d["harvest_kwh"], color="tab:green", lw=1.2, label="harvest")
    ax[0].plot(hours, 1e3 * d["demand_kwh"], color="tab:red", lw=0.9, label="demand")
    ax[0].set_ylabel("Wh / slot")
    ax[0].legend(loc="upper left", fontsize=7, ncol=2, frameon=False)
    ax[1].fill_between(hours, 1e3 * d["storage_kwh"], color="tab:blue", alpha=0.5, lw=0)
    ax[1].axhline(1e3 * cfg.storage_kwh, color="tab:blue", lw=0.8, ls="--")
    ax[1].plot(hours, 1e3 * np.cumsum(d["aux_kwh"]) / 10, color="k", lw=0.8,
               label="cum. auxiliary / 10")
    ax[1].plot(hours, 1e3 * np.cumsum(d["waste_kwh"]) / 10, color="tab:orange", lw=0.8,
               label="cum. wasted / 10")
    ax[1].set_ylabel("store, Wh")
    ax[1].legend(loc="upper left", fontsize=7, ncol=2, frameon=False)
    ax[2].plot(hours, d["arrived"], color="0.3", lw=0.8, label="arrived")
    if cfg.queue_enabled:
        ax[2].plot(hours, d["queued"], color="tab:purple", lw=0.9, label="queued")
        ax[2].plot(hours, d["dropped"], color="tab:red", lw=0.9, label="dropped")
    ax[2].set_ylabel("tasks / slot")
    ax[2].set_xlabel("hour of day (local)")
    ax[2].legend(loc="upper left", fontsize=7, ncol=3, frameon=False)
    ticks = np.arange(np.ceil(hours[0] / 3) * 3, hours[-1] + 1e-9, 3)
    ax[2].set_xticks(ticks, [f"{int(x) % 24:02d}" for x in ticks])
    fig.suptitle(f"{env_id}, seed {seed}, reference mixture", fontsize=9)
    fig.tight_layout(pad=0.4)
    OUT.mkdir(parents=True, exist_ok=True)
    name = env_id.split("/")[1].split("-")[0].lower()
    path = OUT / f"realistic_{name}.png"
    atomic_savefig(fig, path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    for env_id in IDS:
        print(plot(env_id))
