"""Paired evaluation of dispatch policies: rollouts, the oracle bound, summaries, tables, plots.

Every policy runs on the same evaluation seeds (derived from a root seed), so differences are
paired. ``oracle`` is the hindsight LP bound (``agents.oracle``), reported as its optimum (one
LP per episode). Every other policy runs its episodes side by side in the native vector env,
with exactly the per-episode results of a single-env loop. The episodes are drawn once per
chunk of seeds and shared by all policies (:func:`evaluate_chunk`); with ``workers`` (default
one per CPU on Linux) the chunks run in worker processes, with the same results.
:func:`run_evaluation` writes ``DIR/episodes.csv`` (one row per policy and episode),
``DIR/summary.json`` and PNG plots. The command line is ``evaluate.py``. Library use::

    from agents.evaluation import run_evaluation, format_table
    summary = run_evaluation("lrm/Critical-v0", ["mean_matching", "ppo:runs/x/model.zip"], 10, 0)
    print(format_table(summary))
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the lrm/* ids)
from agents import POLICIES, is_model_spec, make_policy
from agents.base import Heuristic
from agents.cli import (
    UsageError,
    check_out_dir,
    watch_parent,
)
from agents.files import atomic_savefig, atomic_write_text, json_clean, pyplot, write_csv
from agents.heuristics import HEURISTICS, MixtureHeuristic
from agents.oracle import episode_bounds
from agents.rollout import make_vector_env, rollout_episodes, rollout_from_reset
from envs.actions import serve_action

#: Per-episode metrics, in table order: (key, column title, digits).
METRICS: tuple[tuple[str, str, int], ...] = (
    ("reward", "reward", 2),
    ("aux_kwh", "aux kWh", 4),
    ("waste_kwh", "wasted kWh", 4),
    ("leftover_kwh", "leftover kWh", 4),
    ("accuracy", "accuracy", 3),
)

#: Further per-episode metrics kept in the summary (not in the printed table).
EXTRA_METRICS = ("unused_kwh", "value_correct", "demand_kwh", "harvest_kwh")

#: Policies used to normalise the score: 0 = random, 1 = oracle.
SCORE_FLOOR, SCORE_CEILING = "random", "oracle"

#: Largest number of episodes of one policy run side by side by :func:`batched_rollouts`
#: (memory: about 0.25 MB per episode with the default config).
EVAL_BATCH = 256


# --------------------------------------------------------------------------- statistics
def resolve_seed(seed: int) -> int:
    """A negative seed means: draw one from OS entropy (it is recorded in the summary)."""
    if not isinstance(seed, (int, np.integer)):
        raise UsageError(f"--seed must be an integer, got {seed!r}")
    if seed < 0:
        return int(np.random.SeedSequence().entropy % (2**31))
    return int(seed)


def evaluation_seeds(seed: int, episodes: int) -> list[int]:
    """Episode seeds derived from ``seed`` (the same for every policy: paired comparisons).

    They are 32-bit draws of ``SeedSequence(seed)``, so they practically never coincide with
    the small integers used as training seeds.
    """
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(episodes, np.uint32)]


def mean_ci(x: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean and Student-t confidence interval of the mean (half-width NaN for n < 2)."""
    # scipy.special.stdtrit is the Student-t quantile scipy.stats.t.ppf evaluates (the same
    # bits) without importing scipy.stats (about 0.3 s).
    from scipy.special import stdtrit

    a = np.asarray(x, dtype=np.float64)
    n = a.size
    mean = float(a.mean()) if n else math.nan
    if n < 2:
        half = math.nan
    else:
        half = float(stdtrit(n - 1, 0.5 + level / 2) * a.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "n": n}


