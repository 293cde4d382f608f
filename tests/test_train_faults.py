"""train.py under faults: damaged or missing checkpoints on --resume, the monitor files and
TensorBoard events of a resumed run, interrupts during start-up, and bad input."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from agents import training
from agents.cli import Terminated
from agents.run_dir import make_logger
from tests.helpers import read_only_dir

ROOT = Path(train.__file__).resolve().parent
HORIZON = 40
N_ENVS = 2


def _run_main(argv: list[str]) -> int:
    try:
        return train.main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def _hp(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"default": {
        "n_envs": N_ENVS, "policy": "MlpPolicy", "n_steps": 64, "batch_size": 64,
        "n_epochs": 1, "normalize": True, "policy_kwargs": "dict(net_arch=[8])"}}))
    return path


def _args(out: Path, hp: Path, timesteps: int) -> list[str]:
    return ["--algo", "ppo", "--timesteps", str(timesteps), "--out", str(out),
            "--hyperparams", str(hp), "--env-kwarg", f"horizon={HORIZON}", "--eval-freq", "0",
            "--checkpoint-freq", "256", "--test-episodes", "0", "--no-progress-bar"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 512-step PPO run with checkpoints step_256 and step_512."""
    tmp = tmp_path_factory.mktemp("base")
    out = tmp / "run"
    assert _run_main(_args(out, _hp(tmp / "hp.yml"), 512)) == 0
    names = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert names == ["step_000000000256", "step_000000000512"], names
    return out


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of the base run."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def _resume(run: Path, timesteps: int = 768) -> int:
    return _run_main(["--out", str(run), "--resume", "--timesteps", str(timesteps),
                      "--no-progress-bar", "--test-episodes", "0"])


def _resumed_from(run: Path) -> int:
    return json.loads((run / "config.json").read_text())["resumes"][-1]["from_timestep"]


