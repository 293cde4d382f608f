"""The energy ledger and task routing of the core: O1 conservation on every path, idle power,
monotonicity, pure configurations and mixture assignment."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from envs.config import resolve_config
from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH
from tests.helpers import copy_generators, info_array, pure_mixture, rollout

#: Relative tolerance of exact identities (float64 rounding over a few hundred slots).
EXACT = 1e-12


def _random_mixture_run(cfg, n_copies: int, seed: int) -> dict[str, np.ndarray]:
    """Episodes on the core under a fresh random mixture per copy and slot."""
    core = FleetCore(cfg, n_copies)
    for b, gens in enumerate(copy_generators(seed, n_copies)):
        core.reset_copy(b, *gens)
    rng = np.random.default_rng(seed + 1)
    keys = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
            "arrived", "tokens_by_model")
    rec: dict[str, list] = {k: [] for k in keys}
    for _ in range(cfg.horizon):
        # Sparse Dirichlet: some slots nearly pure, some spread (exercise every path).
        mix = rng.dirichlet(np.full(cfg.n_configs, 0.3), size=(n_copies, cfg.n_classes))
        res = core.step(mixtures=mix)
        for k in keys:
            rec[k].append(np.array(getattr(res, k)))
    return {k: np.stack(v, axis=1) for k, v in rec.items()}


STORES = {"unbounded": math.inf, "finite": 0.006, "zero": 0.0}
EFFICIENCIES = {"ideal": (1.0, 1.0), "lossy": (0.9, 0.8)}


@pytest.mark.parametrize("store", list(STORES))
@pytest.mark.parametrize("eff", list(EFFICIENCIES))
@pytest.mark.parametrize("preset", ["critical", "volatile"])
def test_o1_conservation_on_random_episodes(store, eff, preset):
    eta_c, eta_d = EFFICIENCIES[eff]
    s_max = STORES[store]
    s0 = 0.0 if s_max == 0.0 else 0.002
    cfg = resolve_config(preset, horizon=300, storage_kwh=s_max, initial_storage_kwh=s0,
                         charge_efficiency=eta_c, discharge_efficiency=eta_d,
                         idle_power_kw=0.01)
    seed = 100 * list(STORES).index(store) + 10 * list(EFFICIENCIES).index(eff) + len(preset)
    r = _random_mixture_run(cfg, n_copies=16, seed=seed)
    h, d, u, w, loss, s = (r[k] for k in ("harvest_kwh", "demand_kwh", "aux_kwh",
                                          "waste_kwh", "loss_kwh", "storage_kwh"))
    # Every term is a non-negative energy; the store stays within [0, S_max].
    for x in (h, d, u, w, loss, s):
        assert np.all(x >= 0.0) and np.all(np.isfinite(x))
    assert np.all(s <= s_max)
    assert np.all(np.minimum(u, w) == 0.0)  # never both drawn and wasted in one slot
    # Identity on every prefix of every path: sum H - sum D = S_t - S_0 + sum W - sum U + loss.
    lhs = np.cumsum(h - d, axis=1)
    rhs = s - s0 + np.cumsum(w - u + loss, axis=1)
    scale = np.cumsum(h + d, axis=1)
    assert np.max(np.abs(lhs - rhs) / scale) < EXACT
    # Each slot on its own.
    prev = np.concatenate([np.full((s.shape[0], 1), s0), s[:, :-1]], axis=1)
    assert np.max(np.abs((h - d) - (s - prev + w - u + loss)) / (h + d)) < EXACT
    # The paths exercised what they claim to.
    assert u.sum() > 0
    if eff == "ideal":
        assert np.all(loss == 0.0)
    elif store != "zero":
        assert loss.sum() > 0
    if store == "unbounded":
        assert np.all(w == 0.0)
    else:
        assert w.sum() > 0
    if store == "zero":
        assert np.all(s == 0.0)
        assert np.array_equal(u - w, np.maximum(d - h, 0) - np.maximum(h - d, 0))


def test_o1_conservation_through_the_env(env_id, action_type):
    env = gym.make(env_id, action_type=action_type, storage_kwh=0.004)
    rng = np.random.default_rng(3)
    space = env.action_space
    n = env.unwrapped.config.horizon
    if action_type == "discrete":
        actions = [int(a) for a in rng.integers(0, space.n, n)]
    else:
        actions = [rng.uniform(-1, 1, space.shape).astype(np.float32) for _ in range(n)]
    out = rollout(env, actions, seed=4)
    f = {k: info_array(out["infos"], k) for k in ("harvest_kwh", "demand_kwh", "aux_kwh",
                                                     "waste_kwh", "loss_kwh", "storage_kwh")}
    lhs = f["harvest_kwh"].sum() - f["demand_kwh"].sum()
    rhs = f["storage_kwh"][-1] + f["waste_kwh"].sum() - f["aux_kwh"].sum() + f["loss_kwh"].sum()
    assert abs(lhs - rhs) < EXACT * (f["harvest_kwh"].sum() + f["demand_kwh"].sum())
    # The first slot starts from the configured S_0 (reset info reports it).
    assert out["infos"][0]["storage_kwh"] == env.unwrapped.config.initial_storage_kwh


@pytest.mark.parametrize("idle_kw", [0.5, 3.0])
def test_idle_power_adds_exactly_its_energy_per_slot(idle_kw):
    base = resolve_config("critical", horizon=100, slot_minutes=7.5)
    runs = [_random_mixture_run(resolve_config(base, idle_power_kw=p), 4, seed=12)
            for p in (0.0, idle_kw)]
    assert np.array_equal(runs[0]["arrived"], runs[1]["arrived"])
    assert np.array_equal(runs[0]["tokens_by_model"], runs[1]["tokens_by_model"])
    extra = runs[1]["demand_kwh"] - runs[0]["demand_kwh"]
    expected = idle_kw * 7.5 / 60.0
    assert np.max(np.abs(extra - expected)) <= 1e-12 * expected


def _ledger_under(cfg, actions, seed):
    env = gym.make("lrm/Critical-v0", config=cfg)
    out = rollout(env, actions, seed)
    return {k: info_array(out["infos"], k) for k in ("harvest_kwh", "demand_kwh", "aux_kwh",
                                                        "waste_kwh", "storage_kwh")}


def test_more_harvest_never_raises_auxiliary_draw():
    cfg = resolve_config("volatile", horizon=288, storage_kwh=0.01)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 27).astype(np.float32) for _ in range(cfg.horizon)]
    runs = [_ledger_under(resolve_config(cfg, provisioning=p), actions, seed=21)
            for p in (0.7, 0.9, 1.0, 1.3)]
    for lo, hi in zip(runs, runs[1:]):
        assert np.all(hi["harvest_kwh"] >= lo["harvest_kwh"])
        assert np.array_equal(hi["demand_kwh"], lo["demand_kwh"])  # same tasks, same actions
        assert np.all(hi["aux_kwh"] <= lo["aux_kwh"] + 1e-15)
        assert np.all(hi["storage_kwh"] >= lo["storage_kwh"] - 1e-15)
    assert runs[0]["aux_kwh"].sum() > runs[-1]["aux_kwh"].sum() > 0  # strictly, overall


def test_larger_store_never_raises_aux_plus_waste():
    cfg = resolve_config("volatile", horizon=288)
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1, 1, 27).astype(np.float32) for _ in range(cfg.horizon)]
    runs = [_ledger_under(resolve_config(cfg, storage_kwh=c), actions, seed=22)
            for c in (0.0, 0.002, 0.01, 0.05, math.inf)]
    for small, big in zip(runs, runs[1:]):
        assert np.array_equal(small["harvest_kwh"], big["harvest_kwh"])
        assert np.all(big["aux_kwh"] <= small["aux_kwh"] + 1e-15)
        cum_small = np.cumsum(small["aux_kwh"] + small["waste_kwh"])
        cum_big = np.cumsum(big["aux_kwh"] + big["waste_kwh"])
        assert np.all(cum_big <= cum_small + 1e-12 * cum_small[-1])
    total = [r["aux_kwh"].sum() + r["waste_kwh"].sum() for r in runs]
    assert total[0] > total[2] > total[-1]


@pytest.mark.parametrize("how", ["configs", "mixture"])
def test_pure_configuration_gets_every_task(how):
    cfg = resolve_config("critical", horizon=40)
    e_tok = np.asarray(cfg.model_j_per_token)
    for j in range(cfg.n_configs):
        model = j // len(cfg.token_budgets)
        budget = cfg.token_budgets[j % len(cfg.token_budgets)]
        core = FleetCore(cfg, 3)
        for b, gens in enumerate(copy_generators(40 + j, 3)):
            core.reset_copy(b, *gens)
        for _ in range(cfg.horizon):
            if how == "configs":
                res = core.step(configs=np.full(3, j))
            else:
                res = core.step(mixtures=np.broadcast_to(pure_mixture(cfg, j), (3, 3, 9)))
            tok = res.tokens_by_model
            others = np.delete(tok, model, axis=1)
            assert np.all(others == 0), (j, tok)
            # Every task ran at least one step and at most the budget.
            assert np.all(tok[:, model] <= res.arrived * budget)
            assert np.all(tok[:, model] >= res.arrived * cfg.step_tokens)
            assert np.allclose(res.demand_kwh, tok[:, model] * e_tok[model] / J_PER_KWH,
                               rtol=1e-13, atol=0)
            # Hard tasks need 160 steps of 25 tokens: never correct under a 1k budget.
            if budget < cfg.class_skills[2] * cfg.step_tokens:
                assert np.all(res.correct_by_class[:, 2] == 0)


def test_per_class_routing_uses_only_the_chosen_models():
    cfg = resolve_config("critical", horizon=50)
    pi = np.zeros((3, 9))
    pi[0, 0], pi[1, 4], pi[2, 8] = 1.0, 1.0, 1.0  # easy -> 8b, medium -> 32b, hard -> 70b
    core = FleetCore(cfg, 4)
    for b, gens in enumerate(copy_generators(3, 4)):
        core.reset_copy(b, *gens)
    for _ in range(cfg.horizon):
        arr = core.current_arrivals()
        res = core.step(mixtures=np.broadcast_to(pi, (4, 3, 9)))
        assert np.array_equal(res.tokens_by_model > 0, arr > 0)


def test_mixture_assignment_frequencies_match_the_mixture():
    """Each task goes to configuration j with probability pi[c, j] (its latent quantile).

    Binomial counts: |n_j - N pi_j| <= 4 sqrt(N pi_j (1 - pi_j)) for every (class, j)."""
    cfg = resolve_config("critical", horizon=200)
    rng = np.random.default_rng(5)
    pi = rng.dirichlet(np.ones(cfg.n_configs), size=cfg.n_classes)
    pi[2] = 0.0
    pi[2, [1, 7]] = (0.25, 0.75)  # zero weights must get no task at all
    B = 50
    core = FleetCore(cfg, B)
    for b, gens in enumerate(copy_generators(6, B)):
        core.reset_copy(b, *gens)
    counts = np.zeros((cfg.n_classes, cfg.n_configs))
    mix = np.broadcast_to(pi, (B, 3, 9))
    for _ in range(cfg.horizon):
        j = core.assign(mix)
        cls = core.cls[core._rows, core.t]
        for c in range(cfg.n_classes):
            counts[c] += np.bincount(j[cls == c], minlength=cfg.n_configs)
        core.step(mixtures=mix)
    n = counts.sum(axis=1, keepdims=True)
    se = np.sqrt(n * pi * (1 - pi))
    assert np.all(np.abs(counts - n * pi) <= 4 * se + 1e-9), counts / n - pi
    assert np.all(counts[2, pi[2] == 0] == 0)


def test_task_buffer_growth_keeps_trajectories():
    """A core whose per-slot task buffer is too small grows it at reset; the episode is the
    same as with a buffer sized up front."""
    cfg = resolve_config("critical", horizon=30)
    gens_a, gens_b = copy_generators(8, 2), copy_generators(8, 2)
    sized = FleetCore(cfg, 2)
    small = FleetCore(cfg, 2)
    small._alloc(1)
    small.A = 1
    for b in range(2):
        sized.reset_copy(b, *gens_a[b])
        small.reset_copy(b, *gens_b[b])
    assert 1 < small.A <= sized.A
    mix = np.broadcast_to(np.full((3, 9), 1 / 9), (2, 3, 9))
    for _ in range(cfg.horizon):
        r1, r2 = sized.step(mixtures=mix), small.step(mixtures=mix)
        for field in r1.__dataclass_fields__:
            assert np.array_equal(getattr(r1, field), getattr(r2, field)), field


def test_core_rejects_bad_batch_size_and_stepping_past_the_end():
    cfg = resolve_config("critical", horizon=2)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size"):
            FleetCore(cfg, bad)
    core = FleetCore(cfg, 1)
    core.reset_copy(0, *copy_generators(0, 1)[0])
    core.step(configs=np.array([0]))
    core.step(configs=np.array([0]))
    with pytest.raises(RuntimeError, match="reset"):
        core.step(configs=np.array([0]))


def test_task_latents_drawn_into_an_array_equal_a_new_draw():
    """``sample_task_latents(out=...)`` (a reset's chunk buffer) gives the values and the
    generator state of a fresh draw; a wrong shape is refused."""
    from envs.processes import sample_task_latents

    a, b = np.random.default_rng(3), np.random.default_rng(3)
    buf = np.full((7, 3), -1.0, dtype=np.float32)
    assert sample_task_latents(a, 7, out=buf) is buf
    np.testing.assert_array_equal(buf, sample_task_latents(b, 7))
    assert a.random() == b.random()  # both generators moved on by the same draws
    with pytest.raises(ValueError, match=r"out must have shape \(5, 3\)"):
        sample_task_latents(a, 5, out=buf)


@pytest.mark.parametrize("overrides", [{"horizon": 70_000}, {"arrival_rate": 5000.0}])
def test_long_or_busy_episodes_step_on_every_path(overrides):
    """Large accepted configs run: the single env and the one-copy vector env step with a
    continuous action (and the vector env equals the single env)."""
    env = gym.make("lrm/Critical-v0", **overrides)
    venv = gym.make_vec("lrm/Critical-v0", num_envs=1, vectorization_mode="vector_entry_point",
                        **overrides)
    obs, _ = env.reset(seed=3)
    vobs, _ = venv.reset(seed=3)
    np.testing.assert_array_equal(obs, vobs[0])
    a = np.linspace(-1, 1, env.action_space.shape[0], dtype=np.float32)
    for _ in range(3):
        obs, reward, _, _, info = env.step(a)
        vobs, vreward, _, _, vinfo = venv.step(a[None])
        np.testing.assert_array_equal(obs, vobs[0])
        assert reward == vreward[0] and info["arrived"] == vinfo["arrived"][0] > 0
    env.close()
    venv.close()


@pytest.mark.parametrize("overrides", [{"horizon": 10_000_000, "arrival_rate": 1e6},
                                       {"horizon": 10_000_000}])
def test_oversized_episode_refused_at_construction(overrides):
    """A config whose episode would not fit the task-buffer limit is refused when the env is
    made, naming the fields and the limit (not a MemoryError at reset)."""
    cfg = resolve_config("critical", **overrides)  # within each field's own range
    with pytest.raises(ValueError, match=r"horizon=10000000 with arrival_rate=.*limit of 1 GiB"):
        FleetCore(cfg, 1)
    with pytest.raises(ValueError, match="horizon"):
        gym.make("lrm/Critical-v0", **overrides)
