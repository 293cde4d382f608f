"""Train a stable-baselines3 dispatch agent on a fleet environment and compare it with heuristics.

Usage::

    python train.py                                    # residual PPO on lrm/Critical-v1, < 10 minutes
    python train.py --env lrm/Volatile-v1 --algo sac --timesteps 100000 --seed 1
    python train.py --env-kwarg storage_kwh=0.5 --env-kwarg harvest_cv=0.6
    python train.py --out runs/my_run --resume         # continue an interrupted run

The run directory holds ``model.zip`` and ``vecnormalize.pkl`` (load them with
``agents.sb3.load_sb3_policy("ppo:DIR/model.zip")``), ``best/`` (best validation model),
``checkpoints/``, ``config.json``, ``command.txt``, ``evaluations.npz``, ``monitor/``, ``tb/``
(TensorBoard: ``tensorboard --logdir DIR/tb``) and ``comparison/`` (the final evaluation).

Seeds: training sub-env ``i`` starts from seed ``seed + i`` (plus ``n_envs`` per resume), all
below :data:`VALIDATION_SEED`; periodic evaluation uses the fixed validation seeds
``VALIDATION_SEED + k`` and the final comparison held-out test seeds derived from ``TEST_SEED``
(``evaluate.evaluation_seeds``), so the three sets are disjoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import time
import typing
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # a signal while the modules below load: one line, 130 / 143
    def _quit_during_imports(signum: int, frame: object) -> None:
        sys.stderr.write("train.py: interrupted during start-up\n")
        raise SystemExit(128 + signum)

    for _s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_s, _quit_during_imports)

from agents.cli import (
    OneLineParser,
    UsageError,
    check_out_dir,
    exit_on_signals,
    parse_env_kwargs,
    signal_exit_code,
)

ROOT = Path(__file__).resolve().parent

#: Training env seeds are below this; validation seeds start here.
VALIDATION_SEED = 1_000_000
#: First seed of the held-out test episodes of the final comparison.
TEST_SEED = 2_000_000
#: Back ends of ``--vec-env`` (the first is the default).
VEC_ENVS = ("native", "dummy", "subproc")
#: Heuristics the final comparison runs besides the trained agent (those available).
DEFAULT_COMPARE = ("random", "cheapest", "mean_matching", "variance_aware", "variance_feedback",
                   "oracle")


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


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, one option per :class:`TrainConfig` field (its metadata);
    every option defaults to None (= not given)."""
    p = OneLineParser(prog="train.py", description=__doc__.splitlines()[0])
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


# ---------------------------------------------------------------------------- run setup
def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<env with / as _>__<algo>__seed<S>__<YYYYmmdd-HHMMSS>``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / "runs" / f"{cfg.env.replace('/', '_')}__{cfg.algo}__seed{cfg.seed}__{stamp}"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "gymnasium": gymnasium.__version__, "numpy": numpy.__version__,
            "stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__}


def fleet_env_kwargs(cfg: TrainConfig, hp_env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """FleetConfig overrides of the run: hyperparameter env_kwargs, then --env-kwarg."""
    kw = {**hp_env_kwargs, **cfg.env_kwargs}
    if cfg.algo == "dqn":
        kw["action_type"] = "discrete"
    return kw


def make_fleet_env(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """One env of the run (no rendering)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids, also in subprocesses)

    return gym.make(env_id, render_mode=None, **env_kwargs)


class _EnvFactory:
    """Picklable env constructor (SubprocVecEnv and the evaluation callback use it).

    Applies the hyperparameters' ``env_wrapper`` (if any), so training and validation see
    the same action parametrisation.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], wrapper: Any = None) -> None:
        self.env_id, self.env_kwargs, self.wrapper = env_id, dict(env_kwargs), wrapper

    def __call__(self) -> Any:
        env = make_fleet_env(self.env_id, self.env_kwargs)
        return self.wrapper(env) if self.wrapper is not None else env