# --------------------------------------------------------------------------- rollouts
def rollout(env_id: str, policy: Any, seed: int, env_kwargs: dict | None = None,
            env: gym.Env | None = None, record: bool = False) -> dict[str, Any]:
    """Run one episode of ``policy`` (SB3 ``predict`` protocol, deterministic=True).

    Args:
        env_id: Registered id.
        policy: A policy object with ``predict``.
        seed: Episode seed (``env.reset(seed=seed)``; a heuristic's generator is reseeded too).
        env_kwargs: Overrides passed to ``gym.make``.
        env: An env to reuse (made from ``env_id`` and ``env_kwargs`` if None).
        record: Also return per-slot ``harvest``, ``demand``, ``storage`` arrays [kWh].

    Returns:
        Totals: reward, aux_kwh, waste_kwh, leftover_kwh, value_correct, correct, arrived,
        accuracy, harvest_kwh, demand_kwh (and the trajectories if ``record``).
    """
    env = env if env is not None else gym.make(env_id, **(env_kwargs or {}))
    if hasattr(policy, "seed"):
        policy.seed(seed)
    obs, info = env.reset(seed=seed)
    tot = dict.fromkeys(("reward", "aux_kwh", "waste_kwh", "leftover_kwh", "value_correct",
                         "harvest_kwh", "demand_kwh"), 0.0)
    correct = arrived = 0
    traj: dict[str, list[float]] = {"harvest": [], "demand": [], "storage": []}
    state, start, done = None, np.array([True]), False
    while not done:
        action, state = policy.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        tot["reward"] += float(reward)
        terms = info["reward_terms"]
        tot["aux_kwh"] += terms["aux_kwh"]
        tot["waste_kwh"] += terms["waste_kwh"]
        tot["leftover_kwh"] += terms["leftover_kwh"]
        tot["value_correct"] += terms["value_correct"]
        tot["harvest_kwh"] += info["harvest_kwh"]
        tot["demand_kwh"] += info["demand_kwh"]
        correct += int(info["correct"])
        arrived += int(info["arrived"])
        if record:
            traj["harvest"].append(info["harvest_kwh"])
            traj["demand"].append(info["demand_kwh"])
            traj["storage"].append(info["storage_kwh"])
        start, done = np.array([False]), bool(terminated or truncated)
    out: dict[str, Any] = {**tot, "correct": correct, "arrived": arrived,
                           "accuracy": correct / arrived if arrived else math.nan}
    if record:
        out.update({k: np.asarray(v) for k, v in traj.items()})
    return out


def _owner(cls: type, attr: str) -> type | None:
    """The class in ``cls``'s MRO that defines ``attr`` (None if none does)."""
    return next((c for c in cls.__mro__ if attr in vars(c)), None)


