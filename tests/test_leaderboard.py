"""The leaderboard's figures for a seed-averaged agent, its Markdown and combined grids
(the end-to-end run on a trained grid is in tests/test_grid.py, marked slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from agents.cli import UsageError
from agents.leaderboard import load_grids, seed_averaged, to_markdown


def test_seed_average_is_paired_over_episodes():
    rng = np.random.default_rng(7)
    best = rng.normal(100.0, 5.0, size=20)
    per_seed = [best + rng.normal(mu, 1.0, size=20) for mu in (0.9, -0.1, 0.8)]
    out = seed_averaged(per_seed, list(best), random_reward=50.0, oracle_reward=150.0)
    avg = np.mean(per_seed, axis=0)
    d = avg - best
    half = stats.t.ppf(0.975, 19) * d.std(ddof=1) / math.sqrt(20)
    assert out["diff_vs_best"] == pytest.approx(d.mean(), rel=1e-12)
    assert out["diff_ci"] == pytest.approx(half, rel=1e-9)
    assert out["reward"] == pytest.approx(avg.mean(), rel=1e-12)
    assert out["score"] == pytest.approx((avg.mean() - 50.0) / 100.0, rel=1e-12)
    means = np.mean(per_seed, axis=1)
    assert out["seed_sd"] == pytest.approx(means.std(ddof=1), rel=1e-12)
    assert out["score_sd"] == pytest.approx(means.std(ddof=1) / 100.0, rel=1e-12)
    # each seed's own paired difference, in seed order
    for (m, h), x in zip(out["seed_diffs"], per_seed):
        e = x - best
        assert m == pytest.approx(e.mean(), rel=1e-12)
        assert h == pytest.approx(stats.t.ppf(0.975, 19) * e.std(ddof=1) / math.sqrt(20),
                                  rel=1e-9)


def test_seed_average_with_one_seed_has_no_spread_and_bad_shapes_are_refused():
    out = seed_averaged([[1.0, 2.0, 3.0]], [0.0, 0.0, 0.0], 0.0, 10.0)
    assert out["seed_sd"] is None and out["score_sd"] is None
    assert out["diff_vs_best"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="per_seed"):
        seed_averaged([[1.0, 2.0]], [0.0, 0.0, 0.0], 0.0, 10.0)


def _grid(path, env, seeds):
    path.mkdir()
    rows = []
    for s in seeds:
        d = path / f"{env.replace('/', '_')}__ppo__seed{s}"
        d.mkdir()
        (d / "model.zip").write_bytes(b"")
        (d / "config.json").write_text(json.dumps({"train": {"timesteps": 1000}}))
        rows.append({"env": env, "algo": "ppo", "seed": s, "status": "done",
                     "run_dir": str(d)})
    (path / "trials.json").write_text(json.dumps(rows))
    return path


def test_grids_combine_and_a_run_in_two_grids_is_refused(tmp_path):
    a = _grid(tmp_path / "a", "lrm/Critical-v1", [0, 1])
    b = _grid(tmp_path / "b", "lrm/SolarDay-v1", [0])
    runs = load_grids([a, b])
    assert [(r["env"], r["seed"], r["grid"]) for r in runs] == [
        ("lrm/Critical-v1", 0, a), ("lrm/Critical-v1", 1, a), ("lrm/SolarDay-v1", 0, b)]
    c = _grid(tmp_path / "c", "lrm/Critical-v1", [1])
    with pytest.raises(UsageError, match="seed 1 is in both"):
        load_grids([a, c])


def test_markdown_overview_names_every_agent_row(tmp_path):
    common = {"train_env": "lrm/SolarDay-v1", "episodes": 20,
              "best_heuristic": "variance_feedback"}
    rows = []
    for test_env, held in (("lrm/SolarDay-v1", False), ("lrm/SolarWinter-v1", True)):
        c = {**common, "test_env": test_env, "held_out": held}
        rows += [{**c, "policy": "variance_feedback", "kind": "heuristic", "timesteps": "",
                  "seeds": "", "reward": 170.0, "reward_ci": 4.0, "seed_sd": None,
                  "diff_vs_best": 0.0, "diff_ci": 0.0, "score": 0.48, "score_sd": None,
                  "seed_diffs": "", "seeds_above": ""},
                 {**c, "policy": "ppo", "kind": "model", "timesteps": "200000",
                  "seeds": "0 1 2", "reward": 173.0, "reward_ci": 3.7, "seed_sd": 0.4,
                  "diff_vs_best": 2.75, "diff_ci": 0.9, "score": 0.5, "score_sd": 0.01,
                  "seed_diffs": "+2.31 ± 1.17; +3.00 ± 0.89; +2.94 ± 1.36",
                  "seeds_above": "3/3"}]
    md = to_markdown(rows, [tmp_path / "g1", tmp_path / "g2"], "python -m agents.leaderboard")
    assert "from the grids `g1`, `g2`" in md
    overview = md.split("## Overview")[1].split("## trained on")[0]
    assert overview.count("| ppo |") == 2
    assert "`lrm/SolarWinter-v1` (held out) | ppo | +2.75 ± 0.90 | 3/3 | 0.500 | " \
           "variance_feedback (0.480) |" in overview
    assert "+2.31 ± 1.17; +3.00 ± 0.89; +2.94 ± 1.36" in md
