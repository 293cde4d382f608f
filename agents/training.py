"""A training run as a sequence of named phases (:func:`train`), the final comparison with the
heuristics, and the ``train.py`` entry point (:func:`main`).

:func:`train` reads the settings (:func:`_settings`: the command line's, or the saved ones of
a resumed run), resolves the hyperparameters (:func:`_hyperparameters`), finds the checkpoint
to resume from (:func:`_resume_point`), checks what can fail before a file is written
(:func:`_check_before_writing`), writes the run directory (:func:`_write_run_dir`), builds the
envs and the model (:func:`_build_model`), trains (:func:`_learn`) and compares the agent with
the heuristics on held-out seeds (:func:`compare_agent`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.cli import UsageError, check_out_dir, exit_on_signals, signal_exit_code
from agents.run_dir import (
    atomic_json,
    continue_monitor_clock,
    default_run_dir,
    discard_run_dir,
    make_logger,
    monitor_sizes,
    read_saved_config,
    rewind_monitor_files,
    versions,
)
from agents.train_config import (
    ALGO_DISCRETE,
    OFF_POLICY,
    ROOT,
    TEST_SEED,
    VALIDATION_SEED,
    TrainConfig,
    check_device,
    config_from_args,
    validate,
)
from agents.training_envs import (
    EnvFactory,
    check_model_builds,
    fleet_env_kwargs,
    make_fleet_env,
    make_training_venv,
    native_action_spec,
)


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
    metrics_cb: Any = None
    eval_cb: Any = None
    stop_cb: Any = None
    callbacks: list[Any] = field(default_factory=list)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint records besides the model: the run's id, the validation history,
        the episode count, the number of resumes and the monitor files' sizes."""
        return {"run_id": self.run_id, "eval": self.eval_cb.state(),
                "episodes": self.metrics_cb.episodes, "n_resumes": self.n_resumes,
                "monitor_bytes": monitor_sizes(self.run_dir / "monitor")}


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
            discard_run_dir(run.run_dir, before)
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
        saved = read_saved_config(run_dir)
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
    run.factory = EnvFactory(cfg.env, run.env_kwargs, hp["env_wrapper"])
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

    run_dir = run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "monitor").mkdir(exist_ok=True)
    cmd = shlex.join(["python", "train.py", *argv])
    with open(run_dir / "command.txt", "a") as fh:
        fh.write(cmd + "\n")
    config_json = _config_json(run)
    atomic_json(run_dir / "config.json", config_json)
    run.config_json = config_json
    if run.found is not None:
        for moved in cb.set_aside([p for p, _ in run.found.damaged]):
            print(f"note: the damaged checkpoint is kept as {moved}", file=sys.stderr)
        for tmp in run.ckpt_dir.glob(".tmp_step_*"):  # a checkpoint whose writing was cut
            shutil.rmtree(tmp, ignore_errors=True)


def _config_json(run: _Run) -> dict[str, Any]:
    """The content of ``config.json``: the settings, the env, the hyperparameters, the seeds
    and the package versions (a resumed run keeps its creation time and adds a resume)."""
    from agents.hyperparams import printable

    cfg, hp, entry = run.cfg, run.hp, run.entry
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
    return config_json


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

    _make_callbacks(run)
    done_steps = int(run.model.num_timesteps)
    if run.cfg.timesteps - done_steps > 0:
        code = _learn_remaining_steps(run, done_steps)
        if code:
            return code
    else:
        print(f"{run.run_dir} already trained for {done_steps} >= {run.cfg.timesteps} steps",
              file=sys.stderr)
    cb.save_model_dir(run.model, run.run_dir, extra_files=run.extra_files)
    run.logger.close()
    run.venv.close()
    return 0


