"""Benchmark dispatch policies on paired seeds, or reproduce the paper's experiments.

Usage::

    python evaluate.py --env lrm/Critical-v0 --policies random,mean_matching,oracle \\
        --episodes 20 --seed 0 --out results/critical
    python evaluate.py --experiment regimes --out results/regimes

(also installed as ``lrm-evaluate``). Every policy runs on the same evaluation seeds (derived
from ``--seed``), so differences are paired; ``oracle`` is the hindsight LP bound. Writes
``DIR/episodes.csv`` (one row per policy and episode), ``DIR/summary.json`` and PNG plots, and
prints a Markdown table. The work is done by :mod:`agents.evaluation` (paired evaluation) and
:mod:`agents.experiments` (the paper's experiments); this file is their command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":  # a signal while the modules below load: one line, 130 / 143
    import signal as _signal

    def _quit_during_imports(signum: int, frame: object) -> None:
        sys.stderr.write("evaluate.py: interrupted during start-up\n")
        raise SystemExit(128 + signum)

    for _s in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_s, _quit_during_imports)

from agents.cli import (
    OneLineParser,
    UsageError,
    check_out_dir,
    exit_on_signals,
    parse_env_kwargs,
    signal_exit_code,
)
from agents.evaluation import (
    check_env_id,
    check_policy_name,
    format_table,
    make_checked_env,
    resolve_seed,
    resolve_workers,
    run_evaluation,
)
from agents.experiments import EXPERIMENTS, run_experiment


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = OneLineParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    p.add_argument("--env", default="lrm/Critical-v0",
                   help="env id, or several separated by commas (default lrm/Critical-v0)")
    p.add_argument("--policies", default="random,cheapest,mean_matching,variance_aware,"
                   "variance_feedback,oracle",
                   help="comma-separated policy names or ALGO:PATH of saved SB3 models")
    p.add_argument("--episodes", type=int, default=20, help="episodes per policy (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the evaluation seeds")
    p.add_argument("--out", default=None, help="output directory (files are written if given)")
    p.add_argument("--experiment", choices=sorted(EXPERIMENTS), default=None,
                   help="run one of the paper's experiments instead of a benchmark")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="FleetConfig override, repeatable (e.g. storage_kwh=0.05)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0,
                   help="processes to use (default 0: one per CPU; 1: all in this process); "
                        "the results do not depend on it")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="run the episode chunks as Ray tasks on a cluster: auto (a cluster "
                        "started with ray start), ray://HOST:10001, or local (a Ray started "
                        "here); the results are those of --workers 1")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad arguments, 130/143 when
    stopped by SIGINT/SIGTERM).

    Every argument is checked before the first evaluation starts: the env ids, the policies
    (a saved model must be a readable SB3 zip), each env built with the ``--env-kwarg``
    overrides, and the output directories.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with exit_on_signals():
        try:
            return _run_cli(args)
        except UsageError as exc:
            sys.stderr.write(f"evaluate.py: error: {exc}\n")
            return 2
        except KeyboardInterrupt as exc:
            sys.stderr.write(f"evaluate.py: interrupted ({str(exc) or 'SIGINT'}); files written "
                             f"so far are complete\n")
            return signal_exit_code(exc)


def _run_cli(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        out = check_out_dir(args.out or f"results/{args.experiment}")
        print(run_experiment(args.experiment, out, seed=resolve_seed(args.seed),
                             progress=not args.quiet))
        return 0
    env_ids = [e.strip() for e in args.env.split(",") if e.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    resolve_workers(args.workers, 1)
    if not env_ids:
        raise UsageError("--env: give at least one env id")
    for e in env_ids:
        check_env_id(e)
    if not policies:
        raise UsageError("--policies: give at least one policy")
    for name in policies:
        check_policy_name(name)
    env_kwargs = parse_env_kwargs(args.env_kwarg)
    seed = resolve_seed(args.seed)
    if args.ray_address is not None:
        from agents.ray_address import check_ray_address

        check_ray_address(args.ray_address)  # in a few seconds, before anything is written
    outs: list[Path | None] = []
    for e in env_ids:  # every env is built before the first one runs
        make_checked_env(e, env_kwargs).close()
        out = None
        if args.out is not None:
            out = Path(args.out) if len(env_ids) == 1 else Path(args.out) / e.replace("/", "_")
            check_out_dir(out)
        outs.append(out)
    for e, out in zip(env_ids, outs):
        summary = run_evaluation(e, policies, args.episodes, seed, out_dir=out,
                                 env_kwargs=env_kwargs, progress=not args.quiet,
                                 plots=not args.no_plots, workers=args.workers,
                                 ray_address=args.ray_address)
        print(format_table(summary))
        print(f"\n({summary['elapsed_s']:.1f} s" + (f"; files in {out})" if out else ")"))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
