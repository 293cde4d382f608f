"""Start-up time of the fleet environments: a fresh process's first ``gym.make`` + ``reset`` +
``step``, with an empty numba cache (cold) and with the cache that run left (warm).

Each measurement is a new Python process that imports Gymnasium and the package, makes the
env, resets it and takes one step; it reports its wall-clock time from the start of the
process and its CPU time (user + system). The cold run points ``NUMBA_CACHE_DIR`` at a new
empty directory, so every compiled function is compiled; the warm runs reuse that directory,
so they load the compiled code. Gymnasium's ``CartPole-v1`` is measured the same way as the
reference (it compiles nothing).

Usage: ``python bench/startup.py [--ids lrm/Critical-v0,...] [--warm-runs N]``. Prints a
Markdown table: per id, cold and warm (median of the warm runs) wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IDS = ("lrm/Critical-v0", "lrm/Critical-v1", "lrm/SolarDay-v1", "lrm/R1Trace-v1")

# Run in the child: time from the interpreter's start (time.process_time counts the whole
# process; the wall clock is taken around the child by the parent).
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import gymnasium as gym
if {env_id!r}.startswith("lrm/"):
    import envs  # noqa: F401
env = gym.make({env_id!r})
env.reset(seed=0)
env.step(env.action_space.sample())
print(json.dumps({{"cpu": time.process_time()}}))
"""


def run_once(env_id: str, cache_dir: str) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh process making, resetting and stepping ``env_id``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), env_id=env_id)],
                         env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return wall, json.loads(out.stdout.strip().splitlines()[-1])["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default=",".join(DEFAULT_IDS),
                        help="comma-separated ids (default: %(default)s)")
    parser.add_argument("--warm-runs", type=int, default=3,
                        help="warm runs per id, the median is shown (default 3)")
    args = parser.parse_args()
    if args.warm_runs < 1:
        parser.error(f"--warm-runs must be >= 1, got {args.warm_runs}")
    ids = [x for x in args.ids.split(",") if x]
    load = os.getloadavg()[0]
    print(f"start-up: fresh process, gym.make + reset + step; load average {load:.1f} at "
          f"the start\n")
    print("| id | cold wall s | cold CPU s | warm wall s | warm CPU s |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as ref_dir:
        walls, cpus = zip(*(run_once("CartPole-v1", ref_dir) for _ in range(args.warm_runs)))
        print(f"| `CartPole-v1` (reference, nothing compiled) | | | "
              f"{statistics.median(walls):.2f} | {statistics.median(cpus):.2f} |")
    for env_id in ids:
        with tempfile.TemporaryDirectory() as cache_dir:
            cold_wall, cold_cpu = run_once(env_id, cache_dir)
            warm = [run_once(env_id, cache_dir) for _ in range(args.warm_runs)]
        print(f"| `{env_id}` | {cold_wall:.1f} | {cold_cpu:.1f} | "
              f"{statistics.median(w for w, _ in warm):.2f} | "
              f"{statistics.median(c for _, c in warm):.2f} |")


if __name__ == "__main__":
    main()
