"""The compiled kernel of the core gives exactly (bit for bit) what the numpy reference of
``tests/reference_core.py`` gives, on every action path, store and arrival density."""

from __future__ import annotations

import numpy as np
import pytest

from envs import kernel
from envs.actions import action_to_mixture, action_weights
from envs.config import resolve_config
from envs.dynamics import FleetCore
from tests.reference_core import (
    reference_leftover_and_reward,
    reference_observe,
    reference_observe_v1,
    reference_step,
)

#: Presets plus variants that exercise every branch of the ledger and the reward.
CONFIGS = {
    "critical": resolve_config("critical", horizon=40),
    "volatile-small-store": resolve_config("volatile", horizon=40, storage_kwh=0.01),
    "lossy-idle": resolve_config("undersupply", horizon=40, storage_kwh=0.05,
                                 charge_efficiency=0.9, discharge_efficiency=0.85,
                                 idle_power_kw=0.2, initial_storage_kwh=0.01),
    "values": resolve_config("oversupply", horizon=40, storage_kwh=0.03,
                             class_values=(0.3, 1.7, 4.1), arrival_rate=7.5),
    "many-configs": resolve_config("critical", horizon=20,  # J - 1 = 14: two 8-wide words
                                   token_budgets=(512, 1024, 4096, 8192, 16384)),
    "one-config": resolve_config("critical", horizon=20, model_names=("m",),
                                 model_params_b=(8.0,), model_j_per_token=(0.2,),
                                 model_step_success=(0.5,), model_skill_coverage=(0.99,),
                                 token_budgets=(2048,)),
    # Most slots without tasks, in one copy or in all: empty segments in the batched step.
    "sparse": resolve_config("critical", horizon=40, arrival_rate=0.3),
    "very-sparse": resolve_config("critical", horizon=40, arrival_rate=0.05),
    "no-store": resolve_config("critical", horizon=30, storage_kwh=0.0),
    "lossy-unbounded": resolve_config("volatile", horizon=30, charge_efficiency=0.8,
                                      discharge_efficiency=0.9, initial_storage_kwh=0.02),
    "solar": resolve_config("solar_day", horizon=40),
    "wind": resolve_config("wind_winter", horizon=40),
    "critical-v1": resolve_config("critical", horizon=40, observation_version=1),
    "small-store-v1": resolve_config("volatile", horizon=30, storage_kwh=0.01,
                                     observation_version=1),
}
FIELDS = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
          "arrived", "served", "correct", "dropped", "value_correct")
STATE = ("t", "storage", "last_harvest", "last_demand", "last_aux", "last_waste", "net_mean",
         "net_m2", "harvest_prev", "harvest_trend")


def _reset(core: FleetCore, seed: int) -> None:
    for b in range(core.B):
        core.reset_copy(b, *np.random.default_rng([seed, b]).spawn(3))


def _random_mixtures(rng: np.random.Generator, cfg, b: int) -> np.ndarray:
    a = rng.uniform(-1, 1, (b, cfg.n_classes * cfg.n_configs))
    a[rng.random(a.shape) < 0.6] = -1.0  # sparse rows, pure rows and all -1 rows occur
    return action_to_mixture(cfg, a)


def _same(x, y) -> bool:
    return np.asarray(x).tobytes() == np.asarray(y).tobytes()


