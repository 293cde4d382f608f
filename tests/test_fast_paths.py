"""The optimised paths of the step give exactly (bit for bit) what the generic paths give."""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import resolve_config
from envs.dynamics import FleetCore, mixture_thresholds
from envs.reward import combine, combine_scalar, reward_terms, reward_weights, slot_terms
from envs.spaces import Observer, action_to_mixture

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
}
FIELDS = ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "loss_kwh", "storage_kwh",
          "arrived", "served", "correct", "dropped", "value_correct")
STATE = ("t", "storage", "last_harvest", "last_demand", "last_aux", "last_waste", "net_mean",
         "net_m2")


def _reset(core: FleetCore, seed: int) -> None:
    for b in range(core.B):
        core.reset_copy(b, *np.random.default_rng([seed, b]).spawn(3))


def _random_mixtures(rng: np.random.Generator, cfg, b: int) -> np.ndarray:
    a = rng.uniform(-1, 1, (b, cfg.n_classes * cfg.n_configs))
    a[rng.random(a.shape) < 0.6] = -1.0  # sparse rows, pure rows and all -1 rows occur
    return action_to_mixture(cfg, a)


def _same(x, y) -> bool:
    return np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind", ["mixture", "config"])
def test_single_copy_fast_path_equals_generic_step(name: str, kind: str) -> None:
    """FleetCore.step_single (outcome table, scalar ledger) and Observer.observe_single
    against FleetCore.step and Observer.observe on a second core with the same draws,
    over two episodes."""
    cfg = CONFIGS[name]
    fast, ref = FleetCore(cfg, 1), FleetCore(cfg, 1)
    obs_fast, obs_ref = Observer(fast), Observer(ref)
    rng = np.random.default_rng(7)
    for episode in range(2):
        _reset(fast, episode)
        _reset(ref, episode)
        assert _same(obs_fast.observe_single(), obs_ref.observe()[0])
        for _ in range(cfg.horizon):
            if kind == "mixture":
                mix = _random_mixtures(rng, cfg, 1)
                out = fast.step_single(mixture=mix[0])
                res = ref.step(mixtures=mix)
            else:
                j = int(rng.integers(cfg.n_configs))
                out = fast.step_single(config=j)
                res = ref.step(configs=np.array([j]))
            for f, v in zip(FIELDS, out):
                assert _same(np.float64(v), np.float64(getattr(res, f)[0])), f
            for f in STATE:
                assert _same(getattr(fast, f), getattr(ref, f)), f
            assert _same(obs_fast.observe_single(), obs_ref.observe()[0])
            trunc = bool(ref.t[0] >= cfg.horizon)
            w = reward_weights(ref)
            terms = reward_terms(ref, res, np.array([trunc]))
            s_terms = slot_terms(cfg.initial_storage_kwh, out[-1], out[2], out[3], out[5], trunc)
            assert all(_same(np.float64(s_terms[k]), v[0]) for k, v in terms.items())
            assert _same(np.float64(combine_scalar(w, s_terms)), combine(w, terms)[0])
        with pytest.raises(RuntimeError, match="reset"):
            fast.step_single(config=0)


def test_single_copy_fallback_without_lists() -> None:
    """Above the size limit of the fast path step_single routes through step, same results."""
    cfg = CONFIGS["critical"]
    small, ref = FleetCore(cfg, 1), FleetCore(cfg, 1)
    small.SINGLE_LIST_MAX = 10
    _reset(small, 3)
    _reset(ref, 3)
    assert small._single is None and ref._single is not None
    rng = np.random.default_rng(0)
    for _ in range(10):
        mix = _random_mixtures(rng, cfg, 1)[0]
        assert small.step_single(mixture=mix) == ref.step_single(mixture=mix)
    with pytest.raises(ValueError, match="fast path"):
        small.step_single(thresholds=[[0.5] * 8] * 3)


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