class _PerEpisodeGenerators:
    """Batched ``predict`` of a :class:`Heuristic` that gives row k its own generator.

    Row k acts with ``policy.act(obs[k])`` drawing from the generator ``policy.seed(seeds[k])``
    creates, so each episode sees exactly the draws of a single-env :func:`rollout` of its
    seed (which reseeds the policy per episode). Valid for heuristics whose action depends on
    the observation and ``self.rng`` only (every registered heuristic). A rule may define
    ``act_rows(observations, rngs)``, the actions of all rows at once with those draws.
    """

    def __init__(self, policy: Heuristic, seeds: Sequence[int]) -> None:
        self.policy = policy
        # A continuous mixture rule's action is serve_action(mixture), an elementwise map per
        # row (the same values for a batch as for one row): convert all rows in one call.
        self._mixture_rows = (isinstance(policy, MixtureHeuristic) and not policy.discrete
                              and type(policy).act is MixtureHeuristic.act)
        # A static rule (one fixed mixture, declared where its mixture is defined): the same
        # action for every row, converted once.
        self._static_rows = (self._mixture_rows and getattr(policy, "static", False)
                             and _owner(type(policy), "static") is _owner(type(policy),
                                                                          "mixture"))
        # A rule's own act_rows (act of every row with its generator), unless a subclass
        # changed act without it.
        self._act_rows = (policy.act_rows if _owner(type(policy), "act_rows")
                          is _owner(type(policy), "act") else None)
        self.rngs = []
        for s in seeds:
            policy.seed(s)
            self.rngs.append(policy.rng)

    def predict(self, observation: np.ndarray, state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        p = self.policy
        if episode_start is not None and np.any(episode_start):
            p.reset()
        batch = getattr(p, "mixture_batch", None)
        if batch is not None and not getattr(p, "discrete", True):
            mixtures_b = batch(np.asarray(observation))
            if mixtures_b is not None:  # a rule with a vectorised form (no random draws)
                return serve_action(p.config, mixtures_b), state
        if self._act_rows is not None:
            return self._act_rows(np.asarray(observation), self.rngs), state
        if self._static_rows:  # serve_action is elementwise per row: convert one row
            action = serve_action(p.config, p.mixture(observation[0])[None])
            return np.repeat(action, len(observation), axis=0), state
        if self._mixture_rows:  # act = serve_action(mixture): convert the batch at once
            mixtures = []
            for obs, rng in zip(observation, self.rngs):
                p.rng = rng  # a rule's mixture may draw too
                mixtures.append(p.mixture(obs))
            return serve_action(p.config, np.stack(mixtures)), state
        actions = []
        for obs, rng in zip(observation, self.rngs):
            p.rng = rng
            actions.append(p.act(obs))
        return np.stack(actions), state


def batched_rollouts(env_id: str, policy: Any, seeds: Sequence[int],
                     env_kwargs: dict | None = None, record: bool = False,
                     max_batch: int = EVAL_BATCH, progress: Any = None) -> list[dict[str, Any]]:
    """:func:`rollout` of every seed, run side by side in the native vector env.

    Gives the results of ``[rollout(env_id, policy, s, env_kwargs) for s in seeds]``: bit for
    bit for heuristics (deterministic or randomised: each episode draws from the generator
    its seed gives, see :class:`_PerEpisodeGenerators`); for SB3 models the batched forward
    pass can round differently from a one-observation pass in the last bits of an action.

    Args:
        env_id: Registered ``lrm/*`` id.
        policy: A :class:`Heuristic`, or any object with SB3's ``predict`` taking a batch.
        seeds: Episode seeds.
        env_kwargs: Overrides passed to ``gym.make``.
        record: Also return the first episode's per-slot ``harvest``, ``demand``, ``storage``.
        max_batch: Largest number of episodes run at once.
        progress: Object with ``update(n)`` (a tqdm bar), told after each batch.

    Returns:
        One dict per seed with the keys of :func:`rollout`.
    """
    seeds = [int(s) for s in seeds]
    rows: list[dict[str, Any]] = []
    for lo in range(0, len(seeds), max_batch):
        chunk = seeds[lo:lo + max_batch]
        pol = _PerEpisodeGenerators(policy, chunk) if isinstance(policy, Heuristic) else policy
        rec = record and lo == 0
        res = rollout_episodes(pol, env_id, chunk, deterministic=True, max_batch=len(chunk),
                               env_kwargs=env_kwargs, record_first=rec)
        rows += _episode_rows(res, rec)
        if progress is not None:
            progress.update(len(chunk))
    return rows


def _episode_rows(res: dict[str, np.ndarray], record: bool) -> list[dict[str, Any]]:
    """Per-episode dicts (keys of :func:`rollout`) from ``rollout_episodes`` totals."""
    rows = []
    for k in range(len(res["seed"])):
        correct, arrived = int(res["correct"][k]), int(res["arrived"][k])
        r: dict[str, Any] = {
            "reward": float(res["return"][k]),
            **{key: float(res[f"reward_terms/{key}"][k])
               for key in ("aux_kwh", "waste_kwh", "leftover_kwh", "value_correct")},
            "harvest_kwh": float(res["harvest_kwh"][k]),
            "demand_kwh": float(res["demand_kwh"][k]),
            "correct": correct, "arrived": arrived,
            "accuracy": correct / arrived if arrived else math.nan}
        if record and k == 0:
            r.update(harvest=res["trace/harvest_kwh"], demand=res["trace/demand_kwh"],
                     storage=res["trace/storage_kwh"])
        rows.append(r)
    return rows


def evaluate_chunk(env_id: str, policies: Sequence[tuple[str, Any]], seeds: Sequence[int],
                   seed: int, env_kwargs: dict | None = None, record: Sequence[str] = (),
                   progress: Any = None) -> dict[str, list[dict[str, Any]]]:
    """Every policy on one chunk of episodes, all from one batched reset: a job of
    :func:`run_evaluation`.

    The chunk's episodes are drawn once, by one reset of the native vector env (copy k holds
    exactly the episode of a single env reset with ``seeds[k]``). The ``oracle`` bound reads
    them from it (``agents.oracle.episode_bounds``: the value-curve LP without a queue, else
    the queue LP per episode in a single env). Every other
    policy runs its episodes side by side in a copy of the reset env (as
    :func:`batched_rollouts`, the same numbers). A pure function of its arguments, so a job
    gives the same rows in this process or in a worker process.

    Args:
        env_id: Registered id.
        policies: (name, policy) pairs; the policy object may be None (built here from
            ``seed``; ``oracle`` needs none).
        seeds: Episode seeds of the chunk (at most about ``EVAL_BATCH``: memory).
        seed: Root seed of the evaluation (seeds the policies built here).
        env_kwargs: Overrides passed to ``gym.make``.
        record: Names whose first episode's per-slot ``harvest``, ``demand`` and ``storage``
            are returned too.
        progress: Object with ``update(n)`` (a tqdm bar).

    Returns:
        Per name, one dict per seed with the keys of :func:`rollout`.
    """
    seeds = [int(s) for s in seeds]
    env_kwargs = dict(env_kwargs or {})
    env = gym.make(env_id, **env_kwargs)
    venv = make_vector_env(env_id, len(seeds), env_kwargs)
    obs, _ = venv.reset(seed=seeds)
    # The oracle only reads the reset episodes: solve it first, then step copies.
    todo = sorted(policies, key=lambda item: item[0] != "oracle")
    out: dict[str, list[dict[str, Any]]] = {}
    for i, (name, policy) in enumerate(todo):
        rec = name in record
        if name == "oracle":
            out[name] = episode_bounds(venv.core, env, seeds, rec, progress)
            continue
        if policy is None:
            policy = make_policy(name, env, seed=seed)
        pol = _PerEpisodeGenerators(policy, seeds) if isinstance(policy, Heuristic) else policy
        run = venv if i == len(todo) - 1 else copy.deepcopy(venv)  # the last one steps venv
        res = rollout_from_reset(pol, run, obs.copy(), seeds, deterministic=True,
                                 record_first=rec)
        out[name] = _episode_rows(res, rec)
        if progress is not None:
            progress.update(len(seeds))
    return out


def resolve_workers(workers: int, n_jobs: int) -> int:
    """Number of processes :func:`run_evaluation` uses for ``n_jobs`` jobs.

    Args:
        workers: Requested number (>= 0); 0 means one per CPU available to this process on
            Linux (workers are forked there), else 1; also 1 when torch is already loaded
            (a fork of a process whose torch thread pools have run can hang).
        n_jobs: Number of jobs (no more workers than that).

    Raises:
        UsageError: ``workers`` is not an integer >= 0.
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise UsageError(f"--workers must be an integer >= 0 (0: one per CPU), got {workers!r}")
    if workers == 0:
        if not _forks() or "torch" in sys.modules:
            return 1
        workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    return int(max(1, min(workers, n_jobs)))


@contextlib.contextmanager
def _process_pool(workers: int, progress_queue: Any = None) -> Any:
    """A pool of ``workers`` processes, forked where possible (they inherit the imports);
    their jobs report progress to ``progress_queue`` (see :func:`_chunk_job`).

    The workers die with this process (:func:`agents.cli.watch_parent`: also when it is
    killed outright) and ignore Ctrl-C. If the block ends with an exception (an interrupt, a
    failed job), the workers are killed at once instead of finishing their jobs.
    """
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                               initializer=_init_worker, initargs=(os.getpid(), progress_queue))
    try:
        yield pool
    except BaseException:
        _kill_pool(pool)
        raise
    pool.shutdown(wait=True)


def _kill_pool(pool: Any, timeout: float = 5.0) -> None:
    """Kill the workers of a ``ProcessPoolExecutor`` and drop its pending jobs."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    if hasattr(pool, "kill_workers"):  # Python 3.14
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            pool.kill_workers()
    for proc in procs:
        with contextlib.suppress(OSError, ValueError):
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            proc.join(max(0.0, deadline - time.monotonic()))


def _forks() -> bool:
    """Whether workers are forked (Linux; elsewhere they start fresh and import again)."""
    import multiprocessing

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _mp_context() -> Any:
    """The multiprocessing context: fork on Linux, else the platform's default."""
    import multiprocessing

    return multiprocessing.get_context("fork" if _forks() else None)


class _QueueProgress:
    """``update(n)`` sent to the parent's progress bar through a queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def update(self, n: int = 1) -> None:
        self.queue.put(n)


#: Progress reporter of a worker process (set by the pool's initializer).
_WORKER_PROGRESS: _QueueProgress | None = None


def _init_worker(parent_pid: int, queue: Any) -> None:
    """Initializer of a worker: die with the parent, report progress to ``queue``."""
    global _WORKER_PROGRESS
    watch_parent(parent_pid)
    _WORKER_PROGRESS = _QueueProgress(queue) if queue is not None else None


def _chunk_job(*args: Any) -> dict[str, list[dict[str, Any]]]:
    """:func:`evaluate_chunk` in a worker, reporting progress to the parent."""
    return evaluate_chunk(*args, progress=_WORKER_PROGRESS)


# --------------------------------------------------------------------------- validation
def check_env_id(env_id: str) -> None:
    """Raise UsageError unless ``env_id`` is a registered fleet env (``lrm/*``)."""
    if env_id not in gym.registry or not env_id.startswith("lrm/"):
        known = sorted(i for i in gym.registry if i.startswith("lrm/"))
        what = "not a fleet env id" if env_id in gym.registry else "unknown env id"
        raise UsageError(f"--env: {what} {env_id!r}; known: {', '.join(known)}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def make_checked_env(env_id: str, env_kwargs: dict | None = None) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, with a failure as a one-line UsageError.

    A missing or malformed data file (``OSError``, :class:`envs.traces.TraceError`) is
    reported against ``--env`` with the file's name; a refused config against
    ``--env-kwarg`` when overrides were given, else against ``--env``.
    """
    from envs.traces import TraceError

    env_kwargs = dict(env_kwargs or {})
    try:
        return gym.make(env_id, **env_kwargs)
    except (TraceError, OSError) as exc:
        raise UsageError(f"--env {env_id}: {_one_line(exc)}") from None
    except (TypeError, ValueError) as exc:
        where = "--env-kwarg" if env_kwargs else f"--env {env_id}"
        raise UsageError(f"{where}: {_one_line(exc)}") from None


def check_policy_name(name: str) -> None:
    """Raise UsageError unless ``name`` is a registered policy or ALGO:PATH of a readable
    saved SB3 model."""
    if is_model_spec(name):
        from agents.sb3 import ALGOS, check_model_zip

        algo, path = name.split(":", 1)
        if algo.lower() not in ALGOS:
            raise UsageError(f"--policies: unknown algorithm {algo!r} in {name!r}; "
                             f"known: {', '.join(sorted(ALGOS))}")
        p = Path(path)
        if p.is_dir():
            p = p / "model.zip"
        if not p.is_file():
            raise UsageError(f"--policies: model file not found: {p}")
        try:
            check_model_zip(p)
        except ValueError as exc:
            raise UsageError(f"--policies: {exc}") from None
        return
    if name not in POLICIES:
        raise UsageError(f"--policies: unknown policy {name!r}; known: "
                         f"{', '.join(sorted(POLICIES))}, or ALGO:PATH")


# --------------------------------------------------------------------------- evaluation
def run_evaluation(env_id: str, policies: list[str], episodes: int, seed: int,
                   out_dir: str | os.PathLike | None = None, env_kwargs: dict | None = None,
                   progress: bool = True, plots: bool = True, workers: int = 1,
                   ray_address: str | None = None) -> dict:
    """Evaluate ``policies`` on ``episodes`` paired episodes of ``env_id``.

    The episodes are split into chunks (one per worker, at most ``EVAL_BATCH`` episodes
    each); a job (:func:`evaluate_chunk`) draws a chunk's episodes once and runs every
    policy on them. Jobs run here or spread over ``workers`` processes, then the plots; a job
    is a pure function of its arguments, so the results do not depend on ``workers``.

    Args:
        env_id: Registered id (e.g. ``lrm/Critical-v0``).
        policies: Names: keys of ``agents.POLICIES`` or ``ALGO:PATH`` of saved SB3 models.
        episodes: Number of episodes (>= 1); their seeds derive from ``seed``.
        seed: Root seed of the evaluation (negative: drawn at random and recorded).
        out_dir: If given, write ``episodes.csv``, ``summary.json`` and PNG plots there.
        env_kwargs: ``gym.make`` overrides (any ``FleetConfig`` field).
        progress: Show a tqdm progress bar.
        plots: Write the PNG plots (with ``out_dir``).
        workers: Processes to use (see :func:`resolve_workers`; 0 = one per CPU on Linux).
            1 runs everything in this process.
        ray_address: Run the jobs as Ray tasks on this cluster instead (``auto``,
            ``ray://HOST:10001``, or ``local`` for a Ray started here), one chunk per CPU
            of the cluster (:class:`agents.ray_pool.RayPool`); ``workers`` is then unused.

    Returns:
        The summary (JSON-serialisable): per policy, mean and 95% CI of each metric, the
        normalised score (0 = random, 1 = oracle bound) and the paired reward difference to
        the best heuristic.
    """
    check_env_id(env_id)
    if not policies:
        raise UsageError("--policies: give at least one policy")
    for name in policies:
        check_policy_name(name)
    if not isinstance(episodes, int) or episodes < 1:
        raise UsageError(f"--episodes must be an integer >= 1, got {episodes!r}")
    seed = resolve_seed(seed)
    env_kwargs = dict(env_kwargs or {})
    env = make_checked_env(env_id, env_kwargs)
    if out_dir is not None:
        check_out_dir(out_dir)
    seeds = evaluation_seeds(seed, episodes)
    names = list(dict.fromkeys(policies))
    refs = [r for r in (SCORE_FLOOR, SCORE_CEILING) if r not in names]
    ray_pool = None
    if ray_address is not None:
        from agents.ray_pool import RayPool

        ray_pool = RayPool(ray_address)
        n_workers = min(ray_pool.cpus, len(seeds))
    else:
        n_workers = resolve_workers(workers, len(seeds))
    remote = n_workers > 1 or ray_pool is not None
    n_chunks = max(n_workers, math.ceil(len(seeds) / EVAL_BATCH))
    size = math.ceil(len(seeds) / n_chunks)
    chunks = [seeds[lo:lo + size] for lo in range(0, len(seeds), size)]
    n_workers = min(n_workers, len(chunks))
    t0 = time.perf_counter()
    # Heuristics are built once here (a worker gets a pickled copy); saved SB3 models are
    # loaded in each job when the jobs run in workers.
    policy_objs = [(n, None if n == "oracle" or (remote and is_model_spec(n))
                    else make_policy(n, env, seed=seed)) for n in names + refs]
    with contextlib.ExitStack() as stack:
        if ray_pool is not None:
            pool, queue = stack.enter_context(ray_pool), None
        elif n_workers > 1 and plots and out_dir is not None:
            pyplot()  # imported once, before the workers fork (they draw the figures)
        if ray_pool is None:
            queue = _mp_context().SimpleQueue() if n_workers > 1 and progress else None
            pool = stack.enter_context(_process_pool(n_workers, queue)) if n_workers > 1 \
                else None
        jobs = [(policy_objs, chunk, names if k == 0 else ()) for k, chunk in enumerate(chunks)]
        outputs = _run_jobs(pool, jobs, env_id, seed, env_kwargs, progress,
                            progress_queue=queue)
        results: dict[str, list[dict[str, Any]]] = {}
        traces: dict[str, dict[str, np.ndarray]] = {}
        for name in names + refs:
            episodes_out = [r for out in outputs for r in out[name]]
            rows = []
            for k, (s, r) in enumerate(zip(seeds, episodes_out)):
                if k == 0 and name in names:
                    traces[name] = {key: r.pop(key) for key in ("harvest", "demand", "storage")}
                r["unused_kwh"] = r["waste_kwh"] + r["leftover_kwh"]
                rows.append({"policy": name, "episode": k, "seed": s, **r})
            results[name] = rows
        elapsed = time.perf_counter() - t0
        summary = summarise(env_id, env_kwargs, names, seeds, results, seed)
        summary["elapsed_s"] = elapsed
        if out_dir is not None:
            out = Path(out_dir)
            ep_rows = [{"env_id": env_id, **{k: v for k, v in row.items()}}
                       for name in names for row in results[name]]
            write_csv(out / "episodes.csv", ep_rows)
            atomic_write_text(out / "summary.json",
                              json.dumps(json_clean(summary), indent=2) + "\n")
            if plots:
                plot_jobs = [(plot_episode, (out / "episode.png", env_id, traces)),
                             (plot_costs, (out / "costs.png", summary))]
                if pool is None or ray_pool is not None:  # files are written here
                    for fn, args in plot_jobs:
                        fn(*args)
                else:  # the two figures side by side
                    for fut in [pool.submit(fn, *args) for fn, args in plot_jobs]:
                        fut.result()
    return json_clean(summary)


def _run_jobs(pool: Any, jobs: list[tuple[list, list[int], Sequence[str]]], env_id: str,
              seed: int, env_kwargs: dict, progress: bool,
              progress_queue: Any = None) -> list[dict[str, list[dict[str, Any]]]]:
    """Outputs of :func:`evaluate_chunk` for every job (policies, seeds, record), in job
    order: here, or in ``pool`` (whose workers report progress to ``progress_queue``)."""
    from tqdm.auto import tqdm

    total = sum(len(policies) * len(chunk) for policies, chunk, _ in jobs)
    if pool is None:
        with tqdm(total=total, desc=env_id, disable=not progress, unit="ep", leave=False) as bar:
            return [evaluate_chunk(env_id, policies, chunk, seed, env_kwargs, rec, progress=bar)
                    for policies, chunk, rec in jobs]
    from concurrent.futures import FIRST_EXCEPTION, wait

    # Submitting forks the workers: before the progress bar starts its monitor thread.
    futures = [pool.submit(_chunk_job, env_id, policies, chunk, seed, env_kwargs, rec)
               for policies, chunk, rec in jobs]
    with tqdm(total=total, desc=env_id, disable=not progress, unit="ep", leave=False) as bar:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
            for fut in done:
                fut.result()  # a failed job raises here
            while progress_queue is not None and not progress_queue.empty():
                bar.update(progress_queue.get())
    return [fut.result() for fut in futures]


def summarise(env_id: str, env_kwargs: dict, names: list[str], seeds: list[int],
              results: dict[str, list[dict[str, Any]]], seed: int) -> dict:
    """Summary statistics of per-episode results (see :func:`run_evaluation`)."""
    rewards = {n: np.array([r["reward"] for r in rows]) for n, rows in results.items()}
    lo, hi = rewards[SCORE_FLOOR].mean(), rewards[SCORE_CEILING].mean()
    heur = [n for n in names if n in HEURISTICS]
    best = max(heur, key=lambda n: rewards[n].mean()) if heur else None
    per_policy: dict[str, Any] = {}
    for n in names:
        keys = [key for key, _, _ in METRICS] + list(EXTRA_METRICS)
        entry = {key: mean_ci([r[key] for r in results[n]]) for key in keys}
        score = (rewards[n] - lo) / (hi - lo) if hi != lo else np.full(len(seeds), math.nan)
        entry["score"] = mean_ci(score)
        entry["diff_vs_best"] = mean_ci(rewards[n] - rewards[best]) if best else None
        entry["kind"] = ("bound" if n == "oracle" else "model" if is_model_spec(n)
                         else "heuristic")
        per_policy[n] = entry
    return {"env_id": env_id, "env_kwargs": env_kwargs, "seed": seed, "episodes": len(seeds),
            "seeds": seeds, "best_heuristic": best,
            "score_reference": {"random_reward": float(lo), "oracle_reward": float(hi)},
            "policies": per_policy}


def _fmt(ci: dict | None, digits: int) -> str:
    if ci is None or ci.get("mean") is None:
        return "n/a"
    m, h = ci["mean"], ci.get("half_width")
    if h is None or (isinstance(h, float) and math.isnan(h)):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def format_table(summary: dict) -> str:
    """Markdown table of a summary: mean ± 95% CI half-width per metric and policy."""
    best = summary.get("best_heuristic")
    head = ["policy"] + [title for _, title, _ in METRICS] + ["score"]
    if best is not None:
        head.append(f"Δ reward vs {best}")
    lines = [f"**{summary['env_id']}**, {summary['episodes']} paired episodes, seed "
             f"{summary['seed']} (mean ± 95% CI; score 0 = random, 1 = oracle bound)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in summary["policies"].items():
        label = f"{name} (bound)" if e.get("kind") == "bound" else name
        cells = [label] + [_fmt(e[key], d) for key, _, d in METRICS]
        cells.append(_fmt(e["score"], 3))
        if best is not None:
            cells.append("—" if name == best else _fmt(e["diff_vs_best"], 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def plot_episode(path: str | os.PathLike, env_id: str,
                 traces: dict[str, dict[str, np.ndarray]]) -> None:
    """Harvest vs demand (top) and store level (bottom) over the first episode, per policy.

    Per-slot values are drawn thin; the thick lines are hourly (12-slot) moving averages.
    """
    plt = pyplot()
    names = list(traces)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    ratios: list[float] = []
    for r in range(rows):
        ratios += [2.0, 1.0] + ([0.55] if r < rows - 1 else [])
    # Only the panels drawn are created (spacer rows and empty cells stay blank), and the
    # titles are plain annotations: about a quarter less time than subplots + set_title.
    fig = plt.figure(figsize=(4.2 * cols, 3.3 * rows))
    grid = fig.add_gridspec(len(ratios), cols, height_ratios=ratios, hspace=0.08, wspace=0.28)
    kernel = np.ones(12) / 12.0
    for k, name in enumerate(names):
        r, c = 3 * (k // cols), k % cols
        ax, ax2 = fig.add_subplot(grid[r, c]), fig.add_subplot(grid[r + 1, c])
        tr = traces[name]
        t = np.arange(1, tr["harvest"].size + 1)
        for key, color in (("harvest", "tab:green"), ("demand", "tab:red")):
            y = tr[key] * 1e3
            ax.plot(t, y, color=color, lw=0.4, alpha=0.35)
            if y.size >= 12:
                ax.plot(t[11:], np.convolve(y, kernel, mode="valid"), color=color, lw=1.4,
                        label=f"{key} (hourly mean)")
        ax.annotate(name, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 3),
                    textcoords="offset points", ha="center", va="baseline", fontsize=9)
        ax.set_ylabel("Wh / slot", fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=False)
        if k == 0:
            ax.legend(fontsize=6, loc="upper right")
        ax2.fill_between(t, tr["storage"] * 1e3, color="tab:blue", alpha=0.5, lw=0)
        ax2.set_xlim(ax.get_xlim())
        ax2.set_ylabel("store Wh", fontsize=8)
        ax2.tick_params(labelsize=7)
        ax2.set_xlabel("slot", fontsize=8, labelpad=1)
    fig.suptitle(f"{env_id}: first evaluation episode (oracle: its LP plan)", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.07)
    atomic_savefig(fig, path, dpi=72)
    plt.close(fig)


def _tick_label(name: str, width: int = 22) -> str:
    """A policy name short enough for a rotated tick label (a model's path keeps its end)."""
    return name if len(name) <= width else "..." + name[-(width - 3):]


def plot_costs(path: str | os.PathLike, summary: dict) -> None:
    """Bar charts with 95% CI error bars: reward, auxiliary, wasted + leftover, accuracy."""

    plt = pyplot()
    pol = summary["policies"]
    names = list(pol)
    x = np.arange(len(names))
    panels = [("reward", "reward"), ("aux_kwh", "auxiliary kWh"),
              ("unused_kwh", "wasted + leftover kWh"), ("accuracy", "accuracy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        means = np.array([pol[n][key]["mean"] for n in names], dtype=float)
        errs = np.array([pol[n][key]["half_width"] or 0.0 for n in names], dtype=float)
        errs = np.nan_to_num(errs)
        colors = ["tab:gray" if pol[n].get("kind") == "bound" else "tab:blue" for n in names]
        ax.bar(x, means, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels([_tick_label(n) for n in names], rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{summary['env_id']}: mean ± 95% CI over {summary['episodes']} paired "
                 f"episodes (gray: oracle bound)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)