def _random_actions(rng: np.random.Generator, cfg, b: int) -> np.ndarray:
    a = rng.uniform(-1, 1, (b, cfg.n_classes * cfg.n_configs)).astype(np.float32)
    a[rng.random(a.shape) < 0.5] = -1.0  # sparse rows and all -1 rows occur
    a[rng.random(a.shape) < 0.05] = 1.0
    return a


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind", ["action", "mixture", "config"])
@pytest.mark.parametrize("b", [1, 3])
def test_kernel_equals_numpy_reference(name: str, kind: str, b: int) -> None:
    """Kernel step (raw actions, mixture weights or pure configurations) against the numpy
    reference on a second core with the same draws, over two episodes and a half (copy 1
    reset mid-episode, so copies are at different slots): every result, reward term, state
    array and observation feature, bit for bit."""
    cfg = CONFIGS[name]
    ker, ref = FleetCore(cfg, b), FleetCore(cfg, b)
    rng = np.random.default_rng(7)
    n_c = cfg.n_classes
    for episode in range(2):
        _reset(ker, episode)
        _reset(ref, episode)
        assert _same(ker.obs[:, :10 + n_c], reference_observe(ref))
        if cfg.observation_version:
            assert _same(ker.obs[:, -9:], reference_observe_v1(ref))
        for k in range(cfg.horizon + (cfg.horizon // 2 if episode else 0)):
            if episode and k == cfg.horizon // 3 and b > 1:
                for core in (ker, ref):
                    core.reset_copy(1, *np.random.default_rng([99, k]).spawn(3))
            if np.any(ref.t >= cfg.horizon):
                break
            if kind == "action":
                a = _random_actions(rng, cfg, b)
                assert ker.run(kernel.MODE_ACTION, a.reshape(-1), ker._no_configs) == kernel.OK
                res = ker.result()
                want = reference_step(ref, mixtures=action_weights(cfg, a))
            elif kind == "mixture":
                mix = _random_mixtures(rng, cfg, b)
                res = ker.step(mixtures=mix)
                want = reference_step(ref, mixtures=mix)
            else:
                j = rng.integers(0, cfg.n_configs, b)
                res = ker.step(configs=j)
                want = reference_step(ref, configs=j)
            for f in (*FIELDS, "correct_by_class", "tokens_by_model"):
                assert _same(getattr(res, f), getattr(want, f)), (k, f)
            for f in STATE:
                assert _same(getattr(ker, f), getattr(ref, f)), (k, f)
            leftover, reward = reference_leftover_and_reward(ref, want)
            assert _same(ker.res_f[:, 7], leftover) and _same(ker.res_f[:, 8], reward)
            assert _same(ker.res_i[:, 5] == 1, ref.t >= cfg.horizon)
            assert _same(ker.obs[:, :10 + n_c], reference_observe(ref))
            if cfg.observation_version:
                assert _same(ker.obs[:, -9:], reference_observe_v1(ref))
        if b == 1:
            with pytest.raises(RuntimeError, match="reset"):
                ker.step(configs=np.array([0]))


def test_kernel_rejects_bad_actions_before_any_change() -> None:
    """Out-of-range or NaN entries in any copy: the kernel returns BAD_ACTION and leaves
    every copy's state as it was; the envs raise the error naming the range."""
    import gymnasium as gym

    cfg = CONFIGS["critical"]
    core = FleetCore(cfg, 3)
    _reset(core, 0)
    before = {f: getattr(core, f).copy() for f in STATE}
    J = cfg.n_configs
    for edge in (np.nan, np.inf, -np.inf, np.nextafter(1.0, 2.0), np.nextafter(-1.0, -2.0)):
        for pos in (0, J, 3 * cfg.n_classes * J - 1):
            a = np.zeros(3 * cfg.n_classes * J)
            a[pos] = edge
            assert core.run(kernel.MODE_ACTION, a, core._no_configs) == kernel.BAD_ACTION
            for f in STATE:
                assert _same(getattr(core, f), before[f]), f
    env = gym.make("lrm/Critical-v0", horizon=20)
    env.reset(seed=0)
    bad = np.zeros(env.action_space.shape, dtype=np.float32)
    bad[4] = np.nan
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5))
    obs, *_ = env.step(np.zeros(env.action_space.shape).tolist())  # a list is accepted
    assert obs.shape == env.observation_space.shape


@pytest.mark.parametrize("name", ["critical", "lossy-idle", "one-config"])
def test_pure_configs_equal_one_hot_mixtures(name: str) -> None:
    """The configs= path equals the generic mixtures= path with one-hot mixtures."""
    cfg = CONFIGS[name]
    b = 6
    a, m = FleetCore(cfg, b), FleetCore(cfg, b)
    _reset(a, 1)
    _reset(m, 1)
    rng = np.random.default_rng(2)
    for _ in range(cfg.horizon):
        j = rng.integers(0, cfg.n_configs, b)
        onehot = np.zeros((b, cfg.n_classes, cfg.n_configs))
        onehot[np.arange(b), :, j] = 1.0
        ra, rm = a.step(configs=j), m.step(mixtures=onehot)
        for f in (*FIELDS, "correct_by_class", "tokens_by_model"):
            assert _same(getattr(ra, f), getattr(rm, f)), f


@pytest.mark.parametrize("name", ["volatile-small-store", "sparse", "many-configs"])
def test_batched_copy_equals_single_core(name: str) -> None:
    """Copy b of a batched core (sliced and gathered paths) equals a B = 1 core on the same
    draws: the batch does not change a copy's trajectory."""
    cfg = CONFIGS[name]
    b = 4
    big = FleetCore(cfg, b)
    singles = [FleetCore(cfg, 1) for _ in range(b)]
    for i in range(b):
        big.reset_copy(i, *np.random.default_rng([9, i]).spawn(3))
        singles[i].reset_copy(0, *np.random.default_rng([9, i]).spawn(3))
    rng = np.random.default_rng(4)
    for k in range(cfg.horizon):
        if k == 5:  # desynchronise copy 2: the step then gathers per-copy slots
            big.reset_copy(2, *np.random.default_rng([10, 2]).spawn(3))
            singles[2].reset_copy(0, *np.random.default_rng([10, 2]).spawn(3))
        if np.any(big.t >= cfg.horizon):
            break
        mix = _random_mixtures(rng, cfg, b)
        res = big.step(mixtures=mix)
        for i in range(b):
            r1 = singles[i].step(mixtures=mix[i:i + 1])
            for f in (*FIELDS, "correct_by_class", "tokens_by_model"):
                assert _same(getattr(res, f)[i], getattr(r1, f)[0]), (k, i, f)


