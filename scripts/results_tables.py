"""Markdown results table from ``summary.json`` files of ``train.py`` / ``evaluate.py``.

Usage::

    python scripts/results_tables.py SUMMARY.json [SUMMARY.json ...] [--agent-label NAME]

One row per summary (an id, or a training seed of an id): the learned agent's return, each
heuristic's, the oracle bound, the agent's paired difference to the best heuristic on the same
episodes (mean and 95% interval, ``evaluate.py``'s ``diff_vs_best``) and the normalised
scores (0 = random, 1 = oracle bound) of the agent and of the best heuristic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEURISTICS = ("random", "cheapest", "mean_matching", "variance_aware", "variance_feedback")


def _cell(stat: dict | None, digits: int = 2, sign: bool = False) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:{'+' if sign else ''}.{digits}f} ± {stat['half_width']:.{digits}f}"


def paired(episodes_csv: Path, a: str, b: str) -> dict:
    """Mean and 95% Student-t half width of reward(a) - reward(b) over the paired episodes."""
    import csv

    import numpy as np
    from scipy import stats

    rewards: dict[str, dict[int, float]] = {}
    with open(episodes_csv) as fh:
        for r in csv.DictReader(fh):
            rewards.setdefault(r["policy"], {})[int(r["episode"])] = float(r["reward"])
    d = np.array([rewards[a][k] - rewards[b][k] for k in sorted(rewards[a])])
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return {"mean": float(d.mean()), "half_width": half}


def row(summary: dict, label: str | None = None, versus: tuple[str, ...] = (),
        episodes_csv: Path | None = None) -> tuple[list[str], list[str]]:
    """(header, cells) of one summary (``versus``: extra paired columns, agent minus each)."""
    pols = summary["policies"]
    agents = [k for k, v in pols.items() if v.get("kind") == "model" or ":" in k]
    if len(agents) != 1:
        raise SystemExit(f"{summary['env_id']}: expected one trained agent, got {agents}")
    agent = pols[agents[0]]
    best = summary["best_heuristic"]
    header = ["id", "learned agent"] + list(HEURISTICS) + [
        "oracle bound", "agent minus best heuristic (paired)", "agent score", "best heuristic score"]
    cells = [label or f"`{summary['env_id']}`", f"**{_cell(agent['reward'])}**"]
    cells += [_cell(pols.get(h, {}).get("reward")) for h in HEURISTICS]
    cells += [_cell(pols.get("oracle", {}).get("reward")),
              f"**{_cell(agent['diff_vs_best'], sign=True)}** (vs {best})",
              _cell(agent["score"], 3), _cell(pols[best]["score"], 3)]
    for name in versus:
        header.append(f"agent minus {name} (paired)")
        cells.append(_cell(paired(episodes_csv, agents[0], name), sign=True))
    return header, cells


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("summaries", nargs="+", type=Path)
    p.add_argument("--label", action="append", default=None,
                   help="row label per summary, in order (default: the env id)")
    p.add_argument("--versus", action="append", default=[],
                   help="add a paired column: agent minus this policy (episodes.csv beside "
                        "the summary)")
    args = p.parse_args(argv)
    labels = args.label or [None] * len(args.summaries)
    if len(labels) != len(args.summaries):
        print("results_tables.py: error: give one --label per summary", file=sys.stderr)
        return 2
    lines = []
    for path, label in zip(args.summaries, labels):
        header, cells = row(json.loads(path.read_text()), label, tuple(args.versus),
                            path.parent / "episodes.csv")
        if not lines:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
