"""The leaderboard of grids of training runs: ``python -m agents.leaderboard GRID_DIR ...``.

For every training id of the grid (``train.py --env A,B --algo ... --seed ...``) and every
test id (the training id itself and its held-out ids, :data:`envs.HELD_OUT`), the trained
agents of all algorithms and seeds, every heuristic and the oracle bound run on the same
held-out test episodes (paired; seeds derived from ``agents.train_config.TEST_SEED``, the env
overrides of the runs). Per policy: the mean episode reward with its 95 % interval, the paired
difference to the best heuristic and the normalised score (0 = random, 1 = oracle bound); an
agent's figures are those of its seed-averaged policy (per test episode the mean reward of its
seeds): its mean, 95 % interval, paired difference to the best heuristic (interval over the
episodes) and score, with the spread (standard deviation) of its seed means and each seed's own
paired difference.

Several grids can be combined (``GRID_DIR [GRID_DIR ...]``, e.g. one grid per group of ids);
a training id's evaluation files go under the ``leaderboard/`` folder of the grid holding it.

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

#: Lowest normalised score the PNG shows (lower bars are cut there and labelled).
FLOOR = -0.5

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


def load_grids(grids: list[Path]) -> list[dict[str, Any]]:
    """The finished runs of several grids (each run tagged with its grid); a training id, algo
    and seed may appear in one grid only."""
    runs: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, int], Path] = {}
    for grid in grids:
        for r in load_grid(grid):
            key = (r["env"], r["algo"], r["seed"])
            if key in seen:
                raise UsageError(f"GRID_DIR: {key[0]} {key[1]} seed {key[2]} is in both "
                                 f"{seen[key]} and {grid}")
            seen[key] = grid
            runs.append({**r, "grid": grid})
    return runs


def episode_rewards(out_dir: Path) -> dict[str, list[float]]:
    """Per-policy episode rewards (in episode order) of an evaluation's ``episodes.csv``."""
    import csv

    rows: dict[str, list[tuple[int, float]]] = {}
    with (out_dir / "episodes.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["policy"], []).append((int(row["episode"]),
                                                       float(row["reward"])))
    return {name: [r for _, r in sorted(v)] for name, v in rows.items()}