def _err_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# --------------------------------------------------------------------------- point 3: resume
STEP_256, STEP_512 = "step_000000000256", "step_000000000512"


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "other_run"])
def test_resume_without_a_usable_latest_json_scans_the_checkpoints(
        damage: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pointer = run / "checkpoints" / "latest.json"
    if damage == "deleted":
        pointer.unlink()
    elif damage == "corrupt":
        pointer.write_text('{"path": "step_0000')
    else:  # pointing into another run's checkpoints
        other = tmp_path / "other" / "checkpoints" / "step_000000099999"
        other.mkdir(parents=True)
        pointer.write_text(json.dumps({"path": f"../../other/checkpoints/{other.name}",
                                       "num_timesteps": 99999}))
    assert _resume(run) == 0
    err = "\n".join(_err_lines(capsys))
    assert "latest.json" in err and "step 0" not in err
    assert _resumed_from(run) == 512
    assert (run / "checkpoints" / STEP_512).is_dir()  # kept by the rotation
    assert (run / "checkpoints" / "step_000000000768").is_dir()


def _corrupt_state(ckpt: Path) -> None:
    (ckpt / "state.json").write_text('{"num_timesteps": 5')


def _foreign_state(ckpt: Path) -> None:
    state = json.loads((ckpt / "state.json").read_text())
    state["run_id"] = "0" * 32
    (ckpt / "state.json").write_text(json.dumps(state))


def _truncated_model(ckpt: Path) -> None:
    raw = (ckpt / "model.zip").read_bytes()
    (ckpt / "model.zip").write_bytes(raw[:len(raw) // 2])


def _corrupt_normalizer(ckpt: Path) -> None:
    (ckpt / "vecnormalize.pkl").write_bytes(b"\x80\x04garbage")


def _deleted_normalizer(ckpt: Path) -> None:
    (ckpt / "vecnormalize.pkl").unlink()


DAMAGES = {"state.json": _corrupt_state, "run_id": _foreign_state, "model.zip": _truncated_model,
           "vecnormalize.pkl": _corrupt_normalizer, "deleted vecnormalize.pkl": _deleted_normalizer}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(
        damage: str, run: Path, capsys: pytest.CaptureFixture) -> None:
    DAMAGES[damage](run / "checkpoints" / STEP_512)
    assert _resume(run) == 0
    err = "\n".join(_err_lines(capsys))
    assert f"{STEP_512} is damaged" in err and f"older {STEP_256}" in err, err
    assert "Traceback" not in err
    assert _resumed_from(run) == 256
    # the damaged checkpoint is kept aside, out of the way of the new ones
    assert (run / "checkpoints" / f"damaged_{STEP_512}").is_dir()
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["num_timesteps"] >= 768


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_no_intact_checkpoint_refuses_in_one_line(damage: str, run: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    for name in (STEP_256, STEP_512):
        DAMAGES[damage](run / "checkpoints" / name)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert _resume(run) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "no intact checkpoint" in lines[0], lines
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing restarted


def test_trained_run_without_checkpoints_is_not_restarted(run: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(run / "checkpoints")
    model = (run / "model.zip").read_bytes()
    assert _resume(run) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "model.zip" in lines[0], lines
    assert (run / "model.zip").read_bytes() == model


def test_corrupt_config_json_refuses_in_one_line(run: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    (run / "config.json").write_text('{"train": ')
    assert _resume(run) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "config.json" in lines[0], lines


# --------------------------------------------------------------------------- point 4: logs
def _monitor(path: Path) -> tuple[str, list[tuple[float, int, float]]]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#") and lines[1] == "r,l,t"
    rows = [ln.split(",") for ln in lines[2:]]
    return lines[0], [(float(r), int(ln), float(t)) for r, ln, t in rows]


def test_resumed_run_reads_as_one_run(run: Path) -> None:
    """After a kill at step 512 with step_256 the last good checkpoint (the newer one lost),
    the resume replays 256..512: the monitor rows and TensorBoard events past 256 go."""
    shutil.rmtree(run / "checkpoints" / STEP_512)
    (run / "checkpoints" / "latest.json").unlink()
    before = {i: _monitor(run / "monitor" / f"{i}.monitor.csv") for i in range(N_ENVS)}
    time.sleep(1.0)  # the resumed run's clock is visibly later
    assert _resume(run, 768) == 0
    assert _resumed_from(run) == 256
    per_env = 768 // N_ENVS
    for i in range(N_ENVS):
        header, rows = _monitor(run / "monitor" / f"{i}.monitor.csv")
        assert header == before[i][0]
        # 256 steps in total (128 per copy) at the checkpoint: 3 episodes of 40 each; then
        # 256 per copy from a fresh reset: 6 more. The killed run's rows past 256 are gone.
        assert rows[:3] == before[i][1][:3]
        assert sum(ln for _, ln, _ in rows) <= per_env
        assert len(rows) == 3 + (per_env - 128) // HORIZON
        # the resumed copies run new episodes (seeds moved on by n_envs), not the first ones
        assert not {r for r, _, _ in rows[3:]} & {r for r, _, _ in before[i][1]}
        times = [t for _, _, t in rows]
        assert times == sorted(times), times  # t goes on forward from the first start
        assert times[3] >= before[i][1][-1][2]
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("time/fps")]
    assert steps == list(range(128, 768 + 1, 128)), steps  # one series, no replayed steps


def test_resumed_event_file_is_read_after_the_killed_runs(tmp_path: Path) -> None:
    """TensorBoard reads event files in name order (unix seconds, host, pid): a resume in the
    same second as the killed run's start must still come after it (else nothing is purged)."""
    tb = tmp_path / "tb"
    tb.mkdir()
    host = socket.gethostname()
    killed = tb / f"events.out.tfevents.{int(time.time())}.{host}.99999999.0"
    killed.write_bytes(b"")
    logger = make_logger(tb, verbose=0, purge_step=5)
    logger.close()
    names = sorted(p.name for p in tb.glob("events.out.tfevents.*"))
    assert names[0] == killed.name and len(names) == 2


# --------------------------------------------------------------------------- point 6: input
def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "results"
    target.write_text("keep me\n")
    assert _run_main(["--out", str(target), "--timesteps", "10"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "--out" in lines[0] and "not a directory" in lines[0]
    assert target.read_text() == "keep me\n"


def test_read_only_out_is_refused(capsys: pytest.CaptureFixture) -> None:
    """Permissions do not stop root, so a directory of a read-only kind is used: /sys."""
    probe = read_only_dir()
    assert _run_main(["--out", str(probe / "run"), "--timesteps", "10"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "cannot write" in lines[0]


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "foo"], "--device"),
    pytest.param(["--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(not _no_cuda(), reason="this machine has CUDA")),
    (["--compare", "random", "bogus"], "allowed: cheapest"),
])
def test_bad_device_or_compare_exits_2(argv: list[str], fragment: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _run_main([*argv, "--out", str(out), "--timesteps", "10"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("bad, fragment", [
    ({"n_steps": 0}, "n_steps"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"policy_kwargs": "dict(net_arch=[-1])"}, "cannot be built"),
])
def test_bad_hyperparameters_leave_no_run_directory(bad: dict, fragment: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    hp = _hp(tmp_path / "hp.yml")
    entry = yaml.safe_load(hp.read_text())
    entry["default"].update(bad)
    hp.write_text(yaml.safe_dump(entry))
    out = tmp_path / "run"
    assert _run_main(_args(out, hp, 128)) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not out.exists()
    # fixed, the same command runs (no "already holds a run")
    assert _run_main(_args(out, _hp(tmp_path / "hp.yml"), 128)) == 0


@pytest.mark.parametrize("exc, code", [(KeyboardInterrupt(), 130),
                                       (Terminated(signal.SIGTERM), 143)])
def test_interrupt_during_start_up_leaves_nothing(exc: BaseException, code: int, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """The interrupt comes while the run directory is being written (inside versions())."""
    def interrupted() -> dict:
        assert (tmp_path / "run").is_dir()
        raise exc
    monkeypatch.setattr(training, "versions", interrupted)
    try:
        got = _run_main(_args(tmp_path / "run", _hp(tmp_path / "hp.yml"), 128))
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped train.main")
    assert got == code
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "interrupted" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_interrupt_during_start_up_keeps_what_out_held(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--out an existing directory with files of its own: only what the run wrote goes."""
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "a.txt").write_text("a\n")
    (out / "b.txt").write_text("b\n")

    def interrupted() -> dict:
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "versions", interrupted)
    try:
        got = _run_main(_args(out, _hp(tmp_path / "hp.yml"), 128))
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped train.main")
    assert got == 130
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["b.txt", "notes", "notes/a.txt"]


@pytest.mark.parametrize("delay", [0.2, 1.0])
def test_sigint_to_the_script_during_start_up(delay: float, tmp_path: Path) -> None:
    """A real Ctrl-C while the script loads its modules or sets up (before any training)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"),
                             *_args(out, _hp(tmp_path / "hp.yml"), 100_000)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = err.decode()
    assert "training ppo" not in text, "the signal came after training started"
    assert proc.returncode == 130, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in text, text
    assert not out.exists()
