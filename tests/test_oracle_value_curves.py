"""The value-curve hindsight LP of envs without a queue (agents.oracle.value_curves)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the lrm/* ids)
from agents import POLICIES, make_policy
from agents.evaluation import rollout
from agents.oracle import bound_row, episode_bound, solve_episode
from agents.oracle.value_curves import applies, solve_value_curves, value_curve_bound
from envs.reward import reward_weights


def task_hull_bound(env: gym.Env, seed: int, record: bool = False) -> dict:
    """The bound row of the task-hull LP (the general LP without a queue)."""
    env.reset(seed=seed)
    return bound_row(solve_episode(env.unwrapped.core, 0), record)

# Regimes where energy binds (scarce supply, expensive auxiliary energy), finite stores, lossy
# efficiencies, idle power, free waste; the action type does not enter the bound.
CASES = [
    ("lrm/Critical-v0", {}),
    ("lrm/Volatile-v0", {"w_aux": 40.0, "storage_kwh": 0.05, "charge_efficiency": 0.85,
                         "discharge_efficiency": 0.9, "idle_power_kw": 0.005}),
    ("lrm/OverSupply-v0", {"w_aux": 100.0, "w_waste": 0.0, "w_leftover": 0.0,
                           "provisioning": 0.6}),
    ("lrm/UnderSupply-v0", {"w_aux": 50.0, "provisioning": 0.4, "harvest_cv": 1.5}),
    ("lrm/Critical-v0", {"w_aux": 30.0, "w_correct": 0.5, "storage_kwh": 0.01,
                         "initial_storage_kwh": 0.005, "action_type": "discrete"}),
    ("lrm/SolarWinter-v0", {"w_aux": 20.0, "storage_kwh": 0.2, "initial_storage_kwh": 0.1,
                            "w_waste": 2.0}),
    # Optima that draw auxiliary energy (cheap aux, lossy finite store, idle power) ...
    ("lrm/UnderSupply-v0", {"provisioning": 0.1, "w_aux": 0.2, "idle_power_kw": 0.01,
                            "charge_efficiency": 0.9, "discharge_efficiency": 0.8,
                            "storage_kwh": 0.02}),
    # ... and that leave energy in the store (leftover cheaper than waste).
    ("lrm/OverSupply-v0", {"provisioning": 3.0, "w_waste": 2.0, "w_leftover": 0.3,
                           "harvest_cv": 1.0}),
]
# Both LPs are solved by HiGHS to ~1e-7 relative (primal/dual feasibility tolerances); two
# optima of the same LP may differ by that much, not by more.
REL = 1e-7


@pytest.mark.parametrize(("env_id", "kwargs"), CASES)
def test_reduced_lp_equals_the_general_lp(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    for seed in (0, 5):
        env.reset(seed=seed)
        core = env.unwrapped.core
        general = solve_episode(core, 0)
        fast = solve_value_curves(core, 0)
        assert fast is not None
        assert fast["reward"] == pytest.approx(general.reward, rel=REL, abs=REL), (env_id, seed)
        assert value_curve_bound(core, 0) == pytest.approx(fast["reward"], rel=1e-12)
        assert fast["arrived"] == general.arrived
        # The reported plan earns exactly the bound under the reward weights.
        w = reward_weights(core)
        terms = (w["value_correct"] * fast["value_correct"] + w["aux_kwh"] * fast["aux_kwh"]
                 + w["waste_kwh"] * fast["waste_kwh"] + w["leftover_kwh"] * fast["leftover_kwh"])
        assert terms == pytest.approx(fast["reward"], rel=REL, abs=REL)
        assert 0 <= fast["correct"] <= fast["arrived"]
        if kwargs.get("w_aux") == 0.2:
            assert fast["aux_kwh"] > 0.1, "this case must exercise the auxiliary draw"
        if kwargs.get("w_leftover") == 0.3:
            assert fast["leftover_kwh"] > 0.001, "this case must exercise the leftover"


def test_reduced_plan_conserves_energy() -> None:
    env = gym.make("lrm/UnderSupply-v0", w_aux=50.0, provisioning=0.4)
    env.reset(seed=2)
    sol = solve_value_curves(env.unwrapped.core)
    lhs = sol["harvest_kwh"].sum() - sol["demand_kwh"].sum()
    rhs = sol["storage_kwh"][-1] + sol["waste_kwh"] - sol["aux_kwh"]
    assert lhs == pytest.approx(rhs, abs=1e-7 * sol["harvest_kwh"].sum())


@pytest.mark.parametrize(("env_id", "kwargs"), [CASES[1], CASES[3]])
def test_reduced_bound_beats_or_ties_every_policy(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, horizon=96, **kwargs)
    for seed in (0, 1):
        bound = episode_bound(env, seed)["reward"]
        for name in sorted(POLICIES):
            r = rollout(env_id, make_policy(name, env, seed=seed), seed, env=env)["reward"]
            # Solver tolerances are ~1e-7 relative; the margin below is 1e-6 of the bound.
            assert r <= bound + 1e-6 * abs(bound), f"{name} (seed {seed}): {r} > bound {bound}"


def test_queue_envs_fall_back() -> None:
    env = gym.make("lrm/R1Trace-v0")
    assert env.unwrapped.config.queue_enabled
    env.reset(seed=0)
    assert solve_value_curves(env.unwrapped.core) is None
    assert value_curve_bound(env.unwrapped.core) is None
    assert not applies(env.unwrapped.core)
    assert episode_bound(env, 0) == bound_row(solve_episode(env.unwrapped.core, 0))
    caps = gym.make("lrm/Critical-v0", model_tokens_per_slot=(1e6,) * 3)
    caps.reset(seed=0)
    assert solve_value_curves(caps.unwrapped.core) is None


def test_entry_point_takes_the_value_curves_without_a_queue() -> None:
    env = gym.make("lrm/Volatile-v0", **CASES[1][1])
    general = task_hull_bound(env, 3, record=True)
    fast = episode_bound(env, 3, record=True)
    direct = bound_row(solve_value_curves(env.unwrapped.core, 0), record=True)
    assert fast.keys() == direct.keys()
    assert all(np.array_equal(fast[k], direct[k]) for k in fast)
    assert set(fast) == set(general)
    assert fast["reward"] == pytest.approx(general["reward"], rel=REL)
    assert fast["harvest_kwh"] == general["harvest_kwh"]
    assert fast["storage"].shape == general["storage"].shape


def test_direct_highs_and_linprog_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.oracle.value_curves as of

    env = gym.make(*CASES[3][:1], **CASES[3][1])
    env.reset(seed=4)
    core = env.unwrapped.core
    monkeypatch.setattr(of, "solve_lp", of._solve_linprog)
    via_linprog = of.solve_value_curves(core)["reward"]
    monkeypatch.setattr(of, "solve_lp", of._solve_core if of._hc is not None else of._solve_linprog)
    assert of.solve_value_curves(core)["reward"] == pytest.approx(via_linprog, rel=REL)


def test_wired_into_run_evaluation(tmp_path) -> None:
    from agents import evaluation

    summary = evaluation.run_evaluation("lrm/Critical-v0", ["cheapest", "oracle"], 2, 5,
                                      out_dir=tmp_path, env_kwargs={"horizon": 48},
                                      progress=False)
    env = gym.make("lrm/Critical-v0", horizon=48)
    general = [task_hull_bound(env, s)["reward"] for s in summary["seeds"]]
    # Only the optimum is unique: the ledger of two optimal plans may differ.
    assert (summary["policies"]["oracle"]["reward"]["mean"]
            == pytest.approx(sum(general) / len(general), rel=REL))
    assert 0.0 <= summary["policies"]["oracle"]["accuracy"]["mean"] <= 1.0
    assert (tmp_path / "episode.png").is_file()
