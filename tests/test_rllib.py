"""RLlib's PPO (new API stack) on a fleet id with 2 env runners: examples/rllib_ppo.py.

``ray[rllib]`` pins an older gymnasium, so this check runs in its own virtual environment
and is deselected by default (marker ``rllib``)::

    python -m venv /tmp/venv-rllib && . /tmp/venv-rllib/bin/activate
    pip install torch==2.13.0 && pip install -e ".[rllib]" pytest
    python -m pytest -m rllib tests/test_rllib.py
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
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("iteration ")]
    assert len(lines) == 2, r.stdout
    ret = float(re.search(r"episode_return_mean (\S+),", lines[-1]).group(1))
    assert ret == ret  # episodes of 48 steps finished: a mean return exists (not NaN)
