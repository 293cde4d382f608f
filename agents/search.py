"""Hyperparameter search on Ray Tune: ``train.py --tune N``.

N trials of Optuna's TPE sampler (Ray Tune's ``OptunaSearch``) with ASHA early stopping on
the validation return (the mean return on the fixed validation episodes that ``train.py``
evaluates every ``--eval-freq`` steps). A trial is a ``train.py`` run (see
:mod:`agents.grid`) whose hyperparameter file is the entry of ``--hyperparams`` (default
``hyperparams/<algo>.yml``) with the sampled values put in; it lives in
``OUT/trials/<trial id>``. The search writes:

* ``OUT/best_hyperparams.yml``: the entry of the trial with the highest last validation
  return among those that ran longest (were not stopped early), keyed by the env id
  (rl-zoo style; pass it to ``train.py --hyperparams``);
* ``OUT/trials.csv``: every trial, its sampled values, last validation return, timesteps
  reached and whether ASHA stopped it early.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.cli import UsageError
from agents.files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def search_space(algo: str) -> dict[str, Any]:
    """The sampled hyperparameters of ``algo`` (Ray Tune distributions)."""
    from ray import tune

    common = {"learning_rate": tune.loguniform(1e-5, 3e-3),
              "gamma": tune.choice([0.8, 0.9, 0.95, 0.99])}
    if algo == "ppo":
        return {**common, "gae_lambda": tune.uniform(0.7, 0.99),
                "ent_coef": tune.loguniform(1e-6, 1e-2), "clip_range": tune.uniform(0.1, 0.4)}
    if algo == "a2c":
        return {**common, "gae_lambda": tune.uniform(0.7, 0.99),
                "ent_coef": tune.loguniform(1e-6, 1e-2)}
    if algo in ("sac", "td3"):
        return {**common, "tau": tune.loguniform(1e-3, 5e-2)}
    if algo == "dqn":
        return {**common, "exploration_fraction": tune.uniform(0.05, 0.5)}
    raise UsageError(f"--tune: no search space for --algo {algo}")


def _take_option(rest: list[str], name: str) -> tuple[list[str], str | None]:
    """``rest`` without ``name VALUE`` / ``name=VALUE``, and the value (None: not given)."""
    out, value, skip = [], None, False
    for i, a in enumerate(rest):
        if skip:
            skip = False
            continue
        if a == name and i + 1 < len(rest):
            value, skip = rest[i + 1], True
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
    return out, value


def _option(rest: list[str], name: str, default: int) -> int:
    _, v = _take_option(rest, name)
    try:
        return int(v) if v is not None else default
    except ValueError:
        raise UsageError(f"{name}: expected an integer, got {v!r}") from None


def run_grid_or_search(argv: list[str], check: Callable[[list[str]], None]) -> int:
    """train.py's entry for comma-separated ``--env``/``--algo``/``--seed`` or ``--tune N``:
    a hyperparameter search (:func:`run_search`) or a grid (``agents.grid.run_grid``)."""
    from agents.grid import combinations, run_grid
    from agents.ray_address import check_ray_address

    ns, rest, trials = combinations(argv)
    check_ray_address(ns.ray_address)  # first: a few seconds where no Ray head answers
    if ns.tune is not None:
        return run_search(ns, rest, trials, argv, check)
    return run_grid(argv, check)


def _search_trainable(config: dict[str, Any]) -> None:
    """A search trial: write its hyperparameter file and run train.py with it."""
    import yaml
    from ray import tune

    from agents.grid import run_trial, where

    base = config["base"]
    params = {k: config[k] for k in config["keys"]}
    run_dir = Path(base["out"]) / "trials" / tune.get_context().get_trial_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    hp_file = run_dir.parent / f"{run_dir.name}.yml"
    if not hp_file.exists():
        atomic_write_text(hp_file, yaml.safe_dump({base["trial"]["env"]: {**base["entry"],
                                                                          **params}}))
    run_trial({"trial": base["trial"], "rest": [*base["rest"], "--hyperparams", str(hp_file)],
               "run_dir": str(run_dir), "cpus": base["cpus"], "hold_from": base["timesteps"],
               "node": where()},
              tune.report)


def run_search(ns: argparse.Namespace, rest: list[str], trials: list[dict[str, Any]],
               argv: list[str], check: Callable[[list[str]], None]) -> int:
    """Run ``--tune N``; print the table of trials and the best entry."""
    from agents.cli import check_out_dir
    from agents.grid import grid_dir, import_ray, ray_session, trial_argv
    from agents.hyperparams import HyperparamError, read_entry

    if len(trials) != 1:
        raise UsageError("--tune searches one --env, --algo and --seed at a time")
    if ns.resume:
        raise UsageError("--tune cannot be resumed; start the search again")
    trial = trials[0]
    rest, hp = _take_option(rest, "--hyperparams")
    hp_file = Path(hp) if hp else ROOT / "hyperparams" / f"{trial['algo']}.yml"
    try:
        entry = read_entry(hp_file, trial["env"])
    except HyperparamError as exc:
        raise UsageError(f"--hyperparams: {exc}") from None
    timesteps = _option(rest, "--timesteps", int(float(entry.get("n_timesteps", 0))))
    eval_freq = _option(rest, "--eval-freq", 25_000)
    if eval_freq < 1 or eval_freq >= timesteps:
        raise UsageError(f"--tune needs validation points for early stopping: --eval-freq "
                         f"must be in [1, --timesteps), got {eval_freq}")
    out = grid_dir(ns.out)
    check_out_dir(out)
    if (out / "trials.csv").exists() or (out / "tune").exists():
        raise UsageError(f"--out: {out} already holds a search; choose another directory")
    check(trial_argv(trial, rest, out / "check")[:-3])
    import_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = search_space(trial["algo"])
    base = {"trial": trial, "rest": rest, "entry": entry, "out": str(out),
            "cpus": ns.cpus_per_trial, "timesteps": timesteps}
    param_space = {**space, "keys": list(space), "base": base}
    scheduler = ASHAScheduler(time_attr="timesteps", max_t=timesteps,
                              grace_period=max(eval_freq, timesteps // 4), reduction_factor=2)
    searcher = OptunaSearch(seed=trial["seed"])
    t0 = time.perf_counter()
    with ray_session(ns.ray_address, ns.ray_num_cpus, out):
        tuner = tune.Tuner(
            tune.with_resources(_search_trainable, {"cpu": ns.cpus_per_trial}),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_return", mode="max", num_samples=ns.tune,
                                        search_alg=searcher, scheduler=scheduler),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0),
        )
        results = tuner.fit()
    elapsed = time.perf_counter() - t0
    rows = []
    for r in results:
        m = r.metrics or {}
        done = (Path(m["run_dir"]) / "trial.json").exists() if m.get("run_dir") else False
        trial_id = m.get("trial_id") or Path(r.path).name
        rows.append({"trial": trial_id, **{k: r.config[k] for k in space},
                     "val_return": m.get("val_return"), "timesteps": m.get("timesteps"),
                     "test_return": m.get("test_return"),
                     "status": "error" if r.error else "done" if done else "stopped"})
    rows.sort(key=lambda row: -(row["val_return"] if row["val_return"] is not None
                               else -float("inf")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "trials.csv", buf.getvalue())
    scored = [r for r in rows if r["val_return"] is not None]
    if not scored:
        print(f"--tune: no trial reached a validation point; see {out}", file=sys.stderr)
        return 1
    most = max(r["timesteps"] or 0 for r in scored)  # among the trials ASHA let run longest
    best = next(r for r in scored if (r["timesteps"] or 0) == most)
    import yaml

    best_entry = {**entry, **{k: best[k] for k in space}}
    header = (f"# best of {len(rows)} trials of train.py --tune on {trial['env']} "
              f"({trial['algo']}, seed {trial['seed']}, {timesteps} steps): validation "
              f"return {best['val_return']:.3f} at {best['timesteps']} steps\n")
    atomic_write_text(out / "best_hyperparams.yml",
                      header + yaml.safe_dump({trial["env"]: best_entry}, sort_keys=False))
    print(buf.getvalue().rstrip())
    print(f"{len(rows)} trials in {elapsed:.1f} s; best hyperparameters in "
          f"{out / 'best_hyperparams.yml'}", file=sys.stderr)
    return 0
