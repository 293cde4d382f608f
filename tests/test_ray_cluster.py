"""A Ray cluster of two nodes on this machine (two raylets, ``ray start --head`` and
``ray start --address``), one CPU each: a 2-trial grid runs one trial on each node and gives
the results of the same grid on a local Ray; ``evaluate.py`` over the cluster gives those of
``--workers 1``.

The nodes get their own temporary directory, ports and authentication token, and are
stopped by their process ids (every process whose command line names the temporary
directory, and their descendants), never with ``ray stop`` (which stops every Ray of the
user), also when the test fails. About a minute and a half on 2 cores: marked slow.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.tune")

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
SHORT = ["--env-kwarg", "horizon=48", "--eval-freq", "500", "--eval-episodes", "2",
         "--test-episodes", "2", "--compare", "random", "cheapest", "--n-envs", "2"]

pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def processes_of(tmp: str) -> list[int]:
    """Pids of the processes whose command line names ``tmp``, and of their descendants."""
    children: dict[int, list[int]] = {}
    roots = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
        if tmp in cmd and int(d.name) != os.getpid():
            roots.append(int(d.name))
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(out)


def stop_cluster(tmp: str) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = processes_of(tmp)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        t0 = time.monotonic()
        while processes_of(tmp) and time.monotonic() - t0 < wait:
            time.sleep(0.2)


@pytest.fixture
def cluster():
    """(GCS address, environment of a driver) of a two-node cluster on this machine."""
    tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths
    token = Path(tmp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_TOKEN_PATH": str(token),
           "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    node_env = {**env, "RAY_AUTH_MODE": "token"}
    p = free_ports(14)
    common = ["--num-cpus", "1", "--temp-dir", tmp, "--disable-usage-stats",
              "--min-worker-port", "0", "--max-worker-port", "0"]

    def node_ports(k: int) -> list[str]:
        a = p[2 + 6 * k:]
        return ["--node-manager-port", str(a[0]), "--object-manager-port", str(a[1]),
                "--dashboard-agent-listen-port", str(a[2]),
                "--dashboard-agent-grpc-port", str(a[3]),
                "--runtime-env-agent-port", str(a[4]), "--metrics-export-port", str(a[5])]

    address = f"127.0.0.1:{p[0]}"
    try:
        for cmd in (["start", "--head", "--port", str(p[0]), "--ray-client-server-port",
                     str(p[1]), "--include-dashboard=false", *common, *node_ports(0)],
                    ["start", "--address", address, *common, *node_ports(1)]):
            r = subprocess.run([RAY, *cmd], env=node_env, capture_output=True, text=True,
                               timeout=180)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield address, env, node_env
    finally:
        stop_cluster(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_grid_and_evaluation_on_a_two_node_cluster(cluster, tmp_path):
    address, env, node_env = cluster
    t0 = time.monotonic()
    while True:  # the autoscaler's status lists a node some seconds after it started
        st = subprocess.run([RAY, "status", "--address", address], env=node_env,
                            capture_output=True, text=True, timeout=60)
        active = st.stdout.split("Active:")[-1].split("Pending:")[0]
        n_nodes = len(re.findall(r"node_[0-9a-f]+", active))
        if n_nodes == 2 or time.monotonic() - t0 > 60:
            break
        time.sleep(2)
    assert n_nodes == 2, st.stdout + st.stderr

    grid = ["train.py", "--env", "lrm/Critical-v0", "--algo", "ppo", "--seed", "3,4",
            "--timesteps", "1000", *SHORT]
    t0 = time.monotonic()
    on = run([*grid, "--ray-address", address, "--out", str(tmp_path / "cluster")], env)
    t_cluster = time.monotonic() - t0
    assert on.returncode == 0, on.stdout[-2000:] + on.stderr[-2000:]
    local_tmp = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # short: Ray's socket paths
    t0 = time.monotonic()
    try:
        loc = run([*grid, "--ray-num-cpus", "2", "--out", str(tmp_path / "local")],
                  {**env, "RAY_TMPDIR": local_tmp})
    finally:
        shutil.rmtree(local_tmp, ignore_errors=True)
    t_local = time.monotonic() - t0
    assert loc.returncode == 0, loc.stdout[-2000:] + loc.stderr[-2000:]
    print(f"grid on the cluster {t_cluster:.1f} s, on a local Ray {t_local:.1f} s")

    nodes = set()
    for seed in (3, 4):
        name = f"lrm_Critical-v0__ppo__seed{seed}"
        a, b = tmp_path / "cluster" / name, tmp_path / "local" / name
        for f in ("config.json", "model.zip", "evaluations.npz", "comparison/summary.json",
                  "trial.json"):
            assert (a / f).exists(), f"{a / f} missing"
        ta, tb = (json.loads((d / "trial.json").read_text()) for d in (a, b))
        nodes.add(ta["node_id"])
        assert (ta["val_return"], ta["test_return"]) == (tb["val_return"], tb["test_return"])
        with np.load(a / "evaluations.npz") as ea, np.load(b / "evaluations.npz") as eb:
            assert np.array_equal(ea["timesteps"], eb["timesteps"])
            assert np.array_equal(ea["results"], eb["results"])
        sa, sb = (json.loads((d / "comparison" / "summary.json").read_text()) for d in (a, b))
        assert [p["reward"] for p in sa["policies"].values()] == \
            [p["reward"] for p in sb["policies"].values()]
    assert len(nodes) == 2 and None not in nodes, nodes  # one trial on each node

    ev = ["evaluate.py", "--env", "lrm/Critical-v0", "--policies", "random,cheapest,oracle",
          "--episodes", "4", "--seed", "5", "--env-kwarg", "horizon=48", "--quiet",
          "--no-plots"]
    r = run([*ev, "--ray-address", address, "--out", str(tmp_path / "ev_cluster")], env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run([*ev, "--workers", "1", "--out", str(tmp_path / "ev_one")], env)
    assert r.returncode == 0, r.stderr[-2000:]
    a = (tmp_path / "ev_cluster" / "episodes.csv").read_text()
    assert len(a.splitlines()) == 1 + 4 * 3
    assert a == (tmp_path / "ev_one" / "episodes.csv").read_text()
