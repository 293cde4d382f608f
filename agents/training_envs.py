"""The environments of a training run: one env, its picklable factory, the training vector
env of each ``--vec-env`` back end, and a throwaway build of the model that checks the
hyperparameters before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.cli import UsageError
from agents.train_config import VEC_ENVS, TrainConfig


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


class EnvFactory:
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
    factory = EnvFactory(env_id, env_kwargs, wrapper)
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
