"""Grids of training runs on Ray Tune (train.py with comma-separated --env/--algo/--seed).

Each grid runs ``train.py`` as a child process, which starts a local Ray in-process with 2
CPUs (``--ray-num-cpus 2``), no dashboard and its temporary directory under /tmp; the fixture
removes that directory and ends whatever the grid left running in its process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

ROOT = Path(__file__).resolve().parent.parent
#: A short run: a horizon of 48 steps, validation every 500 steps, 2 test episodes.
SHORT = ["--env-kwarg", "horizon=48", "--eval-freq", "500", "--eval-episodes", "2",
         "--test-episodes", "2", "--compare", "random", "cheapest", "--n-envs", "2"]


@pytest.fixture
def ray_env():
    """Environment of a grid's driver: Ray's temporary files in a fresh directory under /tmp."""
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "PYTHONPATH": str(ROOT),
           "RAY_DEDUP_LOGS": "0", "PYTHONHASHSEED": "0"}
    procs: list[subprocess.Popen] = []
    yield env, procs
    for p in procs:
        if p.poll() is None:
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)  # the grid's own session
            p.wait()
    shutil.rmtree(tmp, ignore_errors=True)


def start(args: list[str], ray_env) -> subprocess.Popen:
    env, procs = ray_env
    p = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    procs.append(p)
    return p


def finish(p: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    return out


def headers(run_dir: Path) -> list[str]:
    """The train.py command lines a trial started in ``run_dir`` (its train.log)."""
    return [ln for ln in (run_dir / "train.log").read_text().splitlines()
            if ln.startswith("# ")]


def wait_for(cond, timeout: float, what: str, p: subprocess.Popen) -> None:
    t0 = time.monotonic()
    while not cond():
        if p.poll() is not None:
            pytest.fail(f"grid ended before {what}:\n{p.stdout.read()}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_grid_2x2_writes_one_run_per_combination(tmp_path, ray_env):
    out = tmp_path / "grid"
    p = start(["--env", "lrm/Critical-v0,lrm/Volatile-v0", "--algo", "ppo,a2c", "--seed", "3",
               "--timesteps", "1000", *SHORT, "--ray-num-cpus", "2", "--out", str(out)], ray_env)
    log = finish(p)
    assert p.returncode == 0, log
    rows = json.loads((out / "trials.json").read_text())
    assert {(r["env"], r["algo"]) for r in rows} == {
        (e, a) for e in ("lrm/Critical-v0", "lrm/Volatile-v0") for a in ("ppo", "a2c")}
    for r in rows:
        d = Path(r["run_dir"])
        assert r["status"] == "done" and r["test_return"] is not None
        cfg = json.loads((d / "config.json").read_text())["train"]
        # the trial did what a single train.py run does with that combination
        assert (cfg["env"], cfg["algo"], cfg["seed"], cfg["timesteps"]) == \
            (r["env"], r["algo"], 3, 1000)
        assert (d / "model.zip").exists() and (d / "comparison" / "summary.json").exists()
    assert "4/4 trials done" in log


def test_grid_retries_a_killed_worker_from_its_checkpoint(tmp_path, ray_env):
    out = tmp_path / "grid"
    run = out / "lrm_Critical-v0__ppo__seed0"
    p = start(["--seed", "0", "--timesteps", "6000", "--checkpoint-freq", "500", *SHORT,
               "--ray-num-cpus", "2", "--max-failures", "2", "--out", str(out)], ray_env)
    wait_for(lambda: any((run / "checkpoints").glob("*/state.json"))
             or any((run / "checkpoints").glob("*_steps*")), 240, "a checkpoint", p)
    time.sleep(1.0)
    pid = int((run / "worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the Ray worker process running the trial
    log = finish(p)
    assert p.returncode == 0, log
    starts = headers(run)
    print("\n".join(starts))
    assert len(starts) == 2 and "--resume" not in starts[0] and "--resume" in starts[1], starts
    resumes = json.loads((run / "config.json").read_text())["resumes"]
    assert len(resumes) == 1 and resumes[0]["from_timestep"] > 0, resumes
    assert int((run / "worker.pid").read_text()) != pid
    assert json.loads((run / "trial.json").read_text())["done"]


def test_grid_stopped_and_resumed_skips_finished_trials(tmp_path, ray_env):
    out = tmp_path / "grid"
    # 20000 steps: the second trial must still be running when it is stopped right after its
    # first checkpoint (with 3000 it sometimes finished first on idle cores)
    args = ["--seed", "0,1", "--timesteps", "20000", "--checkpoint-freq", "500", *SHORT,
            "--ray-num-cpus", "1", "--out", str(out)]
    first, second = out / "lrm_Critical-v0__ppo__seed0", out / "lrm_Critical-v0__ppo__seed1"
    p = start(args, ray_env)
    # one CPU: the trials run one after the other; stop the grid during the second
    wait_for(lambda: (first / "trial.json").exists() or (second / "trial.json").exists(),
             240, "a finished trial", p)
    done, running = (first, second) if (first / "trial.json").exists() else (second, first)
    wait_for(lambda: (any((running / "checkpoints").glob("*/state.json"))
                      or any((running / "checkpoints").glob("*_steps*")))
             and (running / "config.json").exists(), 240, "a checkpoint of the second trial", p)
    os.kill(p.pid, signal.SIGINT)
    log = finish(p)
    assert p.returncode == 1, log
    assert "resume with: python train.py" in log and log.rstrip().endswith("--resume"), log
    assert not (running / "trial.json").exists(), "the grid finished before it was stopped"
    p = start([*args, "--resume"], ray_env)
    log2 = finish(p)
    print(log2)
    assert p.returncode == 0, log + "\n-----\n" + log2
    assert len(headers(done)) == 1  # not run again
    starts = headers(running)
    assert "--resume" in starts[-1], starts
    assert (running / "trial.json").exists() and "2/2 trials done" in log2


def test_grid_refuses_bad_input_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--seed", "0,x",
                        "--out", str(tmp_path / "g")], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--seed" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--seed", "0,1",
                        "--algo", "nope", "--out", str(tmp_path / "g")], cwd=ROOT,
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "--algo" in r.stderr, r.stderr
    assert not (tmp_path / "g").exists()


def test_importing_the_package_does_not_import_ray():
    code = ("import sys, envs, agents, agents.grid, agents.sb3; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip() == "False", r.stderr


def test_evaluate_over_ray_equals_one_worker(tmp_path, ray_env):
    env, _ = ray_env
    common = [sys.executable, str(ROOT / "evaluate.py"), "--env", "lrm/Critical-v0",
              "--policies", "random,cheapest,variance_aware,oracle", "--episodes", "6",
              "--seed", "5", "--env-kwarg", "horizon=48", "--quiet", "--no-plots"]
    one = subprocess.run([*common, "--workers", "1", "--out", str(tmp_path / "one")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    ray = subprocess.run([*common, "--ray-address", "local", "--out", str(tmp_path / "ray")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ray.returncode == 0, ray.stderr
    a = (tmp_path / "one" / "episodes.csv").read_text()
    b = (tmp_path / "ray" / "episodes.csv").read_text()
    assert len(a.splitlines()) == 1 + 6 * 4 and a == b
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "ray" / "summary.json").read_text())
    sa.pop("elapsed_s"), sb.pop("elapsed_s")
    assert sa == sb



def test_tune_two_trials_writes_best_entry_and_table(tmp_path, ray_env):
    import csv

    import yaml

    out = tmp_path / "search"
    p = start(["--tune", "2", "--timesteps", "1000", *SHORT, "--ray-num-cpus", "2",
               "--out", str(out)], ray_env)
    log = finish(p)
    assert p.returncode == 0, log
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2 and len({r["learning_rate"] for r in rows}) == 2
    best = yaml.safe_load((out / "best_hyperparams.yml").read_text())["lrm/Critical-v0"]
    top = max((r for r in rows if r["val_return"]),
              key=lambda r: (int(r["timesteps"]), float(r["val_return"])))
    assert best["learning_rate"] == pytest.approx(float(top["learning_rate"]))
    assert best["n_steps"] == 32  # the rest of the entry comes from hyperparams/ppo.yml
    trial_yml = out / "trials" / f"{top['trial']}.yml"
    assert yaml.safe_load(trial_yml.read_text())["lrm/Critical-v0"]["learning_rate"] == \
        pytest.approx(best["learning_rate"])


@pytest.mark.slow  # about 90 s: a grid, then 2 ids x 8 policies
def test_leaderboard_of_a_grid_covers_own_and_held_out_ids(tmp_path, ray_env):
    import csv

    env, _ = ray_env
    grid = tmp_path / "grid"
    p = start(["--env", "lrm/WindDay-v0", "--seed", "0,1", "--timesteps", "500",
               "--env-kwarg", "horizon=24", "--eval-freq", "0", "--test-episodes", "0",
               "--n-envs", "2", "--ray-num-cpus", "2", "--out", str(grid)], ray_env)
    log = finish(p)
    assert p.returncode == 0, log
    r = subprocess.run([sys.executable, "-m", "agents.leaderboard", str(grid), "--episodes",
                        "3", "--out", str(tmp_path / "lb"), "--quiet"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "lb" / "leaderboard.csv").open()))
    assert {row["test_env"] for row in rows} == {"lrm/WindDay-v0", "lrm/WindWinter-v0"}
    for test_env in ("lrm/WindDay-v0", "lrm/WindWinter-v0"):
        g = {row["policy"]: row for row in rows if row["test_env"] == test_env}
        assert {"ppo", "oracle", "random", "variance_feedback"} <= set(g)
        assert g["ppo"]["seeds"] == "0 1" and g["ppo"]["seed_sd"] != ""
        assert float(g["oracle"]["score"]) == pytest.approx(1.0)
        assert float(g["random"]["score"]) == pytest.approx(0.0, abs=1e-9)
        best = g["ppo"]["best_heuristic"]
        assert float(g[best]["diff_vs_best"]) == 0.0
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "tested on `lrm/WindWinter-v0` (held-out" in md
    assert (tmp_path / "lb" / "leaderboard.png").stat().st_size > 0
