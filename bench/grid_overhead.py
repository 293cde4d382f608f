"""Wall time of a small grid on Ray Tune against the same runs one after another.

    python bench/grid_overhead.py --timesteps 20000            # 2 ids x 2 seeds of PPO
    python bench/grid_overhead.py --timesteps 5000 --parts init,noop

Parts (``--parts``, comma-separated, default all):

* ``init``: ``ray.init`` of a local Ray with 2 CPUs (as a grid starts it) and its shutdown;
* ``noop``: Ray Tune running 4 trials that return at once (Tune's own cost per trial);
* ``seq``: the runs as ``train.py`` processes one after another;
* ``grid``: the same runs as one ``train.py`` grid on a local Ray with ``--ray-num-cpus 2``,
  with the start and end of each trial's ``train.py`` taken from its run directory.

Every figure is printed with the load average of the machine (``os.getloadavg``) before and
after it: the cores may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHORT = ["--eval-freq", "5000", "--eval-episodes", "2", "--test-episodes", "2", "--compare",
         "random", "--n-envs", "2"]


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(name: str, fn, rows: list) -> None:
    before = load()
    t0 = time.perf_counter()
    extra = fn()
    rows.append((name, time.perf_counter() - t0, before, load(), extra or ""))
    print(f"{name}: {rows[-1][1]:.1f} s (load {before} -> {rows[-1][3]}) {extra or ''}",
          file=sys.stderr, flush=True)


def part_init() -> str:
    code = ("import time, ray; t=time.perf_counter(); ray.init(address='local', num_cpus=2, "
            "include_dashboard=False, log_to_driver=False); a=time.perf_counter()-t; "
            "t=time.perf_counter(); ray.shutdown(); print(f'{a:.1f} {time.perf_counter()-t:.1f}')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ENV, check=True).stdout.split()
    return f"ray.init {out[0]} s, shutdown {out[1]} s"


def _noop(config):  # a Tune trainable that returns at once
    from ray import tune

    tune.report({"x": config["x"]})


def part_noop() -> str:
    import ray
    from ray import tune

    import agents.grid as grid  # the settings of a grid, as in this checkout

    tmp = tempfile.mkdtemp(prefix="bench-")
    os.environ.update(getattr(grid, "tune_env", dict)())
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        tune.Tuner(tune.with_resources(_noop, {"cpu": 1}),
                   param_space={"x": tune.grid_search([0, 1, 2, 3])},
                   tune_config=tune.TuneConfig(reuse_actors=getattr(grid, "REUSE_ACTORS",
                                                                    False)),
                   run_config=tune.RunConfig(name="noop", storage_path=tmp, verbose=0)).fit()
        return f"fit of 4 trials {time.perf_counter() - t0:.1f} s"
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def part_seq(args, out: Path) -> str:
    for env in args.env.split(","):
        for seed in args.seed.split(","):
            subprocess.run([sys.executable, "train.py", "--env", env, "--algo", args.algo,
                            "--seed", seed, "--timesteps", str(args.timesteps), *SHORT,
                            "--no-progress-bar", "--out", str(out / f"{env.replace('/', '_')}"
                                                                     f"_{seed}")],
                           cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "1"},
                           capture_output=True, check=True)
    return ""


def part_grid(args, out: Path) -> str:
    t0 = time.time()
    r = subprocess.run([sys.executable, "train.py", "--env", args.env, "--algo", args.algo,
                        "--seed", args.seed, "--timesteps", str(args.timesteps), *SHORT,
                        "--ray-num-cpus", "2", "--out", str(out)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    starts, ends = [], []
    for d in sorted(out.glob("*__*__seed*")):
        starts.append((d / "worker.pid").stat().st_mtime - t0)  # the trial started
        ends.append((d / "trial.json").stat().st_mtime - t0)  # the trial finished
    return (f"trials started at {', '.join(f'{x:.1f}' for x in sorted(starts))} s, "
            f"finished at {', '.join(f'{x:.1f}' for x in sorted(ends))} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="lrm/Critical-v0,lrm/Volatile-v0")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--seed", default="0,1")
    p.add_argument("--timesteps", type=int, default=20000)
    p.add_argument("--parts", default="init,noop,seq,grid")
    args = p.parse_args()
    parts = args.parts.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    rows: list = []
    try:
        if "init" in parts:
            timed("ray.init + shutdown (local, 2 CPUs)", part_init, rows)
        if "noop" in parts:
            timed("Tune, 4 trials that return at once", part_noop, rows)
        if "seq" in parts:
            timed(f"{args.env} x {args.seed}, one after another",
                  lambda: part_seq(args, tmp / "seq"), rows)
        if "grid" in parts:
            timed(f"{args.env} x {args.seed}, grid on Ray",
                  lambda: part_grid(args, tmp / "grid"), rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.timesteps} steps per run, PPO, 2 CPUs\n")
    print("| part | wall s | load before | load after | detail |\n|---|---:|---|---|---|")
    for name, sec, before, after, extra in rows:
        print(f"| {name} | {sec:.1f} | {before} | {after} | {extra} |")
    return 0


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": tempfile.mkdtemp(prefix="rb-",
                                                                             dir="/tmp")}

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:
        shutil.rmtree(ENV["RAY_TMPDIR"], ignore_errors=True)
