"""The compiled kernel is cached across processes, also when the package is installed where
the user cannot write (numba then caches in the user-wide cache directory)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import gymnasium as gym
import envs
from envs import kernel
assert envs.__file__.startswith(sys.argv[1]), envs.__file__
env = gym.make("lrm/Critical-v0", horizon=5)
env.reset(seed=0)
env.step(env.action_space.sample())
fns = [kernel.step_bound16, kernel.step_bound32, kernel.observe, kernel.start_episodes]
print(json.dumps({"hits": sum(sum(f.stats.cache_hits.values()) for f in fns),
                  "misses": sum(sum(f.stats.cache_misses.values()) for f in fns),
                  "path": kernel.observe.stats.cache_path}))
"""


def _run(site: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(site)], env=env, cwd=home,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernel_cache_of_a_read_only_install_goes_to_the_user_cache(tmp_path):
    site = tmp_path / "site"
    pkg = site / "envs"
    shutil.copytree(ROOT / "envs", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # The package directory cannot hold numba's in-tree cache: a file where its __pycache__
    # directory would go (holds for any user, root included) and no write permission.
    (pkg / "__pycache__").write_text("")
    for p in [*pkg.rglob("*"), pkg]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    home = tmp_path / "home"
    home.mkdir()
    try:
        first = _run(site, home)
        second = _run(site, home)
    finally:
        for p in [pkg, *pkg.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    user_cache = home / ".cache" / "numba"
    assert first["misses"] > 0  # compiled in the first process
    assert Path(first["path"]).is_relative_to(user_cache)
    assert second["misses"] == 0 and second["hits"] >= 3  # loaded from the cache
    assert any(user_cache.rglob("kernel.step_bound*.nbi"))
