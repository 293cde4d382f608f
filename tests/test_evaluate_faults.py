"""evaluate.py under faults: signals to a run with worker processes, and bad input.

Bad input must give one line on stderr and exit code 2 before any evaluation runs, leaving
nothing behind; SIGINT/SIGTERM must stop a run with worker processes within seconds (exit
codes 130/143), and the workers must die with their parent, also when it is SIGKILLed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import evaluate
from tests.helpers import read_only_dir

ROOT = Path(evaluate.__file__).resolve().parent


# --------------------------------------------------------------------------- signals
def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, forks workers")
@pytest.mark.parametrize("signum, code, group", [
    (signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGKILL, -9, False),
    (signal.SIGINT, 130, True),  # Ctrl-C in a terminal: the whole process group gets it
])
def test_signal_stops_the_run_and_its_workers(signum: int, code: int, group: bool,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "evaluate.py", "--episodes", "20000", "--workers", "2", "--quiet",
           "--policies", "random,mean_matching", "--no-plots", "--out", str(out),
           "--env-kwarg", "horizon=288"]
    with open(tmp_path / "stderr", "wb") as err:  # not a pipe: an orphan could hold it open
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=group)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no worker processes within 60 s"
            time.sleep(0.1)
            workers = _children(proc.pid)
        time.sleep(1.0)  # the workers are in their jobs
        assert proc.poll() is None and all(_alive(w) for w in workers)
        t0 = time.monotonic()
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
        assert proc.returncode == code, (tmp_path / "stderr").read_text()
        assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "worker processes outlived their parent"
        if signum != signal.SIGKILL:
            err_lines = (tmp_path / "stderr").read_text().strip().splitlines()
            assert len(err_lines) == 1 and "interrupted" in err_lines[0], err_lines
        # nothing half-written: no results of the interrupted run, no temporary files
        assert not out.exists() or not any(out.iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# --------------------------------------------------------------------------- bad input
def _main(argv: list[str]) -> int:
    try:
        return evaluate.main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _garbage_zip(tmp: Path) -> str:
    p = tmp / "garbage.zip"
    p.write_bytes(b"this is not a zip archive\n" * 10)
    return f"ppo:{p}"


def _zip_without_sb3_data(tmp: Path) -> str:
    p = tmp / "other.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "no model in here")
    return f"ppo:{p}"


@pytest.mark.parametrize("make_policy, needle", [
    (_garbage_zip, "not a zip file"),
    (_zip_without_sb3_data, "not a saved stable-baselines3 model"),
])
def test_unreadable_model_is_one_line(make_policy, needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code = _main(["--policies", f"random,{make_policy(tmp_path)}", "--episodes", "1",
                  "--quiet", "--out", str(out), "--env-kwarg", "horizon=12"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "--policies" in line and needle in line
    assert not out.exists()


def test_damaged_model_zip_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A real model zip with a flipped byte in a member fails its CRC check."""
    good = tmp_path / "m.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("data", '{"policy_class": {}}')
        zf.writestr("policy.pth", b"\0" * 200)
    raw = bytearray(good.read_bytes())
    raw[raw.index(b"\0" * 200) + 100] = 1
    good.write_bytes(bytes(raw))
    assert _main(["--policies", f"ppo:{good}", "--episodes", "1", "--quiet"]) == 2
    assert "CRC" in _one_error_line(capsys)


def test_out_that_is_a_file_is_refused_before_the_run(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "results"
    target.write_text("keep me\n")
    t0 = time.perf_counter()
    code = _main(["--policies", "random,oracle", "--episodes", "50", "--quiet",
                  "--out", str(target), "--workers", "1"])
    assert code == 2 and "--out" in _one_error_line(capsys)
    assert target.read_text() == "keep me\n"
    assert time.perf_counter() - t0 < 5.0  # refused before 50 episodes and 50 LPs ran
    assert _main(["--policies", "random", "--episodes", "1", "--quiet",
                  "--out", str(target / "sub")]) == 2
    assert "not a directory" in _one_error_line(capsys)


def test_read_only_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Permissions do not stop root, so a directory of a read-only kind is used: /sys."""
    probe = read_only_dir()
    code = _main(["--policies", "random", "--episodes", "1", "--quiet",
                  "--out", str(probe / "out")])
    assert code == 2
    line = _one_error_line(capsys)
    assert "--out" in line and "cannot write" in line


def test_env_that_is_not_a_fleet_env_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert _main(["--env", "CartPole-v1", "--episodes", "1", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert "--env" in line and "CartPole-v1" in line and "lrm/Critical-v0" in line


def test_bad_kwarg_for_the_second_env_leaves_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """class_deadlines of three classes fits lrm/Critical-v0, not lrm/R1Trace-v0 (four)."""
    out = tmp_path / "out"
    code = _main(["--env", "lrm/Critical-v0,lrm/R1Trace-v0", "--env-kwarg",
                  "class_deadlines=[0,2,6]", "--policies", "random", "--episodes", "1",
                  "--quiet", "--no-plots", "--out", str(out), "--workers", "1"])
    assert code == 2
    assert "--env-kwarg" in _one_error_line(capsys)
    assert not out.exists()


def _run_with_data_dir(data_dir: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """evaluate.main in a fresh process whose shipped data files are read from data_dir."""
    code = ("import sys, envs.traces as t; from pathlib import Path; "
            f"t.DATA_DIR = Path({str(data_dir)!r}); import evaluate; "
            f"sys.exit(evaluate.main({argv!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_missing_or_corrupt_trace_file_names_the_file(damage: str, tmp_path: Path) -> None:
    from envs.traces import DATA_DIR, NSRDB_FILE

    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    trace = data / NSRDB_FILE
    if damage == "deleted":
        trace.unlink()
    else:
        lines = trace.read_text().splitlines()
        parts = lines[10].split(",")
        parts[1] = "not-a-number"  # the GHI column
        lines[10] = ",".join(parts)
        trace.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    res = _run_with_data_dir(data, ["--env", "lrm/SolarDay-v0", "--policies", "random",
                                    "--episodes", "1", "--quiet", "--out", str(out)])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "--env lrm/SolarDay-v0" in lines[0] and "--env-kwarg" not in lines[0]
    assert Path(NSRDB_FILE).name in lines[0]
    assert not out.exists()
