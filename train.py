"""Train a stable-baselines3 dispatch agent on a fleet environment and compare it with heuristics.

Usage::

    python train.py                                    # residual PPO on lrm/Critical-v1, < 10 minutes
    python train.py --env lrm/Volatile-v1 --algo sac --timesteps 100000 --seed 1
    python train.py --env-kwarg storage_kwh=0.5 --env-kwarg harvest_cv=0.6
    python train.py --out runs/my_run --resume         # continue an interrupted run

(also installed as ``lrm-train``). The run directory holds ``model.zip`` and
``vecnormalize.pkl`` (load them with ``agents.sb3.load_sb3_policy("ppo:DIR/model.zip")``),
``best/`` (best validation model), ``checkpoints/``, ``config.json``, ``command.txt``,
``evaluations.npz``, ``monitor/``, ``tb/`` (TensorBoard: ``tensorboard --logdir DIR/tb``) and
``comparison/`` (the final evaluation). The work is done by :mod:`agents.training` (the phases
of a run), :mod:`agents.train_config` (the settings, their seeds and this command line),
:mod:`agents.training_envs` and :mod:`agents.run_dir`; this file is their command line.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # a signal while the modules below load: one line, 130 / 143
    import signal as _signal

    def _quit_during_imports(signum: int, frame: object) -> None:
        sys.stderr.write("train.py: interrupted during start-up\n")
        raise SystemExit(128 + signum)

    for _s in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_s, _quit_during_imports)

from agents.train_config import TEST_SEED, VALIDATION_SEED, TrainConfig
from agents.training import main

__all__ = ["TEST_SEED", "VALIDATION_SEED", "TrainConfig", "cli", "main"]


def cli() -> None:
    """Entry point of ``python train.py`` and the ``lrm-train`` console script."""
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())


if __name__ == "__main__":
    cli()
