"""train.py: tiny runs of every algorithm, TensorBoard contents, resume, bad arguments."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401  (registers the ids)
import train
from agents.callbacks import (
    EpisodeAccumulator,
    find_checkpoint,
    latest_checkpoint,
    write_checkpoint,
)
from agents.hyperparams import HyperparamError, read_entry, resolve_entry, safe_eval
from agents.sb3 import ALGOS, algo_class, load_sb3_policy
from agents.train_config import TrainConfig, build_parser
from envs.reward import REWARD_TERMS

ROOT = Path(train.__file__).resolve().parent
ENV = "lrm/Critical-v0"
HORIZON = 40  # short episodes so that a few hundred steps complete several of them

#: Small, fast settings per algorithm for the tiny runs (zoo format, through --hyperparams).
TINY_HP = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "normalize": True,
            "env_wrapper": "agents.wrappers.SoftmaxMixtureAction"},  # as hyperparams/ppo.yml
    "recurrent_ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1, "normalize": True,
                      "policy": "MlpLstmPolicy",
                      "policy_kwargs": "dict(net_arch=[16], lstm_hidden_size=8)"},
    "a2c": {"n_steps": 8, "normalize": True},
    "sac": {"learning_starts": 50, "batch_size": 32, "buffer_size": 5000,
            "normalize": "dict(norm_obs=True, norm_reward=False)"},
    "td3": {"learning_starts": 50, "batch_size": 32, "buffer_size": 5000,
            "noise_type": "normal", "noise_std": 0.2},
    "dqn": {"learning_starts": 50, "batch_size": 32, "buffer_size": 5000,
            "target_update_interval": 100, "normalize": "dict(norm_obs=True, norm_reward=False)"},
}


def _write_hp(path: Path, algo: str) -> Path:
    import yaml

    entry = {"n_envs": 2, "n_timesteps": 300, "policy": "MlpPolicy",
             "policy_kwargs": "dict(net_arch=[16, 16])", **TINY_HP[algo]}
    path.write_text(yaml.safe_dump({"default": entry}))
    return path


def _run_main(argv: list[str]) -> int:
    try:
        return train.main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def _tiny_args(algo: str, out: Path, hp: Path, timesteps: int = 300) -> list[str]:
    return ["--algo", algo, "--env", ENV, "--timesteps", str(timesteps), "--n-envs", "2",
            "--out", str(out), "--hyperparams", str(hp), "--env-kwarg", f"horizon={HORIZON}",
            "--eval-freq", "200", "--eval-episodes", "2", "--checkpoint-freq", "200",
            "--test-episodes", "2", "--compare", "random", "--no-progress-bar"]


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny PPO run shared by the tests that inspect a run directory."""
    tmp = tmp_path_factory.mktemp("ppo")
    out = tmp / "run"
    assert _run_main(_tiny_args("ppo", out, _write_hp(tmp / "hp.yml", "ppo"))) == 0
    return out


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_tiny_training_run_saves_a_loadable_model(algo: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = _run_main(_tiny_args(algo, out, _write_hp(tmp_path / "hp.yml", algo)))
    assert code == 0
    for name in ("model.zip", "config.json", "command.txt", "evaluations.npz"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["fleet"]["horizon"] == HORIZON
    assert cfg["fleet"]["action_type"] == ("discrete" if ALGOS[algo][1] else "continuous")
    assert set(cfg["versions"]) >= {"python", "gymnasium", "numpy", "stable_baselines3", "torch"}
    # the saved model (and normaliser beside it) loads and acts in the env's action space
    policy = load_sb3_policy(f"{algo}:{out / 'model.zip'}")
    env = gym.make(ENV, horizon=HORIZON, action_type=cfg["fleet"]["action_type"])
    obs, _ = env.reset(seed=123)
    action, _ = policy.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype)
                                     if cfg["fleet"]["action_type"] == "continuous"
                                     else int(action))
    assert policy.normalizer is not None or "normalize" not in TINY_HP[algo]
    # ... and the final comparison ran it through evaluate.py next to the random policy
    printed = capsys.readouterr().out
    assert f"{algo}:{out / 'model.zip'}" in printed and "random" in printed