def native_action_spec(wrapped: Any, wrapper: Any) -> dict[str, Any]:
    """The ``action_wrapper.json`` spec of a wrapped env, if its map has a batched form.

    Args:
        wrapped: An env wrapped in ``wrapper``.
        wrapper: The hyperparameters' ``env_wrapper`` class (named in the error).

    Raises:
        UsageError: the wrapper is not an action map of ``agents.wrappers.ACTION_WRAPPERS``
            (the native back end cannot apply it to single copies).
    """
    from agents.wrappers import ACTION_WRAPPERS

    spec = wrapped.spec_dict() if hasattr(wrapped, "spec_dict") else None
    if spec is None or spec.get("class") not in ACTION_WRAPPERS:
        name = f"{getattr(wrapper, '__module__', '')}.{getattr(wrapper, '__qualname__', wrapper)}"
        raise UsageError(f"--vec-env native: env_wrapper {name} has no batched form (known: "
                         f"{', '.join(sorted(ACTION_WRAPPERS))}); use --vec-env dummy")
    return spec


def make_training_venv(env_id: str, env_kwargs: dict[str, Any], n_envs: int, seed: int,
                       backend: str = "native", wrapper: Any = None,
                       monitor_dir: str | Path | None = None, monitor_append: bool = False
                       ) -> Any:
    """The training VecEnv of a run (before ``VecNormalize``).

    Copy i starts from seed ``seed + i``; each copy's finished episodes go to
    ``<monitor_dir>/<i>.monitor.csv`` (SB3 ``Monitor`` files). The back ends give the same
    trajectories for the same seed and actions:

    * ``"native"``: :class:`agents.vec.FleetSB3VecEnv` (one batched simulator core) under
      :class:`agents.vec.VecActionMap`, the batched form of ``wrapper`` (rebuilt from the
      wrapper's ``spec_dict()``, the content of ``action_wrapper.json``);
    * ``"dummy"`` / ``"subproc"``: SB3's ``make_vec_env`` of single envs, each wrapped in
      ``wrapper`` and then ``Monitor``, in a ``DummyVecEnv`` / ``SubprocVecEnv``.

    Args:
        env_id: Registered id.
        env_kwargs: ``FleetConfig`` overrides.
        n_envs: Number of copies.
        seed: Seed of copy 0.
        backend: One of :data:`VEC_ENVS`.
        wrapper: The hyperparameters' ``env_wrapper`` class, or None.
        monitor_dir: Directory of the monitor CSV files (None: none).
        monitor_append: Append to existing monitor files (a resumed run).

    Raises:
        UsageError: ``backend`` unknown, or ``wrapper`` has no batched form for ``native``.
    """
    if backend not in VEC_ENVS:
        raise UsageError(f"--vec-env must be one of {', '.join(VEC_ENVS)}, got {backend!r}")
    factory = _EnvFactory(env_id, env_kwargs, wrapper)
    if backend == "native":
        from agents.vec import VecActionMap, make_sb3_vec_env

        spec = None
        if wrapper is not None:
            probe = factory()
            try:
                spec = native_action_spec(probe, wrapper)
            finally:
                probe.close()
        venv = make_sb3_vec_env(env_id, n_envs, seed=seed, backend="native",
                                env_kwargs=env_kwargs, monitor_dir=monitor_dir,
                                monitor_append=monitor_append)
        return VecActionMap.from_spec(venv, spec) if spec is not None else venv
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    return make_vec_env(factory, n_envs=n_envs, seed=seed,
                        monitor_dir=None if monitor_dir is None else str(monitor_dir),
                        monitor_kwargs={"override_existing": not monitor_append},
                        vec_env_cls=SubprocVecEnv if backend == "subproc" else DummyVecEnv)


def _atomic_json(path: Path, data: Any) -> None:
    from agents.files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def available_policies(names: tuple[str, ...], env: Any) -> tuple[list[str], list[str]]:
    """Split comparison policies into those the policy registry can build and the rest."""
    try:
        from agents import make_policy  # type: ignore[attr-defined]
    except ImportError:
        make_policy = None
    ok, missing = [], []
    for name in names:
        if make_policy is None:
            (ok if name == "random" else missing).append(name)
            continue
        try:
            make_policy(name, env, 0)
            ok.append(name)
        except Exception:  # noqa: BLE001 - unknown or unsuitable for this env
            missing.append(name)
    return ok, missing


