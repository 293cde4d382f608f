"""``--ray-address`` where no Ray cluster answers: every entry point fails in a few seconds.

Without the check, ``ray.init`` waited 24 s (unroutable host) to over 80 s (a port nobody
listens on). Each case here is a port of this machine: one nobody listens on (connection
refused), one that accepts the connection and never answers (what an unroutable host or a
firewall that drops packets looks like), an HTTP server (something else listens), and
``auto`` with no cluster started by ``ray start`` (an empty Ray temp directory).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from agents.cli import UsageError  # noqa: E402
from agents.ray_address import PROBE_TIMEOUT_S, check_ray_address  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: A failing CLI must end within this many seconds: the probe's bound plus the start-up of
#: the script (imports of torch and the project, about 4 s on 2 busy cores).
CLI_BOUND_S = PROBE_TIMEOUT_S + 12


@pytest.fixture
def refused_port():
    """A port of 127.0.0.1 nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port


@pytest.fixture
def silent_port():
    """A port of 127.0.0.1 that accepts TCP connections (the kernel's backlog) and never
    answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def http_port():
    """A port of 127.0.0.1 where an HTTP/1 server answers."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def no_cluster_env(tmp_path, monkeypatch):
    """No ``RAY_ADDRESS`` and a Ray temp directory where no ``ray start`` recorded a
    cluster."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _fails(address: str, *words: str) -> float:
    t0 = time.monotonic()
    with pytest.raises(UsageError) as err:
        check_ray_address(address)
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert msg.startswith(f"--ray-address {address}"), msg
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return elapsed


def test_refused_port_fails_at_once(refused_port):
    assert _fails(f"127.0.0.1:{refused_port}", "connection refused",
                  f'"ray start --head --port {refused_port}"') < 1.0


def test_silent_port_fails_within_the_probe_timeout(silent_port):
    elapsed = _fails(f"127.0.0.1:{silent_port}", "no answer", "check the address")
    assert PROBE_TIMEOUT_S - 0.5 < elapsed < PROBE_TIMEOUT_S + 2.0


def test_other_server_is_not_taken_for_a_ray_head(http_port):
    assert _fails(f"127.0.0.1:{http_port}", "ray start --head") < PROBE_TIMEOUT_S + 2.0


def test_ray_client_address_is_probed(refused_port):
    _fails(f"ray://127.0.0.1:{refused_port}", "connection refused", "Ray Client server")


def test_auto_without_a_cluster_started_by_ray_start(no_cluster_env):
    _fails("auto", "ray_current_cluster", '"ray start --head"')


def test_auto_reads_the_address_ray_start_recorded(no_cluster_env, refused_port):
    tmp = Path(no_cluster_env["RAY_TMPDIR"]) / "ray"
    tmp.mkdir(parents=True)
    (tmp / "ray_current_cluster").write_text(f"127.0.0.1:{refused_port}\n")
    _fails("auto", f"127.0.0.1:{refused_port}", "connection refused")


@pytest.mark.parametrize("address", ["bogus", "host:0", "host:99999", "http://h:1", ":6379"])
def test_malformed_address(address):
    _fails(address, "expected auto, local, HOST:PORT or ray://HOST:PORT")


def test_local_needs_no_check():
    assert check_ray_address(None) is None
    assert check_ray_address("local") is None


# --------------------------------------------------------------------------- the CLIs
def _run_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    return p, time.monotonic() - t0


def _assert_one_line(p: subprocess.CompletedProcess, elapsed: float, address: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert f"--ray-address {address}" in lines[0], lines[0]
    assert "ray start" in lines[0] or "check the address" in lines[0], lines[0]
    assert elapsed < CLI_BOUND_S, f"{elapsed:.1f} s: {lines[0]}"


SHORT_GRID = ["train.py", "--env", "lrm/Critical-v0,lrm/Volatile-v0", "--timesteps", "1000",
              "--eval-freq", "500"]


@pytest.mark.parametrize("kind", ["silent", "auto", "client"])
def test_train_grid_with_unreachable_address(kind, tmp_path, no_cluster_env, silent_port,
                                             refused_port):
    address = {"silent": f"127.0.0.1:{silent_port}", "auto": "auto",
               "client": f"ray://127.0.0.1:{refused_port}"}[kind]
    out = tmp_path / "grid"
    p, elapsed = _run_cli([*SHORT_GRID, "--ray-address", address, "--out", str(out)],
                          no_cluster_env)
    _assert_one_line(p, elapsed, address)
    assert not out.exists()


def test_train_tune_with_unreachable_address(tmp_path, no_cluster_env, silent_port):
    address, out = f"127.0.0.1:{silent_port}", tmp_path / "search"
    p, elapsed = _run_cli(["train.py", "--env", "lrm/Critical-v0", "--tune", "2",
                           "--timesteps", "1000", "--eval-freq", "500", "--ray-address",
                           address, "--out", str(out)], no_cluster_env)
    _assert_one_line(p, elapsed, address)
    assert not out.exists()


def test_evaluate_with_unreachable_address(tmp_path, no_cluster_env, silent_port):
    address, out = f"127.0.0.1:{silent_port}", tmp_path / "eval"
    p, elapsed = _run_cli(["evaluate.py", "--episodes", "2", "--ray-address", address,
                           "--out", str(out)], no_cluster_env)
    _assert_one_line(p, elapsed, address)
    assert not out.exists()


def test_leaderboard_with_unreachable_address(tmp_path, no_cluster_env, refused_port):
    address, out = f"127.0.0.1:{refused_port}", tmp_path / "board"
    p, elapsed = _run_cli(["-m", "agents.leaderboard", str(tmp_path), "--ray-address",
                           address, "--out", str(out)], no_cluster_env)
    _assert_one_line(p, elapsed, address)
    assert not out.exists()
