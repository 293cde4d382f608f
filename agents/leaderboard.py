"""The leaderboard of a grid of training runs: ``python -m agents.leaderboard GRID_DIR``.

For every training id of the grid (``train.py --env A,B --algo ... --seed ...``) and every
test id (the training id itself and its held-out ids, :data:`envs.HELD_OUT`), the trained
agents of all algorithms and seeds, every heuristic and the oracle bound run on the same
held-out test episodes (paired; seeds derived from ``agents.train_config.TEST_SEED``, the env
overrides of the runs). Per policy: the mean episode reward with its 95 % interval, the paired
difference to the best heuristic and the normalised score (0 = random, 1 = oracle bound); an
agent's figures are averaged over its seeds, with the spread (standard deviation) of its seed
means.

Writes ``OUT/leaderboard.md``, ``OUT/leaderboard.csv`` and ``OUT/leaderboard.png`` (default
``OUT``: ``docs``) and the evaluation files of each test id under ``GRID_DIR/leaderboard/``.
``--ray-address`` runs the evaluations' episode chunks on a Ray cluster (as
``evaluate.py --ray-address``).
"""

from __future__ import annotations

import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from agents.cli import OneLineParser, UsageError
from agents.files import atomic_write_text

#: Heuristics of the leaderboard (with the oracle bound).
HEURISTICS = ("random", "cheapest", "mean_matching", "variance_aware", "variance_feedback")


def load_grid(grid: Path) -> list[dict[str, Any]]:
    """The finished runs of a grid: env, algo, seed, run directory, env overrides."""
    path = grid / "trials.json"
    if not path.exists():
        raise UsageError(f"GRID_DIR: {grid} holds no finished grid (no trials.json)")
    runs = []
    for row in json.loads(path.read_text()):
        d = Path(row["run_dir"])
        if row["status"] != "done" or not (d / "model.zip").exists():
            print(f"note: {d.name} did not finish; left out", file=sys.stderr)
            continue
        saved = json.loads((d / "config.json").read_text())
        runs.append({"env": row["env"], "algo": row["algo"], "seed": row["seed"],
                     "run_dir": d, "env_kwargs": saved["train"].get("env_kwargs", {}),
                     "timesteps": saved["train"].get("timesteps")})
    if not runs:
        raise UsageError(f"GRID_DIR: {grid} has no finished run")
    return runs


def _ci(entry: dict | None, key: str = "mean") -> float | None:
    return None if entry is None else entry.get(key)