def _read_saved_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run to resume (UsageError when missing or unreadable)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: no run to resume in {run_dir} (config.json missing)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--resume: {path} cannot be read ({type(exc).__name__}); the run "
                         f"cannot be resumed") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)
            and isinstance(saved.get("hyperparams_raw"), dict)):
        raise UsageError(f"--resume: {path} is not the config.json of a training run")
    return saved


def check_model_builds(algo_cls: type, hp: dict[str, Any], cfg: TrainConfig,
                       env_kwargs: dict[str, Any], where: str) -> None:
    """Build the run's model once on throwaway envs, so that hyperparameters SB3 or torch
    refuse (``n_steps: 0``, a NaN learning rate, bad ``policy_kwargs``) are reported before
    anything is written. Called before the run's seeds are set: it draws nothing the run uses.

    Raises:
        UsageError: the model cannot be built (the first line of the error, naming ``where``).
    """
    import warnings

    from stable_baselines3.common.vec_env import VecNormalize

    backend = "native" if cfg.vec_env == "native" else "dummy"
    venv = make_training_venv(cfg.env, env_kwargs, int(cfg.n_envs), 0, backend,
                              hp["env_wrapper"])
    try:
        if hp["normalize"] is not None:
            venv = VecNormalize(venv, **hp["normalize"])
        with warnings.catch_warnings():  # SB3's advice is given once, by the real model
            warnings.simplefilter("ignore")
            algo_cls(hp["policy"], venv, device=cfg.device, **hp["algo_kwargs"])
    except (AssertionError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"--hyperparams: {where}: the model cannot be built: {msg}") from None
    finally:
        venv.close()


def monitor_sizes(monitor_dir: Path) -> dict[str, int]:
    """Byte size of each ``*.monitor.csv`` (recorded in a checkpoint's state)."""
    if not monitor_dir.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in sorted(monitor_dir.glob("*.monitor.csv"))}


def rewind_monitor_files(monitor_dir: Path, sizes: dict[str, int]) -> list[float | None]:
    """Cut each monitor file back to its size at the checkpoint (the episodes that ended
    after it are replayed by the resumed run) and return each file's ``t_start`` header.

    Returns:
        Per file ``0.monitor.csv``, ``1.monitor.csv``, ... (in ``sizes``), the creation time
        of the run's monitor (None when its header cannot be read).
    """
    t_starts: list[float | None] = []
    for name, size in sorted(sizes.items(), key=lambda kv: int(kv[0].split(".")[0])):
        path = monitor_dir / name
        t0 = None
        if path.is_file():
            if path.stat().st_size > int(size):
                with open(path, "r+b") as fh:
                    fh.truncate(int(size))
            with open(path) as fh:
                first = fh.readline()
            try:
                t0 = float(json.loads(first[1:])["t_start"]) if first.startswith("#") else None
            except (ValueError, KeyError, TypeError):
                t0 = None
        t_starts.append(t0)
    return t_starts


def continue_monitor_clock(venv: Any, t_starts: list[float | None]) -> None:
    """Let the monitors of a resumed run count time from the run's first start (the ``t``
    column goes on forward instead of starting again at 0)."""
    from agents.vec import FleetSB3VecEnv

    inner = venv
    while inner is not None and not isinstance(inner, FleetSB3VecEnv):
        inner = getattr(inner, "venv", None)
    if inner is not None:
        if t_starts and t_starts[0] is not None:
            inner._t_start = t_starts[0]
        return
    for i, t0 in enumerate(t_starts[:venv.num_envs]):
        if t0 is not None:
            venv.set_attr("t_start", t0, indices=[i])


def make_logger(folder: Path, verbose: int, purge_step: int | None = None) -> Any:
    """SB3 logger writing TensorBoard events to ``folder`` (and stdout when ``verbose``).

    With ``purge_step`` the event file starts with TensorBoard's restart marker: readers
    drop the events of earlier files at steps >= ``purge_step`` (those a resumed run
    replays), so the resumed run reads as one run.
    """
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat, make_output_format
    from torch.utils.tensorboard import SummaryWriter

    class _TensorBoard(TensorBoardOutputFormat):
        def __init__(self) -> None:
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
            self._is_closed = False

    folder.mkdir(parents=True, exist_ok=True)
    if purge_step is not None:
        _wait_for_a_later_event_file_name(folder)
    formats = [make_output_format("stdout", str(folder))] if verbose else []
    return Logger(folder=str(folder), output_formats=[*formats, _TensorBoard()])