def _make_callbacks(run: _Run) -> None:
    """The fleet metrics, validation, checkpoint and signal callbacks; a resumed run's carry
    on from its checkpoint (the validation points of the lost stretch go with it)."""
    from agents import callbacks as cb

    cfg, hp, entry, run_dir = run.cfg, run.hp, run.entry, run.run_dir
    hparams = {"algo": cfg.algo, "env": cfg.env, "seed": cfg.seed, "n_envs": cfg.n_envs,
               "timesteps": cfg.timesteps, "normalize": str(hp["normalize"]),
               **{k: v if isinstance(v, (int, float, str, bool)) else str(entry.get(k, v))
                  for k, v in hp["algo_kwargs"].items()}}
    run.metrics_cb = metrics_cb = cb.FleetMetricsCallback(hparams)
    run.eval_cb = eval_cb = cb.FleetEvalCallback(
        run.factory, [VALIDATION_SEED + k for k in range(cfg.eval_episodes)], cfg.eval_freq,
        run_dir, verbose=cfg.verbose, extra_files=run.extra_files)
    if run.resume_state:
        eval_cb.load_state(run.resume_state.get("eval", {}))
        metrics_cb.episodes = int(run.resume_state.get("episodes", 0))
    if cfg.resume:  # validation points of the lost stretch go with it
        if eval_cb.history["timesteps"]:
            eval_cb.save_history()
        else:
            (run_dir / "evaluations.npz").unlink(missing_ok=True)
    ckpt_cb = cb.CheckpointCallback(run.ckpt_dir, cfg.checkpoint_freq, run.checkpoint_state,
                                    extra_files=run.extra_files)
    run.stop_cb = cb.StopOnSignal()
    run.callbacks = [metrics_cb, eval_cb, ckpt_cb, run.stop_cb]


def _learn_remaining_steps(run: _Run, done_steps: int) -> int:
    """``learn`` the steps still to go; then record the speed in ``config.json``, add a last
    validation point and write a checkpoint. Returns 0, or 128 + signal when stopped (after
    saving a checkpoint)."""
    from agents import callbacks as cb

    cfg, model, logger, stop_cb = run.cfg, run.model, run.logger, run.stop_cb
    eval_cb = run.eval_cb
    print(f"training {cfg.algo} on {cfg.env}: {cfg.timesteps} steps ({done_steps} done), "
          f"{cfg.n_envs} envs, run directory {run.run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        model.learn(total_timesteps=cfg.timesteps - done_steps, callback=run.callbacks,
                    progress_bar=cfg.progress_bar, reset_num_timesteps=run.ckpt is None)
    except KeyboardInterrupt as exc:  # a second signal, or one before the handlers
        stop_cb.interrupted = stop_cb.interrupted or getattr(exc, "signum", signal.SIGINT)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        # Ctrl-C also reaches SubprocVecEnv workers, whose pipes then close
        if stop_cb.interrupted is None:
            raise
    elapsed = time.perf_counter() - t0
    if stop_cb.interrupted is not None:
        return _stop_with_a_checkpoint(run)
    steps = int(model.num_timesteps) - done_steps
    print(f"trained {steps} steps in {elapsed:.1f} s ({steps / max(elapsed, 1e-9):.0f} "
          f"steps/s)", file=sys.stderr)
    run.config_json["speed"] = {"steps": steps, "seconds": round(elapsed, 2),
                                "steps_per_second": round(steps / max(elapsed, 1e-9), 1)}
    atomic_json(run.run_dir / "config.json", run.config_json)
    if cfg.eval_freq > 0 and eval_cb.history["timesteps"][-1:] != [model.num_timesteps]:
        eval_cb.num_timesteps = model.num_timesteps
        eval_cb.next_eval = 0
        eval_cb.on_step()  # a last validation point at the final step
        logger.dump(model.num_timesteps)
    cb.write_checkpoint(model, run.ckpt_dir, run.checkpoint_state(), extra_files=run.extra_files)
    return 0


def _stop_with_a_checkpoint(run: _Run) -> int:
    """A stopped run: write a checkpoint, close the logger and the envs, say how to resume;
    return 128 + the signal."""
    from agents import callbacks as cb

    model = run.model
    cb.write_checkpoint(model, run.ckpt_dir, run.checkpoint_state(), extra_files=run.extra_files)
    run.logger.close()
    try:
        run.venv.close()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # workers already gone
    print(f"interrupted at {model.num_timesteps} steps; checkpoint saved. Resume with:\n"
          f"  python train.py --out {shlex.quote(str(run.run_dir))} --resume", file=sys.stderr)
    return 128 + int(run.stop_cb.interrupted)


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