def test_single_action_thresholds_equal_generic_mapping() -> None:
    """The Python-float action map gives the thresholds the batched step uses (running sums
    of the weights of action_weights over their total), bit for bit, and the same errors;
    the batched step's float32 thresholds split float32 quantiles exactly as they do."""
    from envs.spaces import action_space, action_weights, single_action_thresholds, \
        validate_action

    cfg = CONFIGS["critical"]
    space = action_space(cfg)
    rng = np.random.default_rng(5)
    u = np.sort(rng.random(4000, dtype=np.float32))
    for k in range(200):
        a = rng.uniform(-1, 1, space.shape).astype(np.float32 if k % 2 else np.float64)
        a[rng.random(a.shape) < (k % 5) / 4] = -1.0  # from dense to all -1 (uniform rows)
        w = action_weights(cfg, validate_action(cfg, a, space))[0]
        ref = FleetCore._thresholds(w)  # (C, J-1)
        got = single_action_thresholds(cfg, a if k % 3 else a.tolist(), space)
        assert _same(np.array(got), ref)
        assert got == mixture_thresholds(w.tolist())
        t32 = FleetCore._thresholds32(w)[:, :cfg.n_configs - 1]  # (C, J-1); +inf padding
        # float32 quantiles on and next to each threshold: same side of both
        near = np.concatenate([u, ref.ravel().astype(np.float32),
                               np.nextafter(ref.ravel().astype(np.float32), np.float32(0)),
                               np.nextafter(ref.ravel().astype(np.float32), np.float32(1))])
        assert np.array_equal(near[:, None, None] >= t32, near[:, None, None] >= ref)
        padded = FleetCore._thresholds32(w)
        assert padded.shape == (cfg.n_classes, 8) and np.isinf(padded[:, cfg.n_configs - 1:]).all()
    for bad, msg in ((np.zeros(5), "shape"), (np.full(space.shape, np.nan), r"\[-1, 1\]"),
                     (np.full(space.shape, 1.0 + 1e-12), r"\[-1, 1\]")):
        with pytest.raises(ValueError, match=msg):
            single_action_thresholds(cfg, bad, space)
    for edge in (np.nextafter(1.0, 2.0), np.nextafter(-1.0, -2.0), 1.0 + 2.0**-23, np.inf,
                 -np.inf):  # one entry just outside [-1, 1] (a + 1 rounds to 2.0 for the first)
        bad = np.zeros(space.shape)
        bad[7] = edge
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            single_action_thresholds(cfg, bad, space)
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            validate_action(cfg, bad, space)
    one_nan = np.zeros(space.shape)
    one_nan[4] = np.nan  # hidden from min/max by its position; caught by its class sum
    with pytest.raises(ValueError, match="nan"):
        single_action_thresholds(cfg, one_nan, space)


def test_reset_copies_equals_one_by_one() -> None:
    """Batched resets (chunked, contiguous or not) give each copy the episode a lone
    reset_copy with the same generators gives."""
    cfg = CONFIGS["critical"]
    a, b = FleetCore(cfg, 7), FleetCore(cfg, 7)
    a.RESET_CHUNK = 2
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


@pytest.mark.parametrize("name", ["critical", "values"])
def test_step_draws_equal_searchsorted_definition(name: str) -> None:
    """The guide-table inversion gives k = m_c + searchsorted(cdf[i][c], u, "left"), capped
    at n_max + 1, for random quantiles and for quantiles on and next to the CDF's own values."""
    cfg = CONFIGS[name]
    core = FleetCore(cfg, 1)
    rng = np.random.default_rng(11)
    cdf_vals = np.concatenate([core.tables.cdf[i][c] for i in range(cfg.n_models)
                               for c in range(cfg.n_classes)])
    cdf_vals = cdf_vals[cdf_vals < 1.0].astype(np.float32)
    u = np.concatenate([
        rng.random(50_000, dtype=np.float32), cdf_vals,
        np.nextafter(cdf_vals, np.float32(0)), np.nextafter(cdf_vals, np.float32(1)),
        np.array([0.0, np.nextafter(np.float32(1), np.float32(0))], dtype=np.float32)])
    u = np.clip(u, 0, np.nextafter(np.float32(1), np.float32(0))).astype(np.float32)
    cls = rng.integers(0, cfg.n_classes, u.size)
    got = core._sample_steps(cls, u)
    k_cap = core.tables.n_max + 1
    for i in range(cfg.n_models):
        for c, m in enumerate(cfg.class_skills):
            sel = cls == c
            want = np.minimum(
                m + np.searchsorted(core.tables.cdf[i][c], u[sel].astype(np.float64), "left"),
                k_cap)
            assert np.array_equal(got[i, sel], want), (i, c)


def test_observe_single_with_shifted_clock() -> None:
    """The single-copy observation follows a shifted start of day (start_slot, read at the
    start of each episode) exactly."""
    cfg = CONFIGS["critical"]
    core = FleetCore(cfg, 1)
    obs = Observer(core)
    for episode, start in enumerate((0.0, 37.0, 101.5, 0.0)):
        obs.start_slot[:] = start
        _reset(core, episode)
        for _ in range(3):
            assert _same(obs.observe_single(), obs.observe()[0])
            core.step_single(config=4)


