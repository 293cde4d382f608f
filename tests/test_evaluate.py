"""evaluate.py: paired evaluation, files, CLI errors, SB3 interop and the paper's experiments."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the lrm/* ids)
import evaluate
from agents import evaluation, make_policy
from agents.experiments import regimes

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_evaluation_writes_paired_results(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    summary = evaluation.run_evaluation("lrm/Critical-v0", ["cheapest", "mean_matching", "oracle"],
                                      3, 5, out_dir=out, env_kwargs={"horizon": 48},
                                      progress=False)
    for name in ("episodes.csv", "summary.json", "episode.png", "costs.png"):
        assert (out / name).is_file(), name
    for png in ("episode.png", "costs.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 200_000
    assert json.loads((out / "summary.json").read_text()) == summary
    with open(out / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 3
    seeds = {p: [r["seed"] for r in rows if r["policy"] == p] for p in
             ("cheapest", "mean_matching", "oracle")}
    assert seeds["cheapest"] == seeds["mean_matching"] == seeds["oracle"], "seeds must be paired"
    assert seeds["cheapest"] == [str(s) for s in evaluation.evaluation_seeds(5, 3)]
    pol = summary["policies"]
    assert pol["oracle"]["score"]["mean"] == pytest.approx(1.0)
    assert summary["best_heuristic"] == "mean_matching"
    assert pol["mean_matching"]["diff_vs_best"]["mean"] == pytest.approx(0.0)
    diff = pol["cheapest"]["diff_vs_best"]["mean"]
    assert diff == pytest.approx(pol["cheapest"]["reward"]["mean"]
                                 - pol["mean_matching"]["reward"]["mean"])
    table = evaluation.format_table(summary)
    assert table.count("\n| ") == 4  # header + 3 policies
    assert "oracle (bound)" in table and "±" in table


def test_rollout_is_deterministic_and_ledger_consistent() -> None:
    env = gym.make("lrm/UnderSupply-v0", horizon=48)
    pol = make_policy("variance_feedback", env)
    a = evaluation.rollout("lrm/UnderSupply-v0", pol, 17, env=env, record=True)
    b = evaluation.rollout("lrm/UnderSupply-v0", pol, 17, env=env, record=True)
    for k in ("harvest", "demand", "storage"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["reward"] == b["reward"]
    # O1 with an unbounded store: sum H - sum D = S_T + sum W - sum U.
    assert a["harvest_kwh"] - a["demand_kwh"] == pytest.approx(
        a["storage"][-1] + a["waste_kwh"] - a["aux_kwh"], abs=1e-12)


def test_mean_ci_matches_a_t_interval() -> None:
    ci = evaluation.mean_ci([1.0, 2.0, 3.0, 4.0])
    # t_{0.975, 3} = 3.182; sd = 1.291; half-width = 3.182 * 1.291 / 2 = 2.054
    assert ci["mean"] == 2.5
    assert ci["half_width"] == pytest.approx(2.054, abs=1e-3)
    assert np.isnan(evaluation.mean_ci([1.0])["half_width"])


@pytest.mark.parametrize(("args", "needle"), [
    (["--env", "lrm/Nope-v0"], "--env"),
    (["--policies", "random,bogus"], "bogus"),
    (["--policies", "ppo:/definitely/missing/model.zip"], "model file not found"),
    (["--policies", "foo:/tmp/model.zip"], "unknown algorithm"),
    (["--episodes", "0"], "--episodes"),
    (["--episodes", "x"], "--episodes"),
    (["--env-kwarg", "not_a_field=3"], "not_a_field"),
    (["--env-kwarg", "horizon=-5"], "horizon"),
    (["--experiment", "nope"], "--experiment"),
    (["--workers", "-1"], "--workers"),
])
def test_cli_rejects_bad_input(args: list[str], needle: str, capsys: pytest.CaptureFixture,
                               tmp_path: Path) -> None:
    argv = [*args, "--quiet", "--out", str(tmp_path)]
    if "--episodes" not in args:
        argv += ["--episodes", "1"]
    try:
        code = evaluate.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert not (tmp_path / "summary.json").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err


def test_cli_subprocess_writes_files_and_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "evaluate.py", "--env", "lrm/Critical-v0", "--policies",
           "random,variance_aware,oracle", "--episodes", "2", "--seed", "1",
           "--env-kwarg", "horizon=24", "--out", str(out), "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| variance_aware |" in res.stdout
    for name in ("episodes.csv", "summary.json", "episode.png", "costs.png"):
        assert (out / name).is_file(), name
    bad = subprocess.run([sys.executable, "evaluate.py", "--episodes", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_sb3_evaluate_policy_accepts_a_heuristic() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make("lrm/Critical-v0", horizon=24))
    pol = make_policy("mean_matching", env)
    rewards, lengths = evaluate_policy(pol, env, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [24, 24]
    assert all(np.isfinite(rewards))


def test_regimes_slopes_match_the_theory() -> None:
    """O3/O4: log-log slopes of cumulative costs are 1/2 at the critical point and 1 for the
    linear terms. 200 episodes, T in [64, 1024]; the jackknife standard error of each slope is
    computed from the same episodes and must stay below 0.045 so that the 0.1 tolerance is
    more than two standard errors (the critical slope's finite-T bias from the -0.58 sigma
    overshoot term is +0.025 on this range)."""
    res = regimes(None, horizon=1024, episodes=200, seed=0, t_min=64, progress=False)
    slopes = res["slopes"]
    assert set(slopes) == {"under-supply aux", "critical aux", "critical unused",
                           "over-supply unused"}
    for name, s in slopes.items():
        assert s["se"] < 0.045, (name, s)
        assert abs(s["measured"] - s["predicted"]) < 0.1, (name, s)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regimes", "routing-error", "variance"])
def test_experiment_cli_writes_png_and_csv(name: str, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "evaluate.py", "--experiment", name, "--out",
                          str(tmp_path), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr
    stem = name.replace("-", "_")
    assert (tmp_path / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / f"{stem}.csv").stat().st_size > 0
    assert "predicted" in res.stdout or "O5" in res.stdout


@pytest.mark.slow
def test_done_when_command_runs_in_minutes(tmp_path: Path) -> None:
    import time

    t0 = time.perf_counter()
    summary = evaluation.run_evaluation(
        "lrm/Critical-v0", ["random", "cheapest", "mean_matching", "variance_aware",
                            "variance_feedback", "oracle"], 20, 0, out_dir=tmp_path,
        progress=False)
    assert time.perf_counter() - t0 < 300
    for name, e in summary["policies"].items():
        assert e["reward"]["mean"] <= summary["policies"]["oracle"]["reward"]["mean"] + 1e-9, name


def test_saved_sb3_model_runs_through_run_evaluation(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    env = gym.make("lrm/Critical-v0", horizon=24)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu")
    model.save(tmp_path / "model.zip")
    summary = evaluation.run_evaluation("lrm/Critical-v0", [f"ppo:{tmp_path / 'model.zip'}",
                                                          "cheapest"], 2, 0,
                                      env_kwargs={"horizon": 24}, progress=False, plots=False)
    entry = summary["policies"][f"ppo:{tmp_path / 'model.zip'}"]
    assert entry["kind"] == "model"
    assert np.isfinite(entry["reward"]["mean"])
    assert entry["reward"]["mean"] <= summary["score_reference"]["oracle_reward"] + 1e-6


def test_negative_seed_is_drawn_and_recorded() -> None:
    summary = evaluation.run_evaluation("lrm/Critical-v0", ["cheapest"], 1, -1,
                                      env_kwargs={"horizon": 12}, progress=False)
    assert summary["seed"] >= 0
    assert summary["seeds"] == evaluation.evaluation_seeds(summary["seed"], 1)


# --------------------------------------------------------------------------- batched evaluation
BATCH_CASES = [
    ("lrm/Critical-v0", {"horizon": 36}),
    # Discrete action: mixture rules draw a configuration from their generator.
    ("lrm/Critical-v0", {"horizon": 36, "action_type": "discrete"}),
    # Queue (defer entries in the action) on a realistic core.
    ("lrm/Critical-v0", {"horizon": 36, "class_deadlines": (0, 2, 5), "storage_kwh": 0.01}),
]


@pytest.mark.parametrize("env_id,kwargs", BATCH_CASES)
@pytest.mark.parametrize("name", ["random", "cheapest", "mean_matching"])
def test_batched_rollouts_equal_single_env_rollouts(env_id: str, kwargs: dict,
                                                    name: str) -> None:
    """Every episode of the batched evaluation is bit for bit the single-env episode of its
    seed, for deterministic and randomised heuristics; batches split across max_batch too."""
    env = gym.make(env_id, **kwargs)
    seeds = evaluation.evaluation_seeds(3, 5)
    single = [evaluation.rollout(env_id, make_policy(name, env, seed=0), s, env=env,
                               record=k == 0) for k, s in enumerate(seeds)]
    batched = evaluation.batched_rollouts(env_id, make_policy(name, env, seed=0), seeds,
                                        env_kwargs=kwargs, record=True, max_batch=3)
    assert len(batched) == len(single)
    for k, (a, b) in enumerate(zip(single, batched)):
        assert a.keys() == b.keys(), k
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True), \
                (k, key, a[key], b[key])
    # Distinct seeds gave distinct episodes (the comparison above is not vacuous).
    assert len({r["reward"] for r in batched}) == len(seeds)


def test_batched_rollouts_of_a_closed_loop_rule_equal_single_env_rollouts() -> None:
    """variance_feedback reads the store from each row's observation: still per-episode exact."""
    kwargs = {"horizon": 36, "storage_kwh": 0.01}
    env = gym.make("lrm/Critical-v0", **kwargs)
    policy = make_policy("variance_feedback", env, seed=0)
    seeds = [5, 6, 7]
    single = [evaluation.rollout("lrm/Critical-v0", policy, s, env=env) for s in seeds]
    batched = evaluation.batched_rollouts("lrm/Critical-v0", policy, seeds, env_kwargs=kwargs)
    assert batched == single


