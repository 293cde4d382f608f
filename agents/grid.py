"""Grids of training runs on Ray Tune: every combination of ``--env``, ``--algo`` and ``--seed``.

``python train.py --env A,B --algo ppo,a2c --seed 0,1,2 --timesteps 50000`` makes one Ray Tune
trial per combination. A trial runs ``train.py`` with that single combination, exactly as it
would be run by hand, in a child process, and writes the usual run directory
``OUT/<env with / as _>__<algo>__seed<S>`` inside the grid directory ``OUT`` (``--out``,
default ``runs/grid__<YYYYmmdd-HHMMSS>``). The trial reports each validation point of the
run's ``evaluations.npz`` to Tune (``val_return``) and, at the end, the agent's mean test
return of its ``comparison/summary.json`` (``test_return``).

* Without ``--ray-address``, Ray starts in this process on the local machine
  (``--ray-num-cpus`` caps the CPUs it uses); ``--ray-address auto`` or ``ray://HOST:10001``
  joins a running cluster (``ray start --head``, then ``ray start --address=HEAD:6379`` on
  the other machines; each needs this project installed at the same path).
* Each trial gets ``--cpus-per-trial`` CPUs (default 1), one torch thread (train.py sets
  it) and as many OpenMP / MKL threads as CPUs.
* Faults: a trial whose worker process dies is retried up to ``--max-failures`` times; the
  retry finds the run directory and continues it with ``train.py --resume`` from its newest
  intact checkpoint. A grid stopped with Ctrl-C and started again with the same command and
  ``--resume`` restores the Tune experiment: finished trials are skipped (each also leaves a
  ``trial.json`` in its run directory, which a trial started again returns at once) and the
  others resume from their checkpoints.

Ray is imported only here and only when a grid runs: ``import agents`` never imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agents.cli import OneLineParser, UsageError
from agents.files import atomic_write_text

#: The project root (where ``train.py`` lives).
ROOT = Path(__file__).resolve().parent.parent
#: Options whose comma-separated values span a grid.
GRID_KEYS = ("env", "algo", "seed")
#: Options only a grid has (a single combination given one of them also runs as a grid).
GRID_OPTIONS = ("--ray-address", "--ray-num-cpus", "--cpus-per-trial", "--max-failures",
                "--tune")
#: The file a finished trial leaves in its run directory.
TRIAL_FILE = "trial.json"
#: Tune runs the next trial in the Ray actor of a finished one (no new worker process and
#: imports per trial); a trial whose actor died still gets a new one.
REUSE_ACTORS = True
#: Seconds between two looks of a trial at its run directory (new validation points, the
#: end of train.py).
POLL_S = 0.25
#: The install hint printed when Ray is missing.
INSTALL_HINT = 'a grid needs Ray: pip install -e ".[ray]" (or pip install "ray[tune]")'


def grid_parser() -> argparse.ArgumentParser:
    """The options of a grid; the rest of the command line goes to each trial's train.py."""
    p = OneLineParser(prog="train.py", add_help=False)
    p.add_argument("--env", default="lrm/Critical-v0")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--seed", default="0")
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--ray-num-cpus", type=int, default=None)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--tune", type=int, default=None)
    return p


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def is_grid(argv: list[str]) -> bool:
    """Whether ``argv`` asks for a grid: a comma in ``--env``/``--algo``/``--seed`` or an
    option only a grid has."""
    if any(a.split("=", 1)[0] in GRID_OPTIONS for a in argv):
        return True
    ns, _ = grid_parser().parse_known_args(argv)
    return any("," in getattr(ns, k) for k in GRID_KEYS)


def run_dir_name(env: str, algo: str, seed: int) -> str:
    """``<env with / as _>__<algo>__seed<S>``: a trial's run directory in the grid."""
    return f"{env.replace('/', '_')}__{algo}__seed{seed}"


def combinations(argv: list[str]) -> tuple[argparse.Namespace, list[str], list[dict[str, Any]]]:
    """Parse a grid command line: its options, the options passed to every trial and the
    trials (env, algo, seed)."""
    ns, rest = grid_parser().parse_known_args(argv)
    envs, algos = _split(ns.env), _split(ns.algo)
    try:
        seeds = [int(s) for s in _split(ns.seed)]
    except ValueError:
        raise UsageError(f"--seed: expected comma-separated integers, got {ns.seed!r}") from None
    for name, vals in (("--env", envs), ("--algo", algos), ("--seed", seeds)):
        if not vals:
            raise UsageError(f"{name}: no value given")
        if len(set(vals)) != len(vals):
            raise UsageError(f"{name}: a value is given twice in {vals}")
    if -1 in seeds:
        raise UsageError("--seed -1 (draw one) is not allowed in a grid; give the seeds")
    if ns.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {ns.cpus_per_trial}")
    if ns.ray_num_cpus is not None and ns.ray_num_cpus < 1:
        raise UsageError(f"--ray-num-cpus must be >= 1, got {ns.ray_num_cpus}")
    if ns.tune is not None and ns.tune < 1:
        raise UsageError(f"--tune must be >= 1 (number of trials), got {ns.tune}")
    if ns.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {ns.max_failures}")
    if ns.ray_address not in (None, "local") and ns.ray_num_cpus is not None:
        raise UsageError("--ray-num-cpus applies to a local Ray only; drop it with "
                         "--ray-address")
    if any(a == "--progress-bar" for a in rest):
        rest = [a for a in rest if a != "--progress-bar"]
    trials = [{"env": e, "algo": a, "seed": s} for e in envs for a in algos for s in seeds]
    return ns, rest, trials


