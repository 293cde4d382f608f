"""stable-baselines3 callbacks: fleet metrics, fixed-seed evaluation and atomic checkpoints.

* :class:`FleetMetricsCallback` sums each sub-env's energy ledger and reward terms over an
  episode and logs them under ``fleet/`` at every episode end.
* :class:`FleetEvalCallback` runs the current policy on a fixed list of validation seeds and
  logs ``eval/``; it keeps the best model in ``best/``.
* :class:`CheckpointCallback` writes the model, the normaliser, the replay buffer (off-policy)
  and the callbacks' state to a fresh directory, then points ``checkpoints/latest.json`` at it
  with one atomic ``os.replace``: an interrupted write never leaves a half checkpoint behind.
* :class:`StopOnSignal` ends ``learn`` cleanly after SIGINT or SIGTERM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.files import atomic_write_text
from agents.rollout import (
    LockstepEnvs,
    _zero_totals,
    add_step,
    episode_metrics,
    rollout_from_reset,
    stack_infos,
)
from agents.sb3 import VECNORMALIZE_FILE

#: Name of the file pointing at the newest complete checkpoint.
LATEST_FILE = "latest.json"


class EpisodeAccumulator:
    """Totals of each sub-env's episode (:func:`agents.rollout.add_step`, the totals every
    episode loop keeps) until it ends, from the ``infos`` of SB3's vector steps."""

    def __init__(self, n_envs: int) -> None:
        self.totals = _zero_totals(n_envs)
        self._all = np.ones(n_envs, dtype=bool)
        self._no_reward = np.zeros(n_envs)  # the return is SB3's to log (Monitor)

    def add(self, infos: Sequence[dict[str, Any]], dones: np.ndarray) -> list[dict[str, float]]:
        """Add one vector step; return the metrics of every episode that ended in it."""
        if any("reward_terms" not in info for info in infos):  # not a fleet env step
            return []
        done = add_step(self.totals, slice(None), self._no_reward,
                        np.asarray(dones, dtype=bool), stack_infos(infos), self._all, True)
        finished = []
        for i in np.flatnonzero(done):
            row = episode_metrics({k: v[i] for k, v in self.totals.items()})
            finished.append({k: float(v) for k, v in row.items()})
            for v in self.totals.values():
                v[i] = 0
        return finished