def test_run_evaluation_results_equal_single_env_loop(tmp_path: Path) -> None:
    """run_evaluation's per-episode rows (CSV) equal a single-env rollout of each seed."""
    kwargs = {"horizon": 30}
    names = ["random", "mean_matching"]
    evaluation.run_evaluation("lrm/Critical-v0", names, 4, 11, out_dir=tmp_path,
                            env_kwargs=kwargs, progress=False, plots=False)
    with open(tmp_path / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    env = gym.make("lrm/Critical-v0", **kwargs)
    for name in names:
        policy = make_policy(name, env, seed=11)
        got = [r for r in rows if r["policy"] == name]
        assert [int(r["seed"]) for r in got] == evaluation.evaluation_seeds(11, 4)
        for r in got:
            ref = evaluation.rollout("lrm/Critical-v0", policy, int(r["seed"]), env=env)
            for key in ("reward", "aux_kwh", "waste_kwh", "leftover_kwh", "value_correct",
                        "harvest_kwh", "demand_kwh", "accuracy"):
                assert float(r[key]) == ref[key], (name, key)  # CSV keeps repr: exact
            assert int(r["correct"]) == ref["correct"] and int(r["arrived"]) == ref["arrived"]


def test_rollout_episodes_records_the_first_episode() -> None:
    from agents.vec import rollout_episodes

    env = gym.make("lrm/Critical-v0", horizon=20)
    policy = make_policy("mean_matching", env)
    res = rollout_episodes(policy, "lrm/Critical-v0", [7, 8], env_kwargs={"horizon": 20},
                           record_first=True)
    ref = evaluation.rollout("lrm/Critical-v0", policy, 7, env=env, record=True)
    for key, name in (("harvest", "harvest_kwh"), ("demand", "demand_kwh"),
                      ("storage", "storage_kwh")):
        assert res[f"trace/{name}"].shape == (20,)
        assert np.array_equal(res[f"trace/{name}"], ref[key]), key
    assert "trace/harvest_kwh" not in rollout_episodes(policy, "lrm/Critical-v0", [7],
                                                       env_kwargs={"horizon": 20})


# --------------------------------------------------------------------------- jobs and workers
def _files(out: Path) -> tuple[bytes, dict]:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("elapsed_s")  # the only field allowed to differ
    return (out / "episodes.csv").read_bytes(), summary


def test_results_do_not_depend_on_workers_or_chunks(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A job is a pure function of its arguments: one process, two worker processes and
    chunks of two episodes write the same CSV and summary, byte for byte."""
    names = ["random", "variance_feedback", "oracle"]
    kwargs = {"horizon": 24}

    def run(out: str, workers: int) -> tuple[bytes, dict]:
        evaluation.run_evaluation("lrm/Critical-v0", names, 5, 2, out_dir=tmp_path / out,
                                env_kwargs=kwargs, progress=False, plots=False,
                                workers=workers)
        return _files(tmp_path / out)

    one = run("one", 1)
    assert run("two", 2) == one
    monkeypatch.setattr(evaluation, "EVAL_BATCH", 2)  # three chunks of at most 2 episodes
    assert run("chunks", 1) == one
    rewards = {float(line.split(b",")[4]) for line in one[0].splitlines()[1:]}
    assert len(rewards) == 3 * 5, "every policy and episode must give its own reward"


@pytest.mark.parametrize("kwargs", [{"horizon": 48},
                                    {"horizon": 24, "class_deadlines": (0, 2, 5)}])
def test_oracle_of_a_batched_reset_equals_one_env_per_episode(kwargs: dict) -> None:
    """The oracle rows of a job (episodes read from one vector-env reset; with a queue, the
    general LP per episode) equal the bound of a single env reset with each seed."""
    from agents.oracle import episode_bound

    env_id, seeds = "lrm/Volatile-v0", [3, 4, 5]
    rows = evaluation.evaluate_chunk(env_id, [("oracle", None)], seeds, 0, kwargs,
                                   record=("oracle",))["oracle"]
    env = gym.make(env_id, **kwargs)
    for k, (s, row) in enumerate(zip(seeds, rows)):
        ref = episode_bound(env, s, record=k == 0)
        assert row.keys() == ref.keys()
        for key in ref:
            assert np.array_equal(np.asarray(row[key]), np.asarray(ref[key])), (k, key)
    assert len({r["reward"] for r in rows}) == len(seeds)


def test_workers_argument_is_checked() -> None:
    with pytest.raises(evaluation.UsageError, match="--workers"):
        evaluation.resolve_workers(-1, 4)
    with pytest.raises(evaluation.UsageError, match="--workers"):
        evaluation.resolve_workers(1.5, 4)  # type: ignore[arg-type]
    assert evaluation.resolve_workers(3, 2) == 2  # never more workers than jobs
    assert 1 <= evaluation.resolve_workers(0, 64) <= 64


def test_batched_fast_paths_respect_overridden_rules() -> None:
    """A subclass that changes ``act`` or ``mixture`` loses the parent's batched shortcut
    (``act_rows``, ``static``): its batched episodes still equal single-env rollouts."""
    from agents.heuristics import MeanMatchingPolicy, RandomPolicy

    class Tilted(MeanMatchingPolicy):  # mixture depends on the observation: not static
        def mixture(self, observation: np.ndarray) -> np.ndarray:
            x = super().mixture(observation).copy()
            x[:, 0] += 0.5 * abs(float(observation[0]))
            return x / x.sum(axis=1, keepdims=True)

    class Halved(RandomPolicy):  # act changed, act_rows inherited: must not be used
        def act(self, observation: np.ndarray) -> np.ndarray:
            return (0.5 * super().act(observation)).astype(np.float32)

    kwargs = {"horizon": 24}
    env = gym.make("lrm/Critical-v0", **kwargs)
    seeds = [4, 5, 6]
    for cls in (Tilted, Halved):
        single = [evaluation.rollout("lrm/Critical-v0", cls(env, seed=0), s, env=env)
                  for s in seeds]
        batched = evaluation.batched_rollouts("lrm/Critical-v0", cls(env, seed=0), seeds,
                                            env_kwargs=kwargs)
        assert batched == single, cls.__name__