def trial_argv(trial: dict[str, Any], rest: list[str], run_dir: Path) -> list[str]:
    """The train.py command line of one trial (a fresh run)."""
    return ["--env", trial["env"], "--algo", trial["algo"], "--seed", str(trial["seed"]),
            *rest, "--out", str(run_dir), "--no-progress-bar"]


def import_ray() -> Any:
    """Import Ray Tune, or raise UsageError saying how to install it."""
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


# --------------------------------------------------------------------------- one trial
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    from agents.cli import _set_parent_death_signal

    _set_parent_death_signal(signal.SIGKILL)


def _validation_points(run_dir: Path) -> list[tuple[int, float]]:
    """(timestep, mean validation return) of the run's ``evaluations.npz`` so far."""
    import numpy as np

    path = run_dir / "evaluations.npz"
    try:
        with np.load(path) as data:
            ts, res = data["timesteps"], data["results"]
    except (OSError, KeyError, ValueError, EOFError):
        return []
    return [(int(t), float(np.mean(r))) for t, r in zip(ts, res)]


def final_metrics(run_dir: Path, algo: str) -> dict[str, Any]:
    """The metrics of a finished run: its last validation return and the agent's mean test
    return (``comparison/summary.json``; None without a comparison)."""
    points = _validation_points(run_dir)
    out: dict[str, Any] = {"timesteps": points[-1][0] if points else None,
                           "val_return": points[-1][1] if points else None,
                           "test_return": None, "run_dir": str(run_dir)}
    summary = run_dir / "comparison" / "summary.json"
    if summary.exists():
        pol = json.loads(summary.read_text())["policies"]
        key = f"{algo}:{run_dir / 'model.zip'}"
        entry = pol.get(key) or next((v for k, v in pol.items() if k.startswith(f"{algo}:")),
                                     None)
        if entry is not None:
            out["test_return"] = entry["reward"]["mean"]
    return out


