"""The settings of a training run: :class:`TrainConfig`, declared once as a dataclass, and the
``train.py`` command line made from it (one option per field), with the checks argparse cannot
make.

Seeds: training sub-env ``i`` starts from seed ``seed + i`` (plus ``n_envs`` per resume), all
below :data:`VALIDATION_SEED`; periodic evaluation uses the fixed validation seeds
``VALIDATION_SEED + k`` and the final comparison held-out test seeds derived from
:data:`TEST_SEED` (``agents.evaluation.evaluation_seeds``), so the three sets are disjoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cli import OneLineParser, UsageError, parse_env_kwargs

#: The project root (``hyperparams/``, ``runs/``).
ROOT = Path(__file__).resolve().parent.parent
#: First line of ``train.py --help``.
DESCRIPTION = ("Train a stable-baselines3 dispatch agent on a fleet environment and compare it "
               "with heuristics.")


#: Training env seeds are below this; validation seeds start here.
VALIDATION_SEED = 1_000_000
#: First seed of the held-out test episodes of the final comparison.
TEST_SEED = 2_000_000
#: Back ends of ``--vec-env`` (the first is the default).
VEC_ENVS = ("native", "dummy", "subproc")
#: Heuristics the final comparison runs besides the trained agent (those available).
DEFAULT_COMPARE = ("random", "cheapest", "mean_matching", "variance_aware", "variance_feedback",
                   "oracle")


#: Algorithms that need a discrete action space.
ALGO_DISCRETE = {"dqn": True}
#: Off-policy algorithms (their checkpoints hold a replay buffer).
OFF_POLICY = ("sac", "td3", "dqn")


def _algos() -> tuple[str, ...]:
    from agents.sb3 import ALGOS

    return tuple(ALGOS)


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Any = dataclasses.MISSING, **argparse_kwargs: Any) -> Any:
    """A :class:`TrainConfig` field that is a command-line option: its help text and any
    argparse settings (``choices``, a callable giving them, ``action``, ``nargs``...)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"help": " ".join(help.split()), "argparse": argparse_kwargs})