def test_tensorboard_holds_fleet_energy_scalars(ppo_run: Path) -> None:
    acc = EventAccumulator(str(ppo_run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    wanted = {"fleet/aux_kwh", "fleet/waste_kwh", "fleet/leftover_kwh", "fleet/accuracy",
              *(f"fleet/reward_terms/{k}" for k in REWARD_TERMS), "eval/mean_reward",
              "eval/aux_kwh", "rollout/ep_rew_mean"}
    assert wanted <= tags, sorted(wanted - tags)
    for tag in wanted:
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars("fleet/accuracy"))
    # the same quantity reached by two paths: ledger key and reward term
    a = [e.value for e in acc.Scalars("fleet/aux_kwh")]
    b = [e.value for e in acc.Scalars("fleet/reward_terms/aux_kwh")]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert acc.PluginTagToContent("hparams")  # hyperparameters written through HParam


def _monitor_rows(path: Path) -> tuple[dict, list[tuple[float, int]]]:
    """Header and (r, l) rows of a monitor CSV, read as SB3's ``load_results`` reads it (a
    ``#``-prefixed JSON header line, then a CSV table with columns r, l, t)."""
    import csv

    with open(path) as fh:
        first = fh.readline()
        assert first.startswith("#"), path
        header = json.loads(first[1:])
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"r", "l", "t"}
    return header, [(float(r["r"]), int(r["l"])) for r in rows]