@pytest.mark.parametrize("n_groups,bound", [(3, 38 * 16384), (4, 40), (3, 2**40)])
@pytest.mark.parametrize("empty", ["none", "first", "middle", "last", "all"])
def test_segment_sums_by_group_bit_fields_and_bincount(n_groups: int, bound: int, empty: str
                                                       ) -> None:
    """Per-copy, per-group sums over a flat array of segments: the bit-field path (small
    bounds) and the bincount path (bounds too large for 63 bits) both equal a plain loop,
    including copies that hit the bound and copies with no entries (first, inside, last)."""
    from envs.dynamics import _Segments

    rng = np.random.default_rng(3)
    B, a = 50, 38
    n = rng.integers(1, a + 1, B)
    n[0] = a
    n[{"none": [], "first": [0, 1], "middle": [7, 8, 20], "last": [B - 2, B - 1],
       "all": slice(None)}[empty]] = 0
    per_task = max(1, bound // a)
    x = rng.integers(0, per_task + 1, int(n.sum()))
    group = rng.integers(0, n_groups, x.size)
    if n[0]:
        x[:a] = per_task  # a copy at the bound
        group[:a] = 0
    ends = np.cumsum(n)
    starts = ends - n
    want = np.zeros((B, n_groups), dtype=np.int64)
    for b in range(B):
        for p in range(starts[b], ends[b]):
            want[b, group[p]] += x[p]
    segs = _Segments(starts, n, int(n.sum()))
    got = segs.sums_by_group(x, group, n_groups, bound)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert np.array_equal(segs.sums_by_group(x.astype(bool), group, n_groups, a),
                          segs.sums_by_group(x.astype(bool), group, n_groups, 2**62))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 10, 15, 16, 17, 33, 128])
def test_sum_row_equals_numpy_sum(n: int) -> None:
    """The Python-float row sum of the queue action decode equals numpy's sum of the row (the
    pairwise order numpy uses), bit for bit, over magnitudes from 1e-8 to 1e8."""
    from envs.realistic import _sum_row

    rng = np.random.default_rng(n)
    w = rng.random((3000, n)) * 10.0 ** rng.integers(-8, 9, (3000, n))
    w[rng.random(w.shape) < 0.2] = 0.0
    want = w.sum(axis=-1)
    got = np.array([_sum_row(row) for row in w.tolist()])
    assert _same(got, want)
    # a strided row (the decode sums the configuration weights, a view) sums the same
    assert _same(np.c_[w, w][:, :n].sum(axis=-1), want)


def test_queued_action_map_equals_decode_continuous() -> None:
    """QueuedActionMap (Python floats) gives the thresholds and defer fractions of
    decode_continuous after validate_queued_action, with the queue step's clip and running
    sums, bit for bit; actions it cannot take (invalid values, other types or shapes) give
    None, and the general path raises for the invalid ones."""
    from envs.realistic import QueuedActionMap, decode_continuous, validate_queued_action
    from envs.spaces import action_space

    cfg = resolve_config("r1_trace", horizon=20)
    space = action_space(cfg)
    qmap = QueuedActionMap(cfg)
    C, J = cfg.n_classes, cfg.n_configs
    rng = np.random.default_rng(11)
    for k in range(400):
        a = rng.uniform(-1, 1, space.shape).astype(np.float32 if k % 2 else np.float64)
        a[rng.random(a.shape) < (k % 5) / 4] = -1.0  # dense to all -1: uniform, no defer
        a[rng.random(a.shape) < 0.05] = 1.0
        if k % 7 == 0:  # a class that only defers: all configuration weights zero
            a[:J] = -1.0
            a[J] = 1.0
        got = qmap(a)
        mix, defer = decode_continuous(cfg, validate_queued_action(cfg, a, space))
        want_thr = np.cumsum(mix.reshape(C, J), axis=-1)[:, :-1].tolist()
        want_f = np.clip(defer.reshape(C), 0.0, 1.0).tolist()
        assert got is not None
        assert _same(np.array(got[0]), np.array(want_thr)) and got[0] == want_thr
        assert got[1] == want_f
    for edge in (np.nan, np.inf, -np.inf, np.nextafter(1.0, 2.0), np.nextafter(-1.0, -2.0)):
        for pos in (0, J, space.shape[0] - 1):
            bad = np.zeros(space.shape)
            bad[pos] = edge
            assert qmap(bad) is None
            with pytest.raises(ValueError, match=r"\[-1, 1\]"):
                validate_queued_action(cfg, bad, space)
    good = np.zeros(space.shape)
    assert qmap(good.tolist()) is None  # a list: the general path
    assert qmap(np.zeros(C * J)) is None  # the paper's shape (nothing deferred)
    assert qmap(np.zeros(space.shape, dtype=np.int64)) is None
