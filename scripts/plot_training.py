"""Learning curves of train.py runs: validation return against environment steps.

Usage::

    python scripts/plot_training.py RUN_DIR [RUN_DIR ...] --out docs/figures/learning_curves.png \
        [--baseline NAME=RETURN ...]

Each run directory contributes its ``evaluations.npz`` (mean and 95% interval of the return
over the fixed validation seeds at every evaluation); runs on the same env share a panel.
Baselines are drawn as horizontal lines in every panel (``NAME@ENV=RETURN`` limits one to a
panel).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Draw the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME[@ENV]=RETURN")
    args = p.parse_args(argv)
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for run in args.runs:
        cfg = json.loads((run / "config.json").read_text())["train"]
        d = np.load(run / "evaluations.npz")
        curves.setdefault(cfg["env"], []).append(
            (f"{cfg['algo']} seed {cfg['seed']}", d["timesteps"], d["results"]))
    envs_ = sorted(curves)
    fig, axes = plt.subplots(1, len(envs_), figsize=(4.2 * len(envs_), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs_):
        for label, t, res in curves[env]:
            m = res.mean(axis=1)
            half = 1.96 * res.std(axis=1, ddof=1) / np.sqrt(res.shape[1])
            ax.plot(t / 1e3, m, label=label)
            ax.fill_between(t / 1e3, m - half, m + half, alpha=0.25)
        names: list[str] = []
        for spec in args.baseline:
            name = spec.rsplit("=", 1)[0].split("@", 1)[0]
            if name not in names:
                names.append(name)
        for spec in args.baseline:
            name, value = spec.rsplit("=", 1)
            if "@" in name:
                name, only = name.split("@", 1)
                if only != env:
                    continue
            ax.axhline(float(value), ls="--", lw=1, color=f"C{names.index(name) + 3}",
                       label=name)
        ax.set_title(env)
        ax.set_xlabel("environment steps [thousands]")
        ax.set_ylabel("validation return per episode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