def test_native_run_directory_is_complete(ppo_run: Path) -> None:
    """The default (native) back end writes everything the SB3 back ends write."""
    from stable_baselines3.common.monitor import get_monitor_files

    cfg = json.loads((ppo_run / "config.json").read_text())
    assert cfg["train"]["vec_env"] == "native"
    for name in ("model.zip", "vecnormalize.pkl", "action_wrapper.json", "best/model.zip",
                 "best/action_wrapper.json", "evaluations.npz"):
        assert (ppo_run / name).is_file(), name
    ckpt, _ = latest_checkpoint(ppo_run / "checkpoints")
    assert (ckpt / "action_wrapper.json").read_text() == \
        (ppo_run / "action_wrapper.json").read_text()
    spec = json.loads((ppo_run / "action_wrapper.json").read_text())
    assert spec == {"class": "agents.wrappers.SoftmaxMixtureAction", "kwargs": {"scale": 3.0},
                    "shape": [3, 9]}
    files = sorted(get_monitor_files(str(ppo_run / "monitor")))
    assert [Path(f).name for f in files] == ["0.monitor.csv", "1.monitor.csv"]
    model = algo_class("ppo").load(str(ppo_run / "model.zip"))
    per_copy = model.num_timesteps // 2
    for f in files:
        header, rows = _monitor_rows(Path(f))
        assert header["env_id"] == ENV and header["t_start"] > 0
        # every episode of the copy, each HORIZON slots long
        assert [length for _, length in rows] == [HORIZON] * (per_copy // HORIZON)


@pytest.mark.parametrize("algo", ["ppo", "sac", "dqn"])
def test_native_and_dummy_back_ends_train_the_same_model(algo: str, tmp_path: Path) -> None:
    """Same seed, same settings: the two back ends give the same training run bit for bit
    (network weights, normaliser statistics, monitor rows, fleet/ scalars, validation
    returns) on a queued env (the softmax map's defer entry; DQN: the discrete defer
    actions), and the same saved files."""
    import pickle

    import torch
    import yaml

    hp = _write_hp(tmp_path / "hp.yml", algo)
    if algo == "sac":  # as hyperparams/sac.yml
        entry = yaml.safe_load(hp.read_text())
        entry["default"]["env_wrapper"] = "agents.wrappers.SoftmaxMixtureAction"
        hp.write_text(yaml.safe_dump(entry))
    runs = {}
    for backend in ("native", "dummy"):
        out = tmp_path / backend
        args = _tiny_args(algo, out, hp, timesteps=256)[:-5] + [
            "--env", "lrm/R1Trace-v0", "--eval-freq", "256", "--test-episodes", "0",
            "--no-progress-bar", "--vec-env", backend]
        assert _run_main(args) == 0
        runs[backend] = out
    a, b = (algo_class(algo).load(str(runs[k] / "model.zip")) for k in ("native", "dummy"))
    assert a.num_timesteps == b.num_timesteps == 256
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a._n_updates == b._n_updates > 0  # the weights were trained, not just initialised
    na, nb = (pickle.loads((runs[k] / "vecnormalize.pkl").read_bytes())
              for k in ("native", "dummy"))
    assert na.obs_rms.mean.tobytes() == nb.obs_rms.mean.tobytes()
    assert na.ret_rms.var.tobytes() == nb.ret_rms.var.tobytes()
    if algo == "dqn":
        assert not (runs["native"] / "action_wrapper.json").exists()
    else:
        assert (runs["native"] / "action_wrapper.json").read_text() == \
            (runs["dummy"] / "action_wrapper.json").read_text()
        assert json.loads((runs["native"] / "action_wrapper.json").read_text())["shape"] == \
            [4, 10]
    for i in range(2):
        ha, ra = _monitor_rows(runs["native"] / "monitor" / f"{i}.monitor.csv")
        hb, rb = _monitor_rows(runs["dummy"] / "monitor" / f"{i}.monitor.csv")
        assert ra == rb and len(ra) == 128 // HORIZON and ha["env_id"] == hb["env_id"]
    ea, eb = (np.load(runs[k] / "evaluations.npz")["results"] for k in ("native", "dummy"))
    assert ea.tobytes() == eb.tobytes()
    accs = {}
    for k, out in runs.items():
        accs[k] = EventAccumulator(str(out / "tb"))
        accs[k].Reload()
    tags = [t for t in accs["native"].Tags()["scalars"] if t.startswith("fleet/")]
    assert "fleet/aux_kwh" in tags and "fleet/reward_terms/dropped" in tags
    assert set(tags) == {t for t in accs["dummy"].Tags()["scalars"] if t.startswith("fleet/")}
    for tag in tags:
        assert [(e.step, e.value) for e in accs["native"].Scalars(tag)] == \
            [(e.step, e.value) for e in accs["dummy"].Scalars(tag)], tag


def test_native_back_end_refuses_a_wrapper_it_cannot_batch(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    import yaml

    hp = tmp_path / "hp.yml"
    hp.write_text(yaml.safe_dump({"default": {"n_envs": 2, "policy": "MlpPolicy",
                                              "env_wrapper": "gymnasium.wrappers.ClipAction"}}))
    out = tmp_path / "run"
    code = _run_main(["--hyperparams", str(hp), "--out", str(out), "--timesteps", "10"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "--vec-env native" in lines[0] and "ClipAction" in lines[0] and "dummy" in lines[0]
    assert not out.exists()  # refused before the run directory was written


def test_episode_accumulator_matches_a_manual_rollout() -> None:
    env = gym.make(ENV, horizon=HORIZON)
    acc = EpisodeAccumulator(n_envs=1)
    rng = np.random.default_rng(7)
    env.reset(seed=5)
    sums = dict.fromkeys(("aux_kwh", "waste_kwh", "correct", "arrived", "value"), 0.0)
    leftover = 0.0
    done, finished = False, []
    while not done:
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        _, _, term, trunc, info = env.step(a)
        done = term or trunc
        for k in ("aux_kwh", "waste_kwh", "correct", "arrived"):
            sums[k] += info[k]
        sums["value"] += info["reward_terms"]["value_correct"]
        leftover = info["reward_terms"]["leftover_kwh"]
        finished = acc.add([info], np.array([done]))
        assert bool(finished) == done
    m = finished[0]
    assert m["aux_kwh"] == pytest.approx(sums["aux_kwh"])
    assert m["waste_kwh"] == pytest.approx(sums["waste_kwh"])
    assert m["leftover_kwh"] == pytest.approx(leftover)
    assert m["accuracy"] == pytest.approx(sums["correct"] / sums["arrived"])
    assert m["reward_terms/value_correct"] == pytest.approx(sums["value"])
    assert all(np.all(v == 0) for v in acc.totals.values())  # reset for the next episode


def test_resume_after_kill_continues_the_step_count(tmp_path: Path) -> None:
    """A run killed with SIGKILL after its first checkpoint resumes from it, nothing lost."""
    out = tmp_path / "run"
    hp = _write_hp(tmp_path / "hp.yml", "ppo")
    args = _tiny_args("ppo", out, hp, timesteps=10_000_000)
    args[args.index("--checkpoint-freq") + 1] = "256"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while latest_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr is not None:  # shown by pytest if the test fails
            sys.stderr.write(proc.stderr.read().decode())
    # the newest complete checkpoint (latest.json may still point at the one before it when
    # the kill came between the two renames)
    first = int(find_checkpoint(out / "checkpoints").state["num_timesteps"])
    assert first >= int(latest_checkpoint(out / "checkpoints")[1]["num_timesteps"]) >= 256
    total = first + 512
    assert _run_main(["--out", str(out), "--resume", "--timesteps", str(total),
                      "--test-episodes", "0", "--no-progress-bar"]) == 0
    model = algo_class("ppo").load(str(out / "model.zip"))
    assert total <= model.num_timesteps < total + 2 * 64  # one rollout of 2 envs x 64 steps
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resumes"][0]["from_timestep"] == first
    assert cfg["seeds"]["train"][0] == 2  # sub-env seeds move on by n_envs per resume
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("rollout/ep_rew_mean")]
    assert max(steps) >= total and any(s > first for s in steps)
    assert (out / "command.txt").read_text().count("\n") == 2
    # the resumed run appends to the monitor files of the first (one header each), after
    # the rows of the episodes that ended by the checkpoint (those past it are replayed)
    for i in range(2):
        lines = (out / "monitor" / f"{i}.monitor.csv").read_text().splitlines()
        assert sum(ln.startswith("#") for ln in lines) == 1 and lines.count("r,l,t") == 1
        rows = _monitor_rows(out / "monitor" / f"{i}.monitor.csv")[1]
        assert len(rows) >= (total // 2) // HORIZON - 1  # the killed run's unfinished episode
        rows_tl = [ln.split(",") for ln in lines[2:]]
        assert sum(int(r[1]) for r in rows_tl) <= model.num_timesteps // 2
        times = [float(r[2]) for r in rows_tl]
        assert times == sorted(times)
    assert steps == sorted(set(steps))  # one TensorBoard series: no replayed steps


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    """SIGTERM during training: a checkpoint, the resume command, the shell's code 128 + 15."""
    out = tmp_path / "run"
    args = _tiny_args("ppo", out, _write_hp(tmp_path / "hp.yml", "ppo"), timesteps=10_000_000)
    args[args.index("--checkpoint-freq") + 1] = "0"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    def episodes_done() -> int:  # an episode ended: training (and the handler) is running
        files = list((out / "monitor").glob("*.monitor.csv")) if (out / "monitor").exists() else []
        return sum(max(0, len(f.read_text().splitlines()) - 2) for f in files)

    while episodes_done() == 0:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "--resume" in err.decode()
    latest = latest_checkpoint(out / "checkpoints")
    assert latest is not None and latest[1]["num_timesteps"] > 0


def test_off_policy_resume_restores_the_replay_buffer(tmp_path: Path) -> None:
    out = tmp_path / "run"
    hp = _write_hp(tmp_path / "hp.yml", "sac")
    assert _run_main(_tiny_args("sac", out, hp, timesteps=200)[:-5]
                     + ["--test-episodes", "0", "--no-progress-bar"]) == 0
    assert _run_main(["--out", str(out), "--resume", "--timesteps", "400",
                      "--no-progress-bar", "--test-episodes", "0"]) == 0
    ckpt, state = latest_checkpoint(out / "checkpoints")
    model = algo_class("sac").load(str(ckpt / "model.zip"))
    model.load_replay_buffer(str(ckpt / "replay_buffer.pkl"))
    # every transition of both runs is in the buffer: (pos rows) x (2 envs)
    assert state["num_timesteps"] == 400
    assert model.replay_buffer.pos * 2 == 400


@pytest.mark.parametrize("argv, fragment", [
    (["--env", "lrm/Nope-v0"], "--env"),
    (["--algo", "foo"], "--algo"),
    (["--timesteps", "0"], "--timesteps"),
    (["--n-envs", "0"], "--n-envs"),
    (["--env-kwarg", "nope=1"], "nope"),
    (["--env-kwarg", "horizon=abc"], "horizon"),
    (["--env-kwarg", "harvest_cv=-1"], "harvest_cv"),
    (["--env-kwarg", "novalue"], "KEY=VALUE"),
    (["--algo", "dqn", "--env-kwarg", "action_type=continuous"], "action_type"),
    (["--hyperparams", "does/not/exist.yml"], "not found"),
    (["--seed", "-5"], "--seed"),
    (["--vec-env", "threads"], "--vec-env"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv: list[str], fragment: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    code = _run_main([*argv, "--out", str(tmp_path / "run"), "--timesteps", "10"]
                     if "--timesteps" not in argv else [*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1 and fragment in lines[0], err
    assert not (tmp_path / "run" / "model.zip").exists()


@pytest.mark.parametrize("content, fragment", [
    ("lrm/Critical-v0: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must map env ids"),
    ("lrm/Other-v0: {n_envs: 2}\n", "no entry"),
    ("default: {n_envs: 2, not_a_param: 3}\n", "not_a_param"),
    ("default: {n_envs: 0}\n", "n_envs"),
    ("default: {policy_kwargs: \"__import__('os').system('true')\"}\n", "not allowed"),
    ("default: {learning_rate: fast}\n", "learning_rate"),
    ("default: {frame_stack: 4}\n", "frame_stack"),
])
def test_bad_hyperparameter_file_exits_2(content: str, fragment: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    hp = tmp_path / "hp.yml"
    hp.write_text(content)
    code = _run_main(["--hyperparams", str(hp), "--out", str(tmp_path / "run"),
                      "--timesteps", "10"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_exit_code_of_the_script_itself() -> None:
    proc = subprocess.run([sys.executable, "train.py", "--timesteps", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--timesteps" in proc.stderr


def test_existing_run_is_not_overwritten(ppo_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (ppo_run / "model.zip").stat().st_mtime_ns
    assert _run_main(["--out", str(ppo_run), "--timesteps", "10"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (ppo_run / "model.zip").stat().st_mtime_ns == before


def test_safe_eval_accepts_literals_and_activations_only() -> None:
    from torch import nn

    v = safe_eval("dict(net_arch=dict(pi=[64, 64], vf=[32]), activation_fn=nn.Tanh, "
                  "log_std_init=-0.5, ortho_init=False)")
    assert v == {"net_arch": {"pi": [64, 64], "vf": [32]}, "activation_fn": nn.Tanh,
                 "log_std_init": -0.5, "ortho_init": False}
    for bad in ("__import__('os')", "open('x')", "nn.Module.__subclasses__()", "1 + 1",
                "dict(**{'a': 1})", "os.system"):
        with pytest.raises(HyperparamError):
            safe_eval(bad)


def test_shipped_hyperparameter_files_resolve_for_every_env() -> None:
    ids = sorted(i for i, s in gym.registry.items() if str(s.entry_point).startswith("envs."))
    assert ids
    for algo in ALGOS:
        for env_id in ids:
            entry = read_entry(ROOT / "hyperparams" / f"{algo}.yml", env_id)
            hp = resolve_entry(entry, algo_class(algo), 27, f"{algo}.yml")
            assert hp["n_envs"] >= 1 and hp["n_timesteps"] >= 1
            # rl_zoo3 reads only explicit ids: every registered id must have its own entry
            import yaml

            assert env_id in yaml.safe_load((ROOT / "hyperparams" / f"{algo}.yml").read_text())


def test_held_out_ids_share_their_training_ids_entry() -> None:
    # a policy trained on the training id runs unseen on its held-out ids (envs.HELD_OUT):
    # training either of them directly must use the same settings
    from envs import HELD_OUT

    for algo in ALGOS:
        path = ROOT / "hyperparams" / f"{algo}.yml"
        for train_id, held_out in HELD_OUT.items():
            for env_id in held_out:
                assert read_entry(path, env_id) == read_entry(path, train_id), (algo, env_id)


def test_checkpoints_are_complete_or_absent(ppo_run: Path, tmp_path: Path) -> None:
    ckpt, state = latest_checkpoint(ppo_run / "checkpoints")
    assert {"model.zip", "vecnormalize.pkl", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert state["num_timesteps"] == json.loads(
        (ppo_run / "checkpoints" / "latest.json").read_text())["num_timesteps"]
    # a write that dies half-way leaves only a hidden temp dir; latest.json still points to
    # the previous complete checkpoint
    model = algo_class("ppo").load(str(ckpt / "model.zip"))

    class Boom(RuntimeError):
        pass

    def broken_save(*args: object, **kwargs: object) -> None:
        raise Boom

    model.save = broken_save  # type: ignore[method-assign]
    with pytest.raises(Boom):
        write_checkpoint(model, ppo_run / "checkpoints", {})
    assert latest_checkpoint(ppo_run / "checkpoints")[0] == ckpt
    assert not [p for p in (ppo_run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_every_option_is_documented() -> None:
    for f in __import__("dataclasses").fields(TrainConfig):
        assert f.metadata["help"], f.name
    text = build_parser().format_help()
    for opt in ("--env", "--algo", "--timesteps", "--n-envs", "--seed", "--out",
                "--hyperparams", "--resume", "--env-kwarg", "--vec-env"):
        assert opt in text
    assert os.path.basename(train.__file__) == "train.py"


def test_softmax_action_map() -> None:
    from agents.wrappers import SoftmaxMixtureAction
    from envs.actions import action_to_mixture

    env = SoftmaxMixtureAction(gym.make(ENV), scale=3.0)
    cfg = env.unwrapped.config
    shape = (cfg.n_classes, cfg.n_configs)
    # the zero action is the uniform (reference) mixture
    mix = action_to_mixture(cfg, env.action(np.zeros(27, dtype=np.float32))[None])[0]
    np.testing.assert_allclose(mix, 1.0 / cfg.n_configs, rtol=1e-6)
    # +1 on one entry, -1 elsewhere: odds exp(2 * scale) against each other configuration
    a = -np.ones(27, dtype=np.float32)
    a[[0, 9 + 4, 18 + 8]] = 1.0
    mix = action_to_mixture(cfg, env.action(a)[None])[0]
    expected = np.exp(6.0) / (np.exp(6.0) + cfg.n_configs - 1)
    np.testing.assert_allclose(mix[[0, 1, 2], [0, 4, 8]], expected, rtol=1e-5)
    # batched and single calls agree, and every env action is valid
    batch = np.random.default_rng(0).uniform(-1, 1, (5, 27))
    out = SoftmaxMixtureAction.transform(batch, shape, 3.0)
    for row, single in zip(out, batch):
        np.testing.assert_allclose(row, env.action(single), atol=1e-6)
        assert env.unwrapped.action_space.contains(row.astype(np.float32))


def test_action_wrapper_is_saved_and_replayed_by_the_loader(tmp_path: Path) -> None:
    import yaml

    from agents.wrappers import SoftmaxMixtureAction

    hp = tmp_path / "hp.yml"
    entry = {"n_envs": 2, "policy": "MlpPolicy", "policy_kwargs": "dict(net_arch=[16])",
             "env_wrapper": "agents.wrappers.SoftmaxMixtureAction", **TINY_HP["ppo"]}
    hp.write_text(yaml.safe_dump({"default": entry}))
    out = tmp_path / "run"
    args = _tiny_args("ppo", out, hp, timesteps=200)
    args += ["--vec-env", "subproc"]
    assert _run_main(args) == 0
    spec = json.loads((out / "action_wrapper.json").read_text())
    assert spec["class"] == "agents.wrappers.SoftmaxMixtureAction"
    assert (out / "best" / "action_wrapper.json").is_file()
    policy = load_sb3_policy(f"ppo:{out / 'model.zip'}")
    obs, _ = gym.make(ENV, horizon=HORIZON).reset(seed=3)
    raw, _ = policy.model.predict(policy.normalizer.normalize_obs(obs), deterministic=True)
    mapped, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_allclose(mapped, SoftmaxMixtureAction.transform(raw, (3, 9), 3.0),
                               atol=1e-6)
    assert not np.allclose(mapped, raw)
