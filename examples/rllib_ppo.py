"""Train RLlib's PPO (new API stack) on a fleet id, with one or more env runners.

Usage (in a virtual environment with ``pip install -e ".[rllib]"``; ``ray[rllib]`` pins its own
gymnasium, so keep it apart from the one with the ``dev`` extra)::

    python examples/rllib_ppo.py --env lrm/WindDay-v0 --env-runners 2 --iterations 20
    python examples/rllib_ppo.py --env all --env-runners 2 --iterations 1 --batch 256

``--env`` takes one id, comma-separated ids or ``all`` (every registered ``lrm/`` id, ``-v0``
and ``-v1``); the ids are trained one after another in one Ray session.

An env runner is a fresh Ray worker process that has not run ``import envs``, so the ids are
not registered there. Two ways to give RLlib the env:

* the ``envs:`` prefix (``--via prefix``): ``gym.make("envs:lrm/WindDay-v0")`` imports the
  module ``envs`` first, which registers the ids;
* a creator registered with ``ray.tune.registry.register_env`` (``--via creator``, the
  default): the function imports ``envs`` itself and is shipped to every runner.

Prints one line per iteration (mean episode return of the runners, timesteps so far) and, per
id, the seconds it took; exits 1 when an id fails (after trying the others).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fleet_env_creator(config: dict):
    """An env of ``config["env_id"]`` with ``config["env_kwargs"]`` (registers the ids)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the lrm/ ids in this worker)

    return gym.make(config["env_id"], **config.get("env_kwargs", {}))


def train(env_id: str, args: argparse.Namespace, env_kwargs: dict, ppo_config) -> None:
    """Build PPO for ``env_id``, train ``args.iterations`` iterations, print one line each."""
    if args.via == "creator":
        env, env_config = "lrm_fleet", {"env_id": env_id, "env_kwargs": env_kwargs}
    else:
        env, env_config = f"envs:{env_id}", env_kwargs
    config = (
        ppo_config()
        .environment(env, env_config=env_config)
        .env_runners(num_env_runners=args.env_runners, num_envs_per_env_runner=1)
        .training(train_batch_size_per_learner=args.batch, minibatch_size=min(256, args.batch),
                  num_epochs=4, lr=3e-4, gamma=0.9)
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    try:
        for i in range(args.iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            steps = runners.get("num_env_steps_sampled_lifetime")
            print(f"{env_id}: iteration {i + 1}: episode_return_mean "
                  f"{runners.get('episode_return_mean', float('nan')):.3f}, timesteps {steps}",
                  flush=True)
    finally:
        algo.stop()


def main(argv: list[str] | None = None) -> int:
    """Train and print one line per iteration."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="lrm/Critical-v0",
                   help="an id, comma-separated ids, or all (every registered id)")
    p.add_argument("--env-runners", type=int, default=1)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--batch", type=int, default=2000, help="train batch size per iteration")
    p.add_argument("--horizon", type=int, default=None, help="episode length override")
    p.add_argument("--via", choices=("creator", "prefix"), default="creator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    args = p.parse_args(argv)

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    import envs

    if args.env == "all":
        ids = list(envs.ENV_IDS)
    else:
        ids = [e.strip() for e in args.env.split(",") if e.strip()]
    env_kwargs = {} if args.horizon is None else {"horizon": args.horizon}
    root = str(Path(__file__).resolve().parent.parent)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    failed = []
    try:
        if args.via == "creator":
            register_env("lrm_fleet", fleet_env_creator)
        for env_id in ids:
            t0 = time.perf_counter()
            try:
                train(env_id, args, env_kwargs, PPOConfig)
            except Exception as exc:  # noqa: BLE001 - report the id and go on with the others
                failed.append(env_id)
                print(f"{env_id}: FAILED {type(exc).__name__}: {exc}", flush=True)
            else:
                print(f"{env_id}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        ray.shutdown()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