def _wait_for_a_later_event_file_name(folder: Path, most: float = 2.0) -> None:
    """Wait (at most ``most`` seconds) until a new event file's name sorts after those in
    ``folder``. TensorBoard reads the files in name order, ``events.out.tfevents.<unix
    seconds>.<host>.<pid>...``: a run resumed within the second its killed predecessor
    started would otherwise be read first (the lower pid), before the events it purges."""
    stamps = []
    for p in folder.glob("events.out.tfevents.*"):
        with contextlib.suppress(IndexError, ValueError):
            stamps.append(int(p.name.split(".")[3]))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= most:
            time.sleep(wait)


def _discard_run_dir(run_dir: Path, before: set[str] | None) -> None:
    """Remove what a fresh run wrote before it could start: the whole directory if it did
    not exist (``before`` None), else only the entries it did not hold before."""
    if before is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in set(os.listdir(run_dir)) - before if run_dir.is_dir() else ():
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- training
@dataclass
class _Run:
    """What the phases of :func:`train` hand on to each other."""

    cfg: TrainConfig
    run_dir: Path
    run_id: str | None
    entry: dict[str, Any]
    saved: dict[str, Any] | None = None
    algo_cls: Any = None
    where: str = ""
    hp: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    probe: Any = None
    fleet_cfg: Any = None
    found: Any = None
    ckpt: Path | None = None
    resume_state: dict[str, Any] | None = None
    n_resumes: int = 0
    base_seed: int = 0
    factory: Any = None
    extra_files: dict[str, str] = field(default_factory=dict)
    config_json: dict[str, Any] = field(default_factory=dict)
    venv: Any = None
    model: Any = None
    logger: Any = None

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def train(cfg: TrainConfig, given: set[str], argv: list[str]) -> int:
    """Run (or resume) training, save the run directory, print the comparison table.

    Everything that can be checked is checked before the run directory is written; a fresh
    run that fails or is interrupted before training starts leaves no run directory behind.
    """
    import torch

    torch.set_num_threads(1)
    run = _settings(cfg, given)
    _hyperparameters(run)
    _resume_point(run)
    _check_before_writing(run)
    fresh = not run.cfg.resume
    before = set(os.listdir(run.run_dir)) if run.run_dir.is_dir() else None
    try:
        _write_run_dir(run, argv)
        _build_model(run)
    except BaseException:
        if fresh:
            _discard_run_dir(run.run_dir, before)
        raise
    code = _learn(run)
    if code:
        return code
    if run.cfg.test_episodes > 0:
        compare_agent(run.cfg, run.run_dir, run.env_kwargs, run.probe)
    return 0


def _settings(cfg: TrainConfig, given: set[str]) -> _Run:
    """The run's settings: the saved ones of a resumed run (with the options a resume may
    change), else the command line's with the hyperparameter entry of the env."""
    import numpy as np

    from agents.hyperparams import HyperparamError, read_entry

    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if cfg.resume:
        saved = _read_saved_config(run_dir)
        overrides = {k: getattr(cfg, k) for k in ("timesteps", "progress_bar", "verbose",
                                                  "test_episodes", "compare") if k in given}
        extra = sorted(given - set(overrides) - {"out", "resume"})
        if extra:
            print(f"note: resuming with the saved settings of {run_dir}; ignoring "
                  f"{', '.join('--' + e.replace('_', '-') for e in extra)}", file=sys.stderr)
        try:
            cfg = TrainConfig(**{**saved["train"], **overrides})
        except TypeError as exc:
            raise UsageError(f"--resume: {run_dir / 'config.json'} does not match this "
                             f"train.py ({exc})") from None
        cfg.compare = tuple(cfg.compare)
        cfg.resume = True
        check_device(cfg.device)  # the saved device, perhaps of another machine
        check_out_dir(run_dir)
        # run_id None: a run written before runs had an id
        return _Run(cfg, run_dir, saved.get("run_id"), saved["hyperparams_raw"], saved)
    check_out_dir(run_dir)
    if (run_dir / "config.json").exists():
        raise UsageError(f"--out: {run_dir} already holds a run; pass --resume to continue "
                         f"it or choose another directory")
    if cfg.seed == -1:
        cfg.seed = int(np.random.default_rng().integers(0, 900_000))
    hp_file = Path(cfg.hyperparams) if cfg.hyperparams else \
        ROOT / "hyperparams" / f"{cfg.algo}.yml"
    cfg.hyperparams = str(hp_file)
    try:
        entry = read_entry(hp_file, cfg.env)
    except HyperparamError as exc:
        raise UsageError(f"--hyperparams: {exc}") from None
    return _Run(cfg, run_dir, uuid.uuid4().hex, entry)