class FleetMetricsCallback(BaseCallback):
    """Logs per-episode fleet metrics under ``fleet/`` (mean over the episodes of a log interval).

    Each sub-env's ``info`` is summed over its episode (per env index); at the episode's end
    its auxiliary, wasted and leftover energy [kWh], accuracy and the sum of each reward term
    (``fleet/reward_terms/<name>``, natural units) are recorded with ``record_mean``. Also
    writes the hyperparameters once through SB3's ``HParam``.

    Args:
        hparams: Hyperparameters to show in TensorBoard's HPARAMS tab (scalars and strings).
    """

    def __init__(self, hparams: dict[str, Any] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.hparams = hparams or {}
        self.acc: EpisodeAccumulator | None = None
        self.episodes = 0

    def _on_training_start(self) -> None:
        self.acc = EpisodeAccumulator(self.training_env.num_envs)
        if self.hparams:
            metrics = {"eval/mean_reward": 0.0, "rollout/ep_rew_mean": 0.0}
            self.logger.record("hparams", HParam(self.hparams, metrics),
                               exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        assert self.acc is not None
        for metrics in self.acc.add(self.locals["infos"], self.locals["dones"]):
            self.episodes += 1
            for k, v in metrics.items():
                self.logger.record_mean(f"fleet/{k}", v)
        if self.episodes:
            self.logger.record("fleet/episodes", self.episodes)
        return True


class _Predictor:
    """A batched ``predict`` function (after the training normaliser) as an SB3-style
    policy for :func:`agents.rollout.rollout_from_reset`."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray],
                 normalize: VecNormalize | None) -> None:
        self._predict, self._normalize = predict, normalize

    def predict(self, observation: np.ndarray, state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        x = self._normalize.normalize_obs(observation) if self._normalize is not None \
            else observation
        return self._predict(x), None


def run_fixed_seeds(predict: Callable[[np.ndarray], np.ndarray], make_env: Callable[[], Any],
                    seeds: Sequence[int], normalize: VecNormalize | None = None
                    ) -> dict[str, np.ndarray]:
    """One episode per seed, all in lockstep; returns per-episode return and fleet metrics.

    The episode loop is :func:`agents.rollout.rollout_from_reset` over the envs of
    ``make_env`` (with their wrappers), stepped side by side.

    Args:
        predict: Batched observations (normalised if ``normalize``) -> batched actions.
        make_env: Builds one fleet env.
        seeds: Episode seeds, one episode each.
        normalize: Training normaliser whose observation statistics are applied (read-only).

    Returns:
        ``return`` and every key of :func:`agents.rollout.episode_metrics`, each an array
        over seeds.
    """
    envs = LockstepEnvs([make_env() for _ in seeds])
    try:
        obs, _ = envs.reset(seed=[int(s) for s in seeds])
        totals = rollout_from_reset(_Predictor(predict, normalize), envs, obs, seeds)
        return {"return": totals["return"], **episode_metrics(totals)}
    finally:
        envs.close()


class FleetEvalCallback(BaseCallback):
    """Every ``eval_freq`` timesteps, run the deterministic policy on fixed validation seeds.

    Logs ``eval/mean_reward``, ``eval/std_reward`` and the mean fleet metrics (``eval/aux_kwh``,
    ``eval/accuracy``, ...), appends to ``evaluations.npz`` and saves the best model (highest
    mean return) with its normaliser to ``best/``.

    Args:
        make_env: Builds one evaluation env (same config as training).
        seeds: Validation seeds (disjoint from training and test seeds).
        eval_freq: Evaluate every this many environment steps (summed over sub-envs).
        run_dir: Run directory (``evaluations.npz`` and ``best/`` go there).
    """

    def __init__(self, make_env: Callable[[], Any], seeds: Sequence[int], eval_freq: int,
                 run_dir: Path, verbose: int = 0, extra_files: dict[str, str] | None = None
                 ) -> None:
        super().__init__(verbose)
        self.extra_files = extra_files or {}
        self.make_env = make_env
        self.seeds = list(seeds)
        self.eval_freq = int(eval_freq)
        self.run_dir = Path(run_dir)
        self.best_mean = -np.inf
        self.history: dict[str, list] = {"timesteps": [], "results": []}
        self.next_eval = self.eval_freq

    # state kept in checkpoints so a resumed run continues the same record
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (best score, next evaluation step, history)."""
        return {"best_mean": None if not np.isfinite(self.best_mean) else self.best_mean,
                "next_eval": self.next_eval,
                "timesteps": self.history["timesteps"],
                "results": [list(map(float, r)) for r in self.history["results"]]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        best = state.get("best_mean")
        self.best_mean = -np.inf if best is None else float(best)
        self.next_eval = int(state.get("next_eval", self.eval_freq))
        self.history = {"timesteps": list(state.get("timesteps", [])),
                        "results": [list(r) for r in state.get("results", [])]}

    def _normalizer(self) -> VecNormalize | None:
        norm = find_normalizer(self.model.get_env())
        return norm if norm is not None and norm.norm_obs else None

    def evaluate(self) -> dict[str, np.ndarray]:
        """Run the validation episodes with the current model."""
        def predict(x: np.ndarray) -> np.ndarray:
            return self.model.predict(x, deterministic=True)[0]
        return run_fixed_seeds(predict, self.make_env, self.seeds, self._normalizer())

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.num_timesteps < self.next_eval:
            return True
        while self.next_eval <= self.num_timesteps:
            self.next_eval += self.eval_freq
        res = self.evaluate()
        mean = float(res["return"].mean())
        self.logger.record("eval/mean_reward", mean)
        self.logger.record("eval/std_reward", float(res["return"].std()))
        for k, v in res.items():
            if k != "return":
                self.logger.record(f"eval/{k}", float(v.mean()))
        self.history["timesteps"].append(int(self.num_timesteps))
        self.history["results"].append([float(x) for x in res["return"]])
        self.save_history()
        if mean > self.best_mean:
            self.best_mean = mean
            save_model_dir(self.model, self.run_dir / "best", extra_files=self.extra_files)
        if self.verbose:
            print(f"eval at {self.num_timesteps}: mean return {mean:.2f} (best "
                  f"{self.best_mean:.2f})")
        return True

    def save_history(self) -> None:
        """Write the validation history to ``evaluations.npz`` (atomically)."""
        path = self.run_dir / "evaluations.npz"
        tmp = self.run_dir / ".evaluations.tmp.npz"
        np.savez(tmp, timesteps=np.array(self.history["timesteps"]),
                 results=np.array(self.history["results"]), seeds=np.array(self.seeds))
        os.replace(tmp, path)


def find_normalizer(env: VecEnv | None) -> VecNormalize | None:
    """The VecNormalize wrapper in a VecEnv stack, or None."""
    while env is not None and not isinstance(env, VecNormalize):
        env = getattr(env, "venv", None)
    return env if isinstance(env, VecNormalize) else None


def save_model_dir(model: Any, directory: Path, replay_buffer: bool = False,
                   extra_files: dict[str, str] | None = None) -> None:
    """Save ``model.zip`` and ``vecnormalize.pkl`` (and ``replay_buffer.pkl``) atomically.

    Each file is written to a temporary name in ``directory`` and moved into place;
    ``extra_files`` (name -> text, e.g. ``action_wrapper.json``) are written the same way.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (extra_files or {}).items():
        atomic_write_text(directory / name, text)
    tmp_model = directory / ".model.tmp.zip"
    model.save(str(tmp_model))
    norm = find_normalizer(model.get_env())
    if norm is not None:
        tmp_norm = directory / f".{VECNORMALIZE_FILE}.tmp"
        norm.save(str(tmp_norm))
        os.replace(tmp_norm, directory / VECNORMALIZE_FILE)
    if replay_buffer and getattr(model, "replay_buffer", None) is not None:
        tmp_rb = directory / ".replay_buffer.tmp.pkl"
        model.save_replay_buffer(str(tmp_rb))
        os.replace(tmp_rb, directory / "replay_buffer.pkl")
    os.replace(tmp_model, directory / "model.zip")


class CheckpointCallback(BaseCallback):
    """Every ``save_freq`` timesteps, write a complete checkpoint and point ``latest.json`` at it.

    A checkpoint ``checkpoints/step_<N>/`` holds ``model.zip``, ``vecnormalize.pkl``,
    ``replay_buffer.pkl`` (off-policy algorithms) and ``state.json`` (the step count and the
    state of the other callbacks). It is built under a temporary name and renamed when
    complete; ``latest.json`` is replaced atomically afterwards. Older checkpoints beyond
    ``keep`` are deleted.

    Args:
        ckpt_dir: The ``checkpoints`` directory.
        save_freq: Checkpoint every this many environment steps (summed over sub-envs).
        state_fn: Returns extra JSON state to store (e.g. the eval callback's history).
        keep: Number of checkpoints to keep.
    """

    def __init__(self, ckpt_dir: Path, save_freq: int,
                 state_fn: Callable[[], dict[str, Any]] | None = None, keep: int = 2,
                 verbose: int = 0, extra_files: dict[str, str] | None = None) -> None:
        super().__init__(verbose)
        self.extra_files = extra_files or {}
        self.ckpt_dir = Path(ckpt_dir)
        self.save_freq = int(save_freq)
        self.state_fn = state_fn or dict
        self.keep = keep
        self.next_save = self.save_freq

    def _on_training_start(self) -> None:
        if self.save_freq > 0:
            self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps >= self.next_save:
            self.save()
            self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq
        return True

    def save(self) -> Path:
        """Write a checkpoint of the current model now; return its directory."""
        return write_checkpoint(self.model, self.ckpt_dir, self.state_fn(), self.keep,
                                self.extra_files)


def write_checkpoint(model: Any, ckpt_dir: Path, state: dict[str, Any], keep: int = 2,
                     extra_files: dict[str, str] | None = None) -> Path:
    """Write ``ckpt_dir/step_<N>`` completely, then atomically update ``latest.json``."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    n = int(model.num_timesteps)
    final = ckpt_dir / f"step_{n:012d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=".tmp_step_"))
    try:
        save_model_dir(model, tmp, replay_buffer=hasattr(model, "replay_buffer"),
                       extra_files=extra_files)
        atomic_write_text(tmp / "state.json",
                          json.dumps({"num_timesteps": n, **state}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_dir / LATEST_FILE,
                      json.dumps({"path": final.name, "num_timesteps": n}))
    old = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir() and p != final)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``latest.json`` points at and its ``state.json``, or None (no pointer).

    Reads the pointer as written; :func:`find_checkpoint` is what a resume uses (it checks
    the files and falls back to older checkpoints).
    """
    pointer = Path(ckpt_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(ckpt_dir) / json.loads(pointer.read_text())["path"]
    state = json.loads((path / "state.json").read_text())
    return path, state


#: Name of a complete checkpoint directory: ``step_`` and the step count in 12 digits.
CHECKPOINT_NAME = re.compile(r"step_(\d{12})")

#: Prefix a damaged checkpoint directory gets when a resume moves it aside.
DAMAGED_PREFIX = "damaged_"


def checkpoint_problem(path: Path, run_id: str | None = None, normalize: bool = False,
                       replay_buffer: bool = False) -> str | None:
    """What is wrong with the checkpoint directory ``path``, or None if it is intact.

    Checks that ``state.json`` is a JSON object whose ``num_timesteps`` is the step in the
    directory's name and whose ``run_id`` is ``run_id`` (when given: the checkpoint belongs
    to this run), that ``model.zip`` is an intact SB3 zip (``agents.sb3.check_model_zip``),
    that ``vecnormalize.pkl`` holds a ``VecNormalize`` (when ``normalize``) and that a
    non-empty ``replay_buffer.pkl`` exists (when ``replay_buffer``).
    """
    import pickle

    from agents.sb3 import check_model_zip

    m = CHECKPOINT_NAME.fullmatch(path.name)
    if m is None or not path.is_dir():
        return "not a checkpoint directory"
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        return "state.json is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"state.json cannot be read ({type(exc).__name__})"
    if not isinstance(state, dict) or state.get("num_timesteps") != int(m.group(1)):
        return "state.json does not hold this checkpoint's step count"
    if run_id is not None and state.get("run_id") != run_id:
        return "it belongs to another run (run_id differs)"
    if not (path / "model.zip").is_file():
        return "model.zip is missing"
    try:
        check_model_zip(path / "model.zip")
    except ValueError:
        return "model.zip is not an intact stable-baselines3 model"
    if normalize:
        norm = path / VECNORMALIZE_FILE
        if not norm.is_file():
            return f"{VECNORMALIZE_FILE} is missing"
        try:
            with open(norm, "rb") as fh:
                ok = isinstance(pickle.load(fh), VecNormalize)
        except Exception:  # noqa: BLE001 - any unpickling failure means damaged
            ok = False
        if not ok:
            return f"{VECNORMALIZE_FILE} does not hold a VecNormalize"
    if replay_buffer:
        rb = path / "replay_buffer.pkl"
        if not rb.is_file() or rb.stat().st_size == 0:
            return "replay_buffer.pkl is missing or empty"
    return None


@dataclasses.dataclass
class FoundCheckpoint:
    """Result of :func:`find_checkpoint`.

    Attributes:
        path: The newest intact checkpoint (None: the run has no checkpoint directory).
        state: Its ``state.json``.
        damaged: Newer checkpoint directories that failed the checks, with the reason.
        notes: Lines to tell the user (fallbacks, a missing or stray ``latest.json``).
    """

    path: Path | None
    state: dict[str, Any] | None
    damaged: list[tuple[Path, str]]
    notes: list[str]


def find_checkpoint(ckpt_dir: Path, run_id: str | None = None, normalize: bool = False,
                    replay_buffer: bool = False) -> FoundCheckpoint:
    """The newest intact checkpoint of a run, found by scanning ``ckpt_dir``.

    ``latest.json`` is only a pointer: a missing or unreadable one, or one pointing outside
    ``ckpt_dir`` (into another run), changes nothing but a note. Checkpoints are tried from
    the newest step down with :func:`checkpoint_problem`; each damaged one is reported.

    Raises:
        ValueError: checkpoint directories exist but none is intact (the message lists why).
    """
    ckpt_dir = Path(ckpt_dir)
    notes: list[str] = []
    pointer = ckpt_dir / LATEST_FILE
    dirs = sorted((p for p in ckpt_dir.glob("step_*") if CHECKPOINT_NAME.fullmatch(p.name)),
                  key=lambda p: p.name, reverse=True) if ckpt_dir.is_dir() else []
    if dirs:
        try:
            target = json.loads(pointer.read_text()).get("path")
        except FileNotFoundError:
            notes.append(f"{pointer} is missing; the checkpoints were scanned instead")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            notes.append(f"{pointer} cannot be read; the checkpoints were scanned instead")
        else:
            if not (isinstance(target, str) and CHECKPOINT_NAME.fullmatch(target)):
                notes.append(f"{pointer} points outside this run's checkpoints ({target!r}); "
                             f"ignored")
    damaged: list[tuple[Path, str]] = []
    for path in dirs:
        problem = checkpoint_problem(path, run_id, normalize, replay_buffer)
        if problem is None:
            state = json.loads((path / "state.json").read_text())
            for bad, why in damaged:
                notes.append(f"checkpoint {bad.name} is damaged ({why}); resuming from the "
                             f"older {path.name}")
            return FoundCheckpoint(path, state, damaged, notes)
        damaged.append((path, problem))
    if damaged:
        raise ValueError(f"no intact checkpoint in {ckpt_dir}: " + "; ".join(
            f"{p.name}: {why}" for p, why in damaged))
    return FoundCheckpoint(None, None, [], notes)


def set_aside(paths: Sequence[Path]) -> list[Path]:
    """Rename damaged checkpoint directories to ``damaged_step_<N>`` (kept for inspection,
    out of the way of new checkpoints and their rotation); return the new paths."""
    moved = []
    for p in paths:
        dest = p.with_name(DAMAGED_PREFIX + p.name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(p, dest)
        moved.append(dest)
    return moved


class StopOnSignal(BaseCallback):
    """Turns SIGINT / SIGTERM into a clean stop of ``learn`` (the caller then checkpoints).

    The handlers are installed for the duration of training and restored afterwards;
    ``interrupted`` tells the caller whether training stopped early.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        super().__init__(0)
        self.signals = tuple(signals)
        self.interrupted: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.interrupted is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.interrupted = signum

    def _on_training_start(self) -> None:
        for s in self.signals:
            self._old[s] = signal.signal(s, self._handler)

    def _on_training_end(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _on_step(self) -> bool:
        return self.interrupted is None