def build(grid: Path, episodes: int, ray_address: str | None = None,
          progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate and return the leaderboard rows."""
    import envs
    from agents import POLICIES
    from agents.evaluation import run_evaluation
    from agents.train_config import TEST_SEED

    runs = load_grid(grid)
    rows: list[dict[str, Any]] = []
    for train_env in dict.fromkeys(r["env"] for r in runs):
        mine = [r for r in runs if r["env"] == train_env]
        kwargs = mine[0]["env_kwargs"]
        if any(r["env_kwargs"] != kwargs for r in mine):
            raise UsageError(f"GRID_DIR: the runs on {train_env} differ in --env-kwarg")
        for test_env in (train_env, *envs.HELD_OUT.get(train_env, ())):
            specs = {f"{r['algo']}:{r['run_dir'] / 'model.zip'}": r for r in mine}
            heur = [h for h in HEURISTICS if h in POLICIES]
            out = grid / "leaderboard" / f"{train_env.replace('/', '_')}__on__" \
                f"{test_env.replace('/', '_')}"
            summary = run_evaluation(test_env, [*specs, *heur, "oracle"], episodes, TEST_SEED,
                                     out_dir=out, env_kwargs=kwargs, progress=progress,
                                     plots=False, workers=1 if ray_address else 0,
                                     ray_address=ray_address)
            pol = summary["policies"]
            best = summary["best_heuristic"]
            common = {"train_env": train_env, "test_env": test_env,
                      "held_out": test_env != train_env, "episodes": summary["episodes"],
                      "best_heuristic": best}
            for name in [*heur, "oracle"]:
                e = pol[name]
                rows.append({**common, "policy": name, "kind": e["kind"], "timesteps": "",
                             "seeds": "",
                             "reward": _ci(e["reward"]), "reward_ci": _ci(e["reward"],
                                                                          "half_width"),
                             "seed_sd": None, "diff_vs_best": _ci(e["diff_vs_best"]),
                             "diff_ci": _ci(e["diff_vs_best"], "half_width"),
                             "score": _ci(e["score"])})
            for algo in dict.fromkeys(r["algo"] for r in mine):
                entries = [(r["seed"], pol[s]) for s, r in specs.items() if r["algo"] == algo]
                means = [e["reward"]["mean"] for _, e in entries]

                def avg(key: str, field: str = "mean", es=entries) -> float | None:
                    vals = [e[key][field] for _, e in es if e.get(key) is not None]
                    return statistics.fmean(vals) if vals else None

                steps = sorted({r["timesteps"] for r in mine if r["algo"] == algo})
                rows.append({**common, "policy": algo, "kind": "model",
                             "timesteps": " ".join(str(t) for t in steps),
                             "seeds": " ".join(str(s) for s, _ in entries),
                             "reward": statistics.fmean(means),
                             "reward_ci": avg("reward", "half_width"),
                             "seed_sd": statistics.stdev(means) if len(means) > 1 else None,
                             "diff_vs_best": avg("diff_vs_best"),
                             "diff_ci": avg("diff_vs_best", "half_width"),
                             "score": avg("score")})
    return rows


def _f(x: Any, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def to_markdown(rows: list[dict[str, Any]], grid: Path, command: str) -> str:
    """The leaderboard as Markdown: one table per training id and test id."""
    budgets = sorted({f"{r['policy']} {r['timesteps']}" for r in rows if r.get("timesteps")})
    lines = ["# Leaderboard", "", f"Training steps per agent: {', '.join(budgets)}.", "",
             f"Made by `{command}` from the grid `{grid.name}`. Mean episode reward on the "
             "held-out test episodes (the same episodes for every policy of a table) ± the "
             "half-width of its 95 % interval; an agent's figures are averaged over its seeds, "
             "sd = standard deviation of its seed means; diff = paired difference to the best "
             "heuristic (± 95 %); score: 0 = random, 1 = oracle bound.", ""]
    groups = dict.fromkeys((r["train_env"], r["test_env"]) for r in rows)
    for train_env, test_env in groups:
        g = [r for r in rows if (r["train_env"], r["test_env"]) == (train_env, test_env)]
        tag = "held-out" if g[0]["held_out"] else "own id"
        lines += [f"## trained on `{train_env}`, tested on `{test_env}` ({tag}, "
                  f"{g[0]['episodes']} episodes; best heuristic {g[0]['best_heuristic']})", "",
                  "| policy | seeds | reward | seed sd | diff vs best heuristic | score |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(g, key=lambda r: -(r["reward"] or 0)):
            name = f"**{r['policy']}**" if r["kind"] == "model" else r["policy"]
            lines.append(f"| {name} | {r['seeds']} | {_f(r['reward'])} ± "
                         f"{_f(r['reward_ci'])} | {_f(r['seed_sd'])} | "
                         f"{_f(r['diff_vs_best'])} ± {_f(r['diff_ci'])} | "
                         f"{_f(r['score'], 3)} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Normalised score of every policy per (training id, test id)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(dict.fromkeys((r["train_env"], r["test_env"]) for r in rows))
    names = list(dict.fromkeys(r["policy"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2), 4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        vals = [next((r["score"] for r in rows if (r["train_env"], r["test_env"]) == g
                      and r["policy"] == name), np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + k * width, [np.nan if v is None else v for v in vals],
               width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{a.split('/')[-1]}\non {b.split('/')[-1]}" for a, b in groups],
                       fontsize=8)
    ax.set_ylabel("normalised score (0 random, 1 oracle)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when written, 2 for bad input."""
    p = OneLineParser(prog="python -m agents.leaderboard", description=__doc__.splitlines()[0])
    p.add_argument("grid", metavar="GRID_DIR", help="the --out of a finished train.py grid")
    p.add_argument("--episodes", type=int, default=20, help="test episodes per id (>= 1)")
    p.add_argument("--out", default="docs", help="where leaderboard.md/.csv/.png go")
    p.add_argument("--ray-address", default=None, help="run the evaluations on Ray")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        if args.episodes < 1:
            raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
        from agents.cli import check_out_dir

        out = check_out_dir(args.out)
        grid = Path(args.grid)
        if args.ray_address is not None:
            from agents.ray_address import check_ray_address

            check_ray_address(args.ray_address)  # in a few seconds, before any evaluation
        rows = build(grid, args.episodes, args.ray_address, progress=not args.quiet)
    except UsageError as exc:
        print(f"leaderboard: error: {exc}", file=sys.stderr)
        return 2
    import csv

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    command = "python -m agents.leaderboard " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    md = to_markdown(rows, grid, command)
    atomic_write_text(out / "leaderboard.md", md + "\n")
    plot(rows, out / "leaderboard.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