def _hyperparameters(run: _Run) -> None:
    """Resolve the hyperparameters and env overrides; check them against the env."""
    from agents.hyperparams import HyperparamError, resolve_entry
    from agents.sb3 import algo_class

    cfg, entry = run.cfg, run.entry
    run.algo_cls = algo_cls = algo_class(cfg.algo)
    run.where = where = f"{cfg.hyperparams} [{cfg.env}]"
    try:
        hp = resolve_entry(entry, algo_cls, None, where)
    except HyperparamError as exc:
        raise UsageError(f"--hyperparams: {exc}") from None
    run.env_kwargs = fleet_env_kwargs(cfg, hp["env_kwargs"])
    try:
        run.probe = probe = make_fleet_env(cfg.env, run.env_kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--env-kwarg: {exc}") from None
    run.fleet_cfg = fleet_cfg = getattr(probe.unwrapped, "config", None)
    if fleet_cfg is None:
        raise UsageError(f"--env: {cfg.env} is not a fleet environment")
    n_actions = 0 if fleet_cfg.action_type == "discrete" else int(probe.action_space.shape[0])
    if ALGO_DISCRETE.get(cfg.algo) and fleet_cfg.action_type != "discrete":
        raise UsageError(f"--algo {cfg.algo} needs a discrete action space")
    if cfg.algo in ("sac", "td3") and fleet_cfg.action_type == "discrete":
        raise UsageError(f"--algo {cfg.algo} needs action_type=continuous")
    if "noise_type" in entry:
        try:
            hp = resolve_entry(entry, algo_cls, n_actions, where)
        except HyperparamError as exc:
            raise UsageError(f"--hyperparams: {exc}") from None
    if cfg.residual is not None:  # the residual mode replaces the env_wrapper
        import functools

        from agents.residual import ResidualMixtureAction

        hp["env_wrapper"] = functools.partial(ResidualMixtureAction, heuristic=cfg.residual)
    run.hp = hp
    cfg.n_envs = cfg.n_envs or hp["n_envs"]
    cfg.timesteps = cfg.timesteps or hp["n_timesteps"]
    if cfg.timesteps is None:
        raise UsageError(f"--timesteps not given and {where} has no n_timesteps")


def _resume_point(run: _Run) -> None:
    """The checkpoint a resumed run continues from (if any) and the seeds of the training
    envs (each resume moves on to new ones)."""
    from agents import callbacks as cb

    cfg = run.cfg
    if cfg.resume:
        try:
            run.found = found = cb.find_checkpoint(
                run.ckpt_dir, run.run_id, normalize=run.hp["normalize"] is not None,
                replay_buffer=cfg.algo in OFF_POLICY)
        except ValueError as exc:
            raise UsageError(f"--resume: {exc}; the run cannot be resumed") from None
        run.ckpt, run.resume_state = found.path, found.state
        if run.ckpt is None and (run.run_dir / "model.zip").exists():
            raise UsageError(f"--resume: {run.run_dir} holds a trained model.zip but no "
                             f"checkpoint to resume from; refusing to start it again over it")
        for note in found.notes:
            print(f"note: {note}", file=sys.stderr)
        if run.resume_state is None:
            print(f"note: {run.run_dir} has no checkpoint yet; training starts again from "
                  f"step 0", file=sys.stderr)
    if cfg.resume and run.resume_state is not None:
        run.n_resumes = int(run.resume_state.get("n_resumes", 0)) + 1
    run.base_seed = cfg.seed + cfg.n_envs * run.n_resumes
    if run.base_seed + cfg.n_envs > VALIDATION_SEED:
        raise UsageError(f"--seed {cfg.seed}: training seeds would reach the validation seeds")


def _check_before_writing(run: _Run) -> None:
    """Build the env wrapper and (for a new model) the model once, so that their errors come
    before any file is written."""
    from agents.wrappers import ACTION_WRAPPER_FILE

    cfg, hp = run.cfg, run.hp
    run.factory = _EnvFactory(cfg.env, run.env_kwargs, hp["env_wrapper"])
    if hp["env_wrapper"] is not None:
        try:
            wrapped = run.factory()
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--hyperparams: env_wrapper: {exc}") from None
        if hasattr(wrapped, "spec_dict"):  # an action map the saved policy must replay
            run.extra_files[ACTION_WRAPPER_FILE] = json.dumps(wrapped.spec_dict())
        if cfg.vec_env == "native":
            native_action_spec(wrapped, hp["env_wrapper"])  # a clear error before any file
        wrapped.close()
    if run.ckpt is None:
        check_model_builds(run.algo_cls, hp, cfg, run.env_kwargs, run.where)


def _write_run_dir(run: _Run, argv: list[str]) -> None:
    """Create the run directory: ``command.txt``, ``config.json`` and, on a resume, the
    checkpoints as the resumed checkpoint left them (damaged ones set aside)."""
    from agents import callbacks as cb
    from agents.hyperparams import printable

    cfg, hp, entry, run_dir = run.cfg, run.hp, run.entry, run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "monitor").mkdir(exist_ok=True)
    cmd = shlex.join(["python", "train.py", *argv])
    with open(run_dir / "command.txt", "a") as fh:
        fh.write(cmd + "\n")
    base_seed = run.base_seed
    config_json = {
        "run_id": run.run_id,
        "train": {**asdict(cfg), "compare": list(cfg.compare)},
        "fleet": asdict(run.fleet_cfg),
        "env_kwargs": run.env_kwargs,
        "hyperparams_raw": printable(entry),
        "hyperparams": {"policy": hp["policy"], "n_envs": cfg.n_envs,
                        "n_timesteps": cfg.timesteps, "normalize": hp["normalize"],
                        **{k: entry.get(k, str(v)) if callable(v) or not isinstance(
                            v, (int, float, str, bool, list, dict, type(None))) else v
                           for k, v in hp["algo_kwargs"].items()},
                        "env_wrapper": entry.get("env_wrapper") if cfg.residual is None
                        else {"agents.residual.ResidualMixtureAction":
                              {"heuristic": cfg.residual}}},
        "seeds": {"train": [base_seed, base_seed + cfg.n_envs - 1],
                  "validation": [VALIDATION_SEED, VALIDATION_SEED + cfg.eval_episodes - 1],
                  "test": {"derived_from": TEST_SEED, "episodes": cfg.test_episodes}},
        "versions": versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    resume_state = run.resume_state
    if cfg.resume:
        old = run.saved
        config_json["created"] = old.get("created", config_json["created"])
        config_json["resumes"] = [*old.get("resumes", []), {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "from_timestep": resume_state["num_timesteps"] if resume_state else 0}]
    _atomic_json(run_dir / "config.json", config_json)
    run.config_json = config_json
    if run.found is not None:
        for moved in cb.set_aside([p for p, _ in run.found.damaged]):
            print(f"note: the damaged checkpoint is kept as {moved}", file=sys.stderr)
        for tmp in run.ckpt_dir.glob(".tmp_step_*"):  # a checkpoint whose writing was cut
            shutil.rmtree(tmp, ignore_errors=True)


def _build_model(run: _Run) -> None:
    """The training envs, the model (new, or loaded from the checkpoint) and its logger."""
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.sb3 import VECNORMALIZE_FILE

    cfg, hp, ckpt, resume_state = run.cfg, run.hp, run.ckpt, run.resume_state
    resumed_step = int(resume_state["num_timesteps"]) if resume_state else 0
    t_starts: list[float | None] = []
    if run.found is not None and resume_state is not None and "monitor_bytes" in resume_state:
        t_starts = rewind_monitor_files(run.run_dir / "monitor", resume_state["monitor_bytes"])
    set_random_seed(run.base_seed)
    venv = make_training_venv(cfg.env, run.env_kwargs, cfg.n_envs, run.base_seed, cfg.vec_env,
                              hp["env_wrapper"], run.run_dir / "monitor",
                              monitor_append=ckpt is not None)
    continue_monitor_clock(venv, t_starts)
    if hp["normalize"] is not None:
        if ckpt is not None:
            venv = VecNormalize.load(str(ckpt / VECNORMALIZE_FILE), venv)
            venv.training = True
        else:
            venv = VecNormalize(venv, **hp["normalize"])
    run.venv = venv
    if ckpt is not None:
        model = run.algo_cls.load(str(ckpt / "model.zip"), env=venv, device=cfg.device)
        # load seeds the envs and generators with the saved seed again (the first run's
        # episodes once more); the resumed run's seeds move on
        model.set_random_seed(run.base_seed)
        if (ckpt / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(str(ckpt / "replay_buffer.pkl"))
    else:
        model = run.algo_cls(hp["policy"], venv, seed=cfg.seed, device=cfg.device,
                             verbose=cfg.verbose, **hp["algo_kwargs"])
    run.model = model
    run.logger = make_logger(run.run_dir / "tb", cfg.verbose,
                             purge_step=resumed_step + 1 if cfg.resume else None)
    model.set_logger(run.logger)


def _learn(run: _Run) -> int:
    """Train to ``cfg.timesteps`` with the fleet metrics, validation, checkpoint and signal
    callbacks; save the model. Returns 0, or 128 + signal after saving a checkpoint when
    stopped."""
    from agents import callbacks as cb

    cfg, hp, entry, run_dir = run.cfg, run.hp, run.entry, run.run_dir
    model, logger, venv, extra_files = run.model, run.logger, run.venv, run.extra_files
    hparams = {"algo": cfg.algo, "env": cfg.env, "seed": cfg.seed, "n_envs": cfg.n_envs,
               "timesteps": cfg.timesteps, "normalize": str(hp["normalize"]),
               **{k: v if isinstance(v, (int, float, str, bool)) else str(entry.get(k, v))
                  for k, v in hp["algo_kwargs"].items()}}
    metrics_cb = cb.FleetMetricsCallback(hparams)
    eval_cb = cb.FleetEvalCallback(
        run.factory, [VALIDATION_SEED + k for k in range(cfg.eval_episodes)], cfg.eval_freq,
        run_dir, verbose=cfg.verbose, extra_files=extra_files)
    if run.resume_state:
        eval_cb.load_state(run.resume_state.get("eval", {}))
        metrics_cb.episodes = int(run.resume_state.get("episodes", 0))
    if cfg.resume:  # validation points of the lost stretch go with it
        if eval_cb.history["timesteps"]:
            eval_cb.save_history()
        else:
            (run_dir / "evaluations.npz").unlink(missing_ok=True)

    def state() -> dict[str, Any]:
        return {"run_id": run.run_id, "eval": eval_cb.state(), "episodes": metrics_cb.episodes,
                "n_resumes": run.n_resumes, "monitor_bytes": monitor_sizes(run_dir / "monitor")}

    ckpt_dir = run.ckpt_dir
    ckpt_cb = cb.CheckpointCallback(ckpt_dir, cfg.checkpoint_freq, state, extra_files=extra_files)
    stop_cb = cb.StopOnSignal()
    done_steps = int(model.num_timesteps)
    remaining = cfg.timesteps - done_steps
    if remaining > 0:
        print(f"training {cfg.algo} on {cfg.env}: {cfg.timesteps} steps ({done_steps} done), "
              f"{cfg.n_envs} envs, run directory {run_dir}", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            model.learn(total_timesteps=remaining, callback=[metrics_cb, eval_cb, ckpt_cb,
                                                             stop_cb],
                        progress_bar=cfg.progress_bar, reset_num_timesteps=run.ckpt is None)
        except KeyboardInterrupt as exc:  # a second signal, or one before the handlers
            stop_cb.interrupted = stop_cb.interrupted or getattr(exc, "signum", signal.SIGINT)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            # Ctrl-C also reaches SubprocVecEnv workers, whose pipes then close
            if stop_cb.interrupted is None:
                raise
        elapsed = time.perf_counter() - t0
        steps = int(model.num_timesteps) - done_steps
        if stop_cb.interrupted is not None:
            cb.write_checkpoint(model, ckpt_dir, state(), extra_files=extra_files)
            logger.close()
            try:
                venv.close()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                pass  # workers already gone
            print(f"interrupted at {model.num_timesteps} steps; checkpoint saved. Resume with:\n"
                  f"  python train.py --out {shlex.quote(str(run_dir))} --resume",
                  file=sys.stderr)
            return 128 + int(stop_cb.interrupted)
        print(f"trained {steps} steps in {elapsed:.1f} s ({steps / max(elapsed, 1e-9):.0f} "
              f"steps/s)", file=sys.stderr)
        run.config_json["speed"] = {"steps": steps, "seconds": round(elapsed, 2),
                                    "steps_per_second": round(steps / max(elapsed, 1e-9), 1)}
        _atomic_json(run_dir / "config.json", run.config_json)
        if cfg.eval_freq > 0 and eval_cb.history["timesteps"][-1:] != [model.num_timesteps]:
            eval_cb.num_timesteps = model.num_timesteps
            eval_cb.next_eval = 0
            eval_cb.on_step()  # a last validation point at the final step
            logger.dump(model.num_timesteps)
        cb.write_checkpoint(model, ckpt_dir, state(), extra_files=extra_files)
    else:
        print(f"{run_dir} already trained for {done_steps} >= {cfg.timesteps} steps",
              file=sys.stderr)
    cb.save_model_dir(model, run_dir, extra_files=extra_files)
    logger.close()
    venv.close()
    return 0


#: Algorithms that need a discrete action space.
ALGO_DISCRETE = {"dqn": True}
#: Off-policy algorithms (their checkpoints hold a replay buffer).
OFF_POLICY = ("sac", "td3", "dqn")


def compare_agent(cfg: TrainConfig, run_dir: Path, env_kwargs: dict[str, Any], env: Any) -> None:
    """Evaluate the trained agent and the heuristics on the held-out test seeds; print the table."""
    from agents.evaluation import format_table, run_evaluation

    ok, missing = available_policies(tuple(cfg.compare), env)
    if missing:
        print(f"note: not compared (unknown to the policy registry or unsuitable for this "
              f"env): {', '.join(missing)}", file=sys.stderr)
    policies = [f"{cfg.algo}:{run_dir / 'model.zip'}", *ok]
    summary = run_evaluation(cfg.env, policies, episodes=cfg.test_episodes, seed=TEST_SEED,
                             out_dir=run_dir / "comparison", env_kwargs=env_kwargs,
                             progress=cfg.progress_bar, plots=True)
    print(f"\n{cfg.env}, {cfg.test_episodes} held-out episodes (seeds derived from {TEST_SEED}):")
    print(format_table(summary))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when done, 2 for bad input (one line on stderr), 130/143
    when stopped by SIGINT/SIGTERM (during training after writing a checkpoint)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with exit_on_signals():
        try:
            from agents.grid import is_grid

            if is_grid(argv):  # comma-separated --env/--algo/--seed or --tune: Ray Tune
                from agents.search import run_grid_or_search

                return run_grid_or_search(argv, lambda a: validate(config_from_args(a)[0]))
            cfg, given = config_from_args(argv)
            validate(cfg)
            return train(cfg, given, argv)
        except UsageError as exc:
            print(f"train.py: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print(f"train.py: interrupted ({str(exc) or 'SIGINT'}) before training started; "
                  f"nothing was trained", file=sys.stderr)
            return signal_exit_code(exc)


def cli() -> None:
    """Entry point of ``python train.py`` and the ``lrm-train`` console script."""
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())


if __name__ == "__main__":
    cli()