def run_trial(config: dict[str, Any], report: Callable[[dict[str, Any]], None],
              poll: float = POLL_S) -> dict[str, Any]:
    """Run one combination with train.py in a child process (resuming its run directory when
    it holds a run), report its validation points, return its final metrics.

    Validation points at ``config["hold_from"]`` steps or later are reported only with the
    final metrics (a scheduler stopping a trial at its last step would lose its comparison).
    The child dies with this process (``PR_SET_PDEATHSIG`` on Linux) and is killed when this
    function is left early. Raises RuntimeError when train.py fails.
    """
    run_dir = Path(config["run_dir"])
    algo = config["trial"]["algo"]
    done = run_dir / TRIAL_FILE
    if done.exists():  # finished before a restart of the grid
        metrics = json.loads(done.read_text())
        report(metrics)
        return metrics
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "worker.pid", f"{os.getpid()}\n")
    if (run_dir / "config.json").exists():
        argv = ["--out", str(run_dir), "--resume", "--no-progress-bar"]
    else:
        argv = trial_argv(config["trial"], config["rest"], run_dir)
    threads = str(max(1, int(config.get("cpus", 1))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONHASHSEED": "0"}
    log = run_dir / "train.log"
    with open(log, "a") as fh:
        fh.write(f"# {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
                 f"train.py {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT,
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        seen = 0
        try:
            while True:
                rc = proc.poll()
                points = _validation_points(run_dir)
                for t, r in points[seen:]:
                    if t < config.get("hold_from", float("inf")):  # else: with the result
                        report({"timesteps": t, "val_return": r})
                seen = max(seen, len(points))
                if rc is not None:
                    break
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"train.py exited with {rc} in {run_dir}: {tail[0]}")
    metrics = {**final_metrics(run_dir, algo), "done": True, **config.get("node", {})}
    atomic_write_text(done, json.dumps(metrics, indent=1) + "\n")
    report(metrics)
    return metrics


def where() -> dict[str, Any]:
    """The Ray node this process runs on (its id and host name)."""
    import socket

    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def _tune_trainable(config: dict[str, Any]) -> None:
    """The Tune trainable of a grid: the trial in ``config["cfg"]``."""
    from ray import tune

    run_trial({**config["cfg"], "node": where()}, tune.report)


# --------------------------------------------------------------------------- the grid
def tune_env() -> dict[str, str]:
    """Environment variables a grid sets (unless set already) before Ray starts: no usage
    statistics, no metrics collection of a local Ray (nobody reads them: no dashboard).

    Tune's own per-trial loggers stay: without them (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``)
    Tune's results table warns for every trial that it finds no result file."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_metrics_collection": "0"}


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None,
                out: Path | None = None) -> Iterator[Any]:
    """Ray joined at ``address``, or started here on the local machine; shut down after
    (unless it was running already in this process).

    A joined cluster is checked first (:func:`agents.ray_address.check_nodes`): every node
    has the project at this path and, with ``out``, sees the directory ``out`` is made in.
    """
    from agents.ray_address import start_or_join

    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    for k, v in tune_env().items():
        os.environ.setdefault(k, v)
    start_or_join(ray, address, num_cpus, ROOT, out)
    try:
        yield ray
    finally:
        ray.shutdown()


def grid_dir(out: str | None) -> Path:
    """The grid directory: ``--out`` or ``runs/grid__<YYYYmmdd-HHMMSS>``."""
    if out:
        return Path(out).absolute()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / "runs" / f"grid__{stamp}"


def run_grid(argv: list[str], check: Callable[[list[str]], None]) -> int:
    """Run the grid of ``argv`` on Ray Tune; print a table of its trials.

    ``check(train_argv)`` validates one trial's command line (raising UsageError) before Ray
    starts. Returns 0 when every trial finished, 1 when some failed, 130 on Ctrl-C (the
    grid can be resumed with ``--resume``).
    """
    from agents.cli import check_out_dir

    ns, rest, trials = combinations(argv)
    if ns.tune is not None:
        raise UsageError("--tune is a search, not a grid: run it through train.py "
                         "(agents.search.run_grid_or_search)")
    out = grid_dir(ns.out)
    check_out_dir(out)
    for t in trials:
        check(trial_argv(t, rest, out / run_dir_name(**t))[:-3])
    state = out / "grid.json"
    if ns.resume:
        if not state.exists():
            raise UsageError(f"--resume: {out} holds no grid (no grid.json)")
        saved = json.loads(state.read_text())
        if saved["trials"] != trials or saved["rest"] != rest:
            raise UsageError(f"--resume: {out} holds another grid; give the command it was "
                             f"started with (see {state})")
    elif state.exists():
        raise UsageError(f"--out: {out} already holds a grid; pass --resume to continue it "
                         f"or choose another directory")
    import_ray()
    from ray import tune

    t0 = time.perf_counter()
    # Ray joins (or starts) before anything is written: a bad --ray-address leaves nothing.
    with ray_session(ns.ray_address, ns.ray_num_cpus, out):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state, json.dumps({"trials": trials, "rest": rest,
                                             "command": ["train.py", *argv]}, indent=1) + "\n")
        configs = [{"trial": t, "rest": rest, "run_dir": str(out / run_dir_name(**t)),
                    "cpus": ns.cpus_per_trial} for t in trials]
        trainable = tune.with_resources(_tune_trainable, {"cpu": ns.cpus_per_trial})
        exp_dir = out / "tune"
        if ns.resume and tune.Tuner.can_restore(str(exp_dir)):
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"cfg": tune.grid_search(configs)},
                tune_config=tune.TuneConfig(reuse_actors=REUSE_ACTORS),
                run_config=tune.RunConfig(
                    name="tune", storage_path=str(out), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=ns.max_failures)),
            )
        results = tuner.fit()
    elapsed = time.perf_counter() - t0
    rows = []
    for t in trials:
        d = out / run_dir_name(**t)
        m = json.loads((d / TRIAL_FILE).read_text()) if (d / TRIAL_FILE).exists() else None
        rows.append({**t, "status": "done" if m else "failed",
                     "test_return": m and m["test_return"], "val_return": m and m["val_return"],
                     "node_id": m and m.get("node_id"), "run_dir": str(d)})
    atomic_write_text(out / "trials.json", json.dumps(rows, indent=1) + "\n")
    print(format_rows(rows))
    n_ok = sum(r["status"] == "done" for r in rows)
    print(f"{n_ok}/{len(rows)} trials done in {elapsed:.1f} s; grid directory {out}",
          file=sys.stderr)
    if n_ok < len(rows):
        errors = [str(r.error).splitlines()[0] for r in results if r.error]
        for e in errors[:5]:
            print(f"  failed: {e}", file=sys.stderr)
        print(f"resume with: python train.py {' '.join(argv)}"
              f"{'' if ns.resume else ' --resume'}", file=sys.stderr)
        return 1
    return 0


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the trials of a grid."""
    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    head = f"{'env':<24} {'algo':<6} {'seed':>5}  {'status':<7} {'val_return':>11} " \
           f"{'test_return':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['env']:<24} {r['algo']:<6} {r['seed']:>5}  {r['status']:<7} "
                     f"{num(r['val_return']):>11} {num(r['test_return']):>12}")
    return "\n".join(lines)
