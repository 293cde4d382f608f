"""RLlib's PPO (new API stack) on a fleet id with 2 env runners: examples/rllib_ppo.py.

``ray[rllib]`` pins an older gymnasium, so this check runs in its own virtual environment
and is deselected by default (marker ``rllib``)::

    python -m venv /tmp/venv-rllib && . /tmp/venv-rllib/bin/activate
    pip install torch==2.13.0 && pip install -e ".[rllib]" pytest
    python -m pytest -m rllib tests/test_rllib.py

``test_rllib_ppo_runs_on_every_id`` trains one short iteration on each of the 24 ids (about
6 minutes on 2 busy cores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.rllib


@pytest.mark.parametrize("via", ["creator", "prefix"])
def test_rllib_ppo_runs_on_a_fleet_id_with_two_env_runners(via):
    pytest.importorskip("ray.rllib.algorithms.ppo")
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": tmp, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "rllib_ppo.py"), "--env",
                        "lrm/WindDay-v0", "--env-runners", "2", "--iterations", "2",
                        "--batch", "512", "--horizon", "48", "--via", via, "--num-cpus", "2"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ": iteration " in ln]
    assert len(lines) == 2, r.stdout
    ret = float(re.search(r"episode_return_mean (\S+),", lines[-1]).group(1))
    assert ret == ret  # episodes of 48 steps finished: a mean return exists (not NaN)


def test_rllib_ppo_runs_on_every_id():
    """Every registered id (-v0 and -v1) with its own settings: PPO with 2 env runners samples
    and learns one iteration."""
    pytest.importorskip("ray.rllib.algorithms.ppo")
    import envs

    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "PYTHONPATH": str(ROOT)}
    batch = 256
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "rllib_ppo.py"), "--env", "all",
                        "--env-runners", "2", "--iterations", "1", "--batch", str(batch),
                        "--num-cpus", "2"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(envs.ENV_IDS) == 24
    for env_id in envs.ENV_IDS:
        line = next((ln for ln in r.stdout.splitlines()
                     if ln.startswith(f"{env_id}: iteration 1:")), None)
        assert line is not None, f"{env_id} missing:\n{r.stdout}"
        steps = int(re.search(r"timesteps (\d+)", line).group(1))
        assert steps >= batch, line