@dataclass
class TrainConfig:
    """Settings of one training run (each field is a command-line option)."""

    env: str = option("lrm/Critical-v1", "Registered env id.")
    algo: str = option("ppo", (
        "Algorithm: ppo, recurrent_ppo (LSTM policy, sb3-contrib), a2c, sac, td3 or dqn (dqn "
        "trains on the discrete action space)."), choices=_algos)
    residual: str | None = option(None, (
        "Residual action mode: the agent's action corrects this heuristic's action (zero "
        "action = the heuristic's own), e.g. variance_feedback; replaces the hyperparameters' "
        "env_wrapper (agents/residual.py)."))
    timesteps: int | None = option(None, (
        "Total environment steps summed over sub-envs; default: n_timesteps of the "
        "hyperparameters."))
    n_envs: int | None = option(None, (
        "Parallel training envs; default: n_envs of the hyperparameters."))
    seed: int = option(0, (
        "Seed of the training envs, the network and the algorithm, in [0, 900000); -1 draws "
        "one."))
    out: str | None = option(None, (
        "Run directory; default runs/<env>__<algo>__seed<S>__<YYYYmmdd-HHMMSS>."))
    hyperparams: str | None = option(None, (
        "Hyperparameter file (rl-zoo YAML keyed by env id); default hyperparams/<algo>.yml."))
    resume: bool = option(False, (
        "Continue the run in --out from its newest intact checkpoint (its saved settings are "
        "used); refuses when it has none but a trained model."))
    env_kwargs: dict[str, Any] = option(default_factory=dict, help=(
        "FleetConfig overrides, given as --env-kwarg key=value (repeatable)."))
    vec_env: str = option("native", (
        "Vectorisation of the training envs: native (one batched simulator), dummy (SB3 "
        "DummyVecEnv, one env object per copy) or subproc (SB3 SubprocVecEnv, one process "
        "each)."), choices=VEC_ENVS)
    eval_freq: int = option(25_000, (
        "Evaluate on the validation seeds every this many steps (0: never)."))
    eval_episodes: int = option(5, "Validation episodes per periodic evaluation.")
    checkpoint_freq: int = option(50_000, (
        "Write a checkpoint every this many steps (0: only at the end or on interrupt)."))
    test_episodes: int = option(20, (
        "Held-out test episodes of the final comparison (0: skip the comparison)."))
    compare: tuple[str, ...] = option(DEFAULT_COMPARE, (
        "Policies to compare the agent with at the end (those the registry knows)."))
    progress_bar: bool = option(True, "Show a progress bar.", off_help="Hide the progress bar.")
    verbose: int = option(0, "SB3 verbosity (1 prints the training statistics).")
    device: str = option("cpu", "Torch device.")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, one option per :class:`TrainConfig` field (its metadata);
    every option defaults to None (= not given)."""
    p = OneLineParser(prog="train.py", description=DESCRIPTION)
    d = TrainConfig()
    types = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(d, f.name)
        doc, kw = f.metadata["help"], dict(f.metadata["argparse"])
        off_help = kw.pop("off_help", f"Turn {flag} off.")
        help_ = doc + (f" [default: {default}]" if default not in (None, {}) else "")
        if callable(kw.get("choices")):
            kw["choices"] = kw["choices"]()
        typ = types[f.name]
        if f.name == "env_kwargs":
            p.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=None,
                           metavar="KEY=VALUE", help=doc)
        elif typ is bool:
            p.add_argument(flag, action="store_true", default=None,
                           help=help_ if default else doc)
            if default:  # an option on by default can be turned off
                p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                               help=off_help)
        elif typing.get_origin(typ) is tuple:
            p.add_argument(flag, nargs="*", default=None, metavar="POLICY", help=help_)
        elif "choices" in kw:
            p.add_argument(flag, default=None, help=help_, **kw)
        else:
            scalar = int if int in (typ, *typing.get_args(typ)) else str
            p.add_argument(flag, type=scalar, default=None, help=help_,
                           metavar=f.name.upper(), **kw)
    p.epilog = ("Env kwargs are FleetConfig fields (envs/config.py), "
                "e.g. --env-kwarg storage_kwh=inf.")
    return p


def config_from_args(argv: list[str] | None) -> tuple[TrainConfig, set[str]]:
    """Parse the command line into a TrainConfig; also return the names of the given options."""
    ns = build_parser().parse_args(argv)
    given = {k for k, v in vars(ns).items() if v is not None}
    cfg = TrainConfig()
    for k in given:
        v = getattr(ns, k)
        if k == "env_kwargs":
            v = parse_env_kwargs(v)
        elif k == "compare":
            v = tuple(v)
        setattr(cfg, k, v)
    return cfg, given


def validate(cfg: TrainConfig) -> None:
    """Check the settings that argparse cannot (raises UsageError naming the option)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)
    from agents.sb3 import ALGOS

    if cfg.env not in gym.registry:
        known = sorted(i for i in gym.registry if i.startswith("lrm/"))
        raise UsageError(f"--env: unknown env id {cfg.env!r}; known: {', '.join(known)}")
    if cfg.algo not in ALGOS:
        raise UsageError(f"--algo must be one of {', '.join(ALGOS)}, got {cfg.algo!r}")
    if cfg.timesteps is not None and cfg.timesteps < 1:
        raise UsageError(f"--timesteps must be >= 1, got {cfg.timesteps}")
    if cfg.n_envs is not None and not 1 <= cfg.n_envs <= 256:
        raise UsageError(f"--n-envs must be in [1, 256], got {cfg.n_envs}")
    if not (cfg.seed == -1 or 0 <= cfg.seed < 900_000):
        raise UsageError(f"--seed must be in [0, 900000) or -1 (draw one), got {cfg.seed}")
    for name in ("eval_freq", "checkpoint_freq", "test_episodes", "verbose"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.eval_episodes < 1:
        raise UsageError(f"--eval-episodes must be >= 1, got {cfg.eval_episodes}")
    if cfg.residual is not None:
        from agents.residual import RESIDUAL_HEURISTICS

        if cfg.residual not in RESIDUAL_HEURISTICS:
            raise UsageError(f"--residual must be one of {', '.join(RESIDUAL_HEURISTICS)}, "
                             f"got {cfg.residual!r}")
        if cfg.algo in ("dqn",) or cfg.env_kwargs.get("action_type") == "discrete":
            raise UsageError("--residual needs the continuous action type (not dqn)")
    if cfg.vec_env not in VEC_ENVS:
        raise UsageError(f"--vec-env must be one of {', '.join(VEC_ENVS)}, got {cfg.vec_env!r}")
    if cfg.algo in ("dqn",) and cfg.env_kwargs.get("action_type", "discrete") != "discrete":
        raise UsageError(f"--algo {cfg.algo} needs action_type=discrete, got "
                         f"{cfg.env_kwargs['action_type']!r}")
    check_device(cfg.device)
    check_compare(cfg.compare)


def check_device(device: str) -> None:
    """Raise UsageError unless ``device`` is a torch device this machine has.

    Accepts ``cpu``, ``auto`` (SB3: CUDA when available, else CPU), ``cuda``/``cuda:<i>``
    when CUDA is available with that many devices, and ``mps`` when available.
    """
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device: {device!r} is not a torch device; use cpu, cuda, "
                         f"cuda:<index>, mps or auto") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"--device {device}: MPS is not available on this machine; "
                             f"use --device cpu")
        return
    raise UsageError(f"--device: {device!r} is not supported; use cpu, cuda, cuda:<index>, "
                     f"mps or auto")


def check_compare(names: tuple[str, ...]) -> None:
    """Raise UsageError unless every ``--compare`` name is a registered policy or the
    ALGO:PATH of a readable saved model."""
    from agents import POLICIES, is_model_spec

    for name in names:
        if is_model_spec(name):
            from agents.evaluation import check_policy_name

            try:
                check_policy_name(name)
            except UsageError as exc:
                raise UsageError(str(exc).replace("--policies", "--compare", 1)) from None
        elif name not in POLICIES:
            raise UsageError(f"--compare: unknown policy {name!r}; allowed: "
                             f"{', '.join(sorted(POLICIES))}, or ALGO:PATH of a saved model")