def test_reset_copies_equals_one_by_one() -> None:
    """Batched resets (contiguous or not) give each copy the episode a lone reset_copy with
    the same generators gives."""
    cfg = CONFIGS["critical"]
    a, b = FleetCore(cfg, 7), FleetCore(cfg, 7)
    for copies in ([0, 1, 2, 3, 4, 5, 6], [5, 1, 3]):
        a.reset_copies(copies, [tuple(np.random.default_rng([c, 1]).spawn(3)) for c in copies])
        for c in copies:
            b.reset_copy(c, *np.random.default_rng([c, 1]).spawn(3))
        for f in ("cls", "arrivals", "n_slot", "harvest", *STATE):
            assert _same(getattr(a, f), getattr(b, f)), f
        task = a.cls < cfg.n_classes  # padding task slots hold no latents (never read)
        for f in ("u_solve", "u_assign", "steps"):
            assert _same(getattr(a, f)[task], getattr(b, f)[task]), f
    with pytest.raises(ValueError, match="same length"):
        a.reset_copies([0, 1], [tuple(np.random.default_rng(0).spawn(3))])


class _CoarseGuides(FleetCore):
    """A core with 64 guide bins per (model, class): many bins hold several CDF entries, so
    the kernel's binary-search fallback runs for many draws."""

    GUIDE_BINS = 64


@pytest.mark.parametrize("name,core_class", [("critical", FleetCore), ("values", FleetCore),
                                             ("critical", _CoarseGuides)])
def test_step_draws_equal_searchsorted_definition(name: str, core_class: type) -> None:
    """The guide-table inversion gives k = m_c + searchsorted(cdf[i][c], u, "left"), capped
    at n_max + 1, for random quantiles and for quantiles on and next to the CDF's own values."""
    rng = np.random.default_rng(11)
    tables = FleetCore(CONFIGS[name], 1).tables
    cdf_vals = np.concatenate([tables.cdf[i][c] for i in range(len(tables.cdf))
                               for c in range(len(tables.cdf[i]))])
    cdf_vals = cdf_vals[cdf_vals < 1.0].astype(np.float32)
    u = np.concatenate([
        rng.random(50_000, dtype=np.float32), cdf_vals,
        np.nextafter(cdf_vals, np.float32(0)), np.nextafter(cdf_vals, np.float32(1)),
        np.array([0.0, np.nextafter(np.float32(1), np.float32(0))], dtype=np.float32)])
    u = np.clip(u, 0, np.nextafter(np.float32(1), np.float32(0))).astype(np.float32)
    # The quantiles as one episode of one task per slot, filled by the kernel.
    cfg = resolve_config(CONFIGS[name], horizon=u.size)
    core = core_class(cfg, 1)
    cls = rng.integers(0, cfg.n_classes, u.size)
    counts = np.zeros((1, u.size, cfg.n_classes), dtype=np.int64)
    counts[0, np.arange(u.size), cls] = 1
    lat = np.zeros((u.size, 3), dtype=np.float32)
    lat[:, 0] = u
    assert kernel.start_episodes(
        core._ip, core._fp, np.zeros(1, dtype=np.int64), counts, np.zeros((1, u.size)), lat,
        core._cls_tm, core._us_tm, core._ua_tm, core._steps_tm, core._k0, core._cdf_at,
        core._cdf, core._cdf_off, core.arrivals, core.n_slot, core.harvest, core.t, core._fs,
        core.forecast, core.obs) == 0
    assert np.array_equal(core.cls[0, :, 0], cls)
    if core_class is _CoarseGuides:
        assert np.isnan(core._cdf_at).mean() > 0.05
    got = core.steps[0, :, 0, :].T
    k_cap = core.tables.n_max + 1
    for i in range(cfg.n_models):
        for c, m in enumerate(cfg.class_skills):
            sel = cls == c
            want = np.minimum(
                m + np.searchsorted(core.tables.cdf[i][c], u[sel].astype(np.float64), "left"),
                k_cap)
            assert np.array_equal(got[i, sel], want), (i, c)