def seed_averaged(per_seed: list[list[float]], best: list[float], random_reward: float,
                  oracle_reward: float) -> dict[str, Any]:
    """Figures of an agent's seed-averaged policy on paired test episodes.

    ``per_seed``: each seed's episode rewards; ``best``: the best heuristic's on the same
    episodes; ``random_reward``/``oracle_reward``: the score's 0 and 1 (mean rewards).
    Returns the mean reward with its 95 % interval over the episodes of the per-episode seed
    mean, its paired difference to ``best`` likewise, the normalised score, the standard
    deviation of the seed means, and each seed's own paired difference (mean, half-width).
    """
    import numpy as np

    from agents.evaluation import mean_ci

    r = np.asarray(per_seed, dtype=np.float64)
    b = np.asarray(best, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != b.size or r.shape[0] < 1:
        raise ValueError(f"per_seed must be (seeds, {b.size}) episode rewards, got shape "
                         f"{r.shape}")
    avg = r.mean(axis=0)
    reward, diff = mean_ci(avg), mean_ci(avg - b)
    span = oracle_reward - random_reward
    means = r.mean(axis=1)
    return {"reward": reward["mean"], "reward_ci": reward["half_width"],
            "diff_vs_best": diff["mean"], "diff_ci": diff["half_width"],
            "score": (reward["mean"] - random_reward) / span if span else None,
            "seed_sd": float(means.std(ddof=1)) if means.size > 1 else None,
            "score_sd": float(means.std(ddof=1)) / span if means.size > 1 and span else None,
            "seed_diffs": [(d["mean"], d["half_width"]) for d in (mean_ci(x - b) for x in r)]}


def _seed_diffs_text(diffs: list[tuple[float, float]]) -> str:
    return "; ".join(f"{m:+.2f} ± {h:.2f}" for m, h in diffs)


def _ci(entry: dict | None, key: str = "mean") -> float | None:
    return None if entry is None else entry.get(key)


def build(grids: list[Path], episodes: int, ray_address: str | None = None,
          progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate and return the leaderboard rows."""
    import envs
    from agents import POLICIES
    from agents.evaluation import run_evaluation
    from agents.train_config import TEST_SEED

    runs = load_grids(grids)
    rows: list[dict[str, Any]] = []
    for train_env in dict.fromkeys(r["env"] for r in runs):
        mine = [r for r in runs if r["env"] == train_env]
        kwargs = mine[0]["env_kwargs"]
        if any(r["env_kwargs"] != kwargs for r in mine):
            raise UsageError(f"GRID_DIR: the runs on {train_env} differ in --env-kwarg")
        for test_env in (train_env, *envs.HELD_OUT.get(train_env, ())):
            specs = {f"{r['algo']}:{r['run_dir'] / 'model.zip'}": r for r in mine}
            heur = [h for h in HEURISTICS if h in POLICIES]
            out = mine[0]["grid"] / "leaderboard" / f"{train_env.replace('/', '_')}__on__" \
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
                             "score": _ci(e["score"]), "score_sd": None, "seed_diffs": "",
                             "seeds_above": ""})
            per_episode = episode_rewards(out)
            ref = summary["score_reference"]
            for algo in dict.fromkeys(r["algo"] for r in mine):
                entries = [(r["seed"], s) for s, r in specs.items() if r["algo"] == algo]
                agg = seed_averaged([per_episode[s] for _, s in entries], per_episode[best],
                                    ref["random_reward"], ref["oracle_reward"])
                above = sum(m - h > 0 for m, h in agg["seed_diffs"])
                steps = sorted({r["timesteps"] for r in mine if r["algo"] == algo})
                rows.append({**common, "policy": algo, "kind": "model",
                             "timesteps": " ".join(str(t) for t in steps),
                             "seeds": " ".join(str(s) for s, _ in entries),
                             **{k: agg[k] for k in ("reward", "reward_ci", "seed_sd",
                                                    "diff_vs_best", "diff_ci", "score")},
                             "score_sd": agg["score_sd"],
                             "seed_diffs": _seed_diffs_text(agg["seed_diffs"]),
                             "seeds_above": f"{above}/{len(entries)}"})
    return rows


def _f(x: Any, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return ""
    x = round(x, digits) + 0.0  # no "-0.000" for a score of -1e-17
    return f"{x:{'+' if sign else ''}.{digits}f}"


def to_markdown(rows: list[dict[str, Any]], grids: list[Path], command: str) -> str:
    """The leaderboard as Markdown: an overview (one line per training id and test id), then
    one table per training id and test id."""
    budgets = sorted({f"{r['policy']} {r['timesteps']}" for r in rows if r.get("timesteps")})
    names = ", ".join(f"`{g.name}`" for g in grids)
    lines = ["# Leaderboard", "", f"Training steps per agent: {', '.join(budgets)}.", "",
             f"Made by `{command}` from the grid{'s' if len(grids) > 1 else ''} {names}. "
             "Mean episode reward on the held-out test episodes (the same episodes for every "
             "policy of a table) ± the half-width of its 95 % interval over the episodes. An "
             "agent's row is its seed-averaged policy (per episode the mean reward of its "
             "seeds); sd = standard deviation of its seed means; diff = paired difference to "
             "the best heuristic (± 95 %), for the seed average and for each seed (in seed "
             "order); score: 0 = random, 1 = oracle bound.", ""]
    groups = list(dict.fromkeys((r["train_env"], r["test_env"]) for r in rows))
    models = [r for r in rows if r["kind"] == "model"]
    lines += ["## Overview", "",
              "| trained on | tested on | agent | diff vs best heuristic "
              "| seeds with interval above 0 | agent score | best heuristic (score) |",
              "|---|---|---|---|---|---|---|"]
    for r in models:
        best = next(x for x in rows if (x["train_env"], x["test_env"]) ==
                    (r["train_env"], r["test_env"]) and x["policy"] == r["best_heuristic"])
        tag = " (held out)" if r["held_out"] else ""
        lines.append(f"| `{r['train_env']}` | `{r['test_env']}`{tag} | {r['policy']} | "
                     f"{_f(r['diff_vs_best'], sign=True)} ± {_f(r['diff_ci'])} | "
                     f"{r['seeds_above']} | {_f(r['score'], 3)} | {r['best_heuristic']} "
                     f"({_f(best['score'], 3)}) |")
    lines.append("")
    for train_env, test_env in groups:
        g = [r for r in rows if (r["train_env"], r["test_env"]) == (train_env, test_env)]
        tag = "held-out" if g[0]["held_out"] else "own id"
        lines += [f"## trained on `{train_env}`, tested on `{test_env}` ({tag}, "
                  f"{g[0]['episodes']} episodes; best heuristic {g[0]['best_heuristic']})", "",
                  "| policy | seeds | reward | seed sd | diff vs best heuristic | diff per seed "
                  "| score |", "|---|---|---|---|---|---|---|"]
        for r in sorted(g, key=lambda r: -(r["reward"] or 0)):
            name = f"**{r['policy']}**" if r["kind"] == "model" else r["policy"]
            lines.append(f"| {name} | {r['seeds']} | {_f(r['reward'])} ± "
                         f"{_f(r['reward_ci'])} | {_f(r['seed_sd'])} | "
                         f"{_f(r['diff_vs_best'], sign=True)} ± {_f(r['diff_ci'])} | "
                         f"{r['seed_diffs']} | {_f(r['score'], 3)} |")
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
        mine = [next((r for r in rows if (r["train_env"], r["test_env"]) == g
                      and r["policy"] == name), None) for g in groups]
        vals = [np.nan if r is None or r["score"] is None else r["score"] for r in mine]
        # an agent's bar: its seed-averaged score; whisker: the spread of its seeds' scores
        err = [np.nan if r is None or r.get("score_sd") is None else r["score_sd"]
               for r in mine]
        ax.bar(np.arange(len(groups)) + k * width, vals, width, label=name,
               yerr=err if not np.all(np.isnan(err)) else None, capsize=2)
    # a static router far below random (cheapest: about -2.4) would squash the rest: the axis
    # stops at FLOOR and such a bar is labelled with its score
    lowest = min((r["score"] for r in rows if r["score"] is not None), default=0.0)
    if lowest < FLOOR:
        ax.set_ylim(bottom=FLOOR)
        for k, name in enumerate(names):
            for i, g in enumerate(groups):
                r = next((r for r in rows if (r["train_env"], r["test_env"]) == g
                          and r["policy"] == name), None)
                if r is not None and r["score"] is not None and r["score"] < FLOOR:
                    ax.annotate(f"{r['score']:.1f}", (i + k * width, FLOOR),
                                xytext=(0, 2), textcoords="offset points", ha="center",
                                va="bottom", fontsize=6, rotation=90)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{a.split('/')[-1]}\non {b.split('/')[-1]}" for a, b in groups],
                       fontsize=8)
    ax.set_ylabel("normalised score (0 random, 1 oracle)")
    ax.set_title("agents: mean over seeds, whisker = seed sd", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when written, 2 for bad input."""
    p = OneLineParser(prog="python -m agents.leaderboard", description=__doc__.splitlines()[0])
    p.add_argument("grids", metavar="GRID_DIR", nargs="+",
                   help="the --out of a finished train.py grid (several: combined)")
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
        grids = [Path(g) for g in args.grids]
        if args.ray_address is not None:
            from agents.ray_address import check_ray_address

            check_ray_address(args.ray_address)  # in a few seconds, before any evaluation
        rows = build(grids, args.episodes, args.ray_address, progress=not args.quiet)
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
    md = to_markdown(rows, grids, command)
    atomic_write_text(out / "leaderboard.md", md + "\n")
    plot(rows, out / "leaderboard.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
