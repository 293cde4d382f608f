"""Realistic scenarios: replayed supply and arrivals, deadlines, queue, caps, forecast, ids."""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.actions import mixture_to_action, queued_action
from envs.calibration import fit_classes
from envs.config import PRESETS, FleetConfig, resolve_config
from envs.dynamics import FleetCore
from envs.outcomes import J_PER_KWH, reference_demand_kwh
from envs.realistic import RealisticCore, make_core
from envs.trace_processes import ServeGenR1Arrivals
from envs.traces import MONTH_START_DAY, load_nsrdb_ghi, load_servegen_pmf, load_servegen_rate

REALISTIC_IDS = [i for i in envs.ENV_IDS if envs.ENV_IDS[i] in (
    "solar_day", "solar_winter", "wind_day", "wind_winter", "r1_trace", "r1_trace_heavy",
    "r1_trace_bursty", "r1_trace_winter")]
PAPER_IDS = ["lrm/Critical-v0", "lrm/OverSupply-v0", "lrm/UnderSupply-v0", "lrm/Volatile-v0"]


def _reset_all(core: FleetCore, seed: int) -> None:
    for b, rng in enumerate(np.random.default_rng(seed).spawn(core.B)):
        core.reset_copy(b, *rng.spawn(3))


def _small_queue_config(**kw) -> FleetConfig:
    base = dict(horizon=48, class_deadlines=(0, 2, 5), storage_kwh=0.01,
                charge_efficiency=0.9, discharge_efficiency=0.8, idle_power_kw=0.002)
    base.update(kw)
    return FleetConfig(**base)


# ---------------------------------------------------------------------------- registry
def test_realistic_ids_registered_with_held_out_pairs():
    assert len(REALISTIC_IDS) == 16
    for train, tests in envs.HELD_OUT.items():
        assert train in gym.registry and all(t in gym.registry for t in tests)
        assert all(t[-3:] == train[-3:] for t in tests)  # the same observation version
    assert set(envs.HELD_OUT) == {f"lrm/{n}-v{v}" for n in ("SolarDay", "WindDay", "R1Trace")
                                  for v in (0, 1)}


@pytest.mark.parametrize("env_id", PAPER_IDS)
def test_paper_envs_keep_their_spaces_and_core(env_id):
    env = gym.make(env_id)
    assert type(env.unwrapped.core) is FleetCore
    assert env.action_space.shape == (27,) and env.observation_space.shape == (13,)
    assert gym.make(env_id, action_type="discrete").action_space.n == 9
    assert not env.unwrapped.config.queue_enabled


def _checker_warnings(env_id: str, **kw) -> set[str]:
    # made before recording: making a -v0 id warns that a -v1 exists (Gymnasium's notice)
    env, env2 = gym.make(env_id, **kw), gym.make(env_id, **kw)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env2, warn=True)
    return {str(w.message) for w in record}


@pytest.mark.parametrize("env_id", ["lrm/SolarDay-v0", "lrm/WindDay-v0", "lrm/R1Trace-v0",
                                    "lrm/R1TraceBursty-v0"])
@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
def test_check_env_adds_no_warning(env_id, action_type):
    # The base observation space has unbounded features; Gymnasium's checker warns about that
    # for every id (paper ids too). The realistic ids must add no warning of their own.
    base = _checker_warnings("lrm/Critical-v0", action_type=action_type)
    assert all("infinity" in w for w in base)
    got = _checker_warnings(env_id, action_type=action_type, horizon=24)
    assert got <= base, got - base
    got = _checker_warnings(env_id, action_type=action_type, horizon=24, forecast_hours=2)
    assert got <= base, got - base


# ---------------------------------------------------------------------------- queue
@pytest.mark.parametrize("caps", [(), (3000.0, 2000.0, 1500.0)])
def test_task_conservation_every_step(caps):
    cfg = _small_queue_config(model_tokens_per_slot=caps)
    core = make_core(cfg, 6)
    _reset_all(core, 3)
    rng = np.random.default_rng(0)
    tot = np.zeros((3, core.B), dtype=np.int64)
    saw_queue = saw_drop = False
    for _ in range(cfg.horizon):
        mix = rng.dirichlet(np.ones(cfg.n_configs), size=(core.B, cfg.n_classes))
        res = core.step(mixtures=mix, defer=rng.random((core.B, cfg.n_classes)))
        tot += np.stack([res.arrived, res.served, res.dropped])
        queued = core.queue_len.sum(axis=1)
        np.testing.assert_array_equal(tot[0], tot[1] + tot[2] + queued)
        saw_queue |= bool(queued.any())
        saw_drop |= bool(res.dropped.any())
        if caps:
            assert np.all(res.tokens_by_model <= np.asarray(caps))
    assert saw_queue and core.queue_len.sum() == 0  # the horizon is every task's last deadline
    assert saw_drop == bool(caps)  # without caps nothing is ever dropped


@pytest.mark.parametrize("caps", [(), (3000.0, 2000.0, 1500.0)])
def test_step_window_looks_back_only_to_the_oldest_open_slot(caps):
    """The step skips slots older than each copy's oldest waiting task: the result equals a
    step over the whole deadline window (``first_open`` forced back to 0), with copies in
    different slots, deferral and caps."""
    cfg = _small_queue_config(model_tokens_per_slot=caps, class_deadlines=(0, 3, 9))
    cores = [make_core(cfg, 5) for _ in range(2)]
    for core in cores:
        _reset_all(core, 11)
    rng = np.random.default_rng(4)
    widths = set()
    for t in range(3 * cfg.horizon):
        mix = rng.dirichlet(np.ones(cfg.n_configs), size=(5, cfg.n_classes))
        defer = rng.choice([0.0, 0.3, 1.0], size=(5, cfg.n_classes))
        widths.update((cores[0].t - cores[0].first_open + 1).tolist())
        cores[1].first_open[:] = 0  # look back over the whole window
        a, b = (core.step(mixtures=mix, defer=defer) for core in cores)
        for f in dataclasses.fields(a):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)
        np.testing.assert_array_equal(cores[0].queue_len, cores[1].queue_len)
        # Restart some copies (at different times) so the copies sit in different slots.
        for b_ in np.flatnonzero((cores[0].t >= cfg.horizon) | (rng.random(5) < 0.02)):
            for core in cores:
                core.reset_copy(int(b_), *np.random.default_rng([t, int(b_)]).spawn(3))
    assert len(set(cores[0].t.tolist())) > 1
    # Copies whose queue was empty needed only the current slot, others looked back further.
    assert min(widths) == 1 and max(widths) >= 5


def test_full_deferral_serves_each_task_at_its_deadline():
    cfg = _small_queue_config()
    core = make_core(cfg, 4)
    _reset_all(core, 5)
    d = np.asarray(cfg.class_deadlines)
    for t in range(cfg.horizon):
        res = core.step(configs=np.zeros(core.B, dtype=int), defer=np.ones((core.B, 3)))
        if t < cfg.horizon - 1:
            expect = sum(core.arrivals[:, t - d[c], c] if t >= d[c] else 0 for c in range(3))
        else:  # last slot: everything still waiting
            expect = sum(core.arrivals[:, max(0, t - d[c]):, c].sum(axis=1) for c in range(3))
        np.testing.assert_array_equal(res.served, expect)
        assert not res.dropped.any()


def test_no_deferral_no_caps_equals_paper_path():
    cfg = _small_queue_config()
    paper = dataclasses.replace(cfg, class_deadlines=())
    a, b = make_core(cfg, 3), make_core(paper, 3)
    assert isinstance(a, RealisticCore) and type(b) is FleetCore
    _reset_all(a, 11)
    _reset_all(b, 11)
    rng = np.random.default_rng(1)
    for _ in range(cfg.horizon):
        mix = rng.dirichlet(np.ones(cfg.n_configs), size=(3, cfg.n_classes))
        ra, rb = a.step(mixtures=mix), b.step(mixtures=mix)
        for f in ("demand_kwh", "aux_kwh", "waste_kwh", "storage_kwh", "correct", "served",
                  "tokens_by_model", "correct_by_class"):
            np.testing.assert_array_equal(getattr(ra, f), getattr(rb, f), err_msg=f)


@pytest.mark.parametrize("j", [0, 4, 8])
def test_deferred_tasks_keep_their_latent_outcomes(j):
    """Common random numbers: deferring changes when a task runs, not what it costs."""
    cfg = _small_queue_config(idle_power_kw=0.0)
    totals = []
    for defer in (0.0, 1.0, 0.5):
        core = make_core(cfg, 3)
        _reset_all(core, 21)
        tok, corr = 0, 0
        for _ in range(cfg.horizon):
            res = core.step(configs=np.full(3, j), defer=np.full((3, 3), defer))
            tok = tok + res.tokens_by_model.sum(axis=1)
            corr = corr + res.correct
        totals.append((tok, corr))
    for tok, corr in totals[1:]:
        np.testing.assert_array_equal(tok, totals[0][0])
        np.testing.assert_array_equal(corr, totals[0][1])


def test_caps_drop_due_tasks_and_respect_edf():
    cfg = _small_queue_config(class_deadlines=(0, 0, 0), model_tokens_per_slot=(5000.0,) * 3)
    core = make_core(cfg, 4)
    _reset_all(core, 2)
    dropped = 0
    for _ in range(cfg.horizon):
        res = core.step(configs=np.full(4, 1))  # 8B at 4k tokens
        assert np.all(res.tokens_by_model[:, 0] <= 5000)
        assert np.all(res.served + res.dropped == res.arrived)
        dropped += int(res.dropped.sum())
    assert dropped > 0


def _reference_queue_slot(core, b, t, mix, defer, done):
    """The queue rules of ``envs.realistic`` for copy b in slot t, task by task in Python.

    ``done`` is the set of (slot, position) of tasks served or dropped so far (updated).
    Returns (served, dropped, tokens per model, correct per class, waiting per class).
    """
    cfg, C, T = core.config, core.C, core.T
    pend = []  # (deadline slot, arrival slot, position, class), oldest first
    for s in range(t + 1):
        for q in range(int(core.n_slot[b, s])):
            c = int(core.cls[b, s, q])
            dl = min(s + cfg.class_deadlines[c], T - 1)
            if (s, q) not in done and dl >= t:
                pend.append((dl, s, q, c))
    deferred = set()
    for c in range(C):
        n_def = math.floor(defer[c] * sum(x[3] == c for x in pend) + 0.5)
        newest = [x for x in reversed(pend) if x[3] == c and x[0] > t]
        deferred.update(newest[:n_def])
    used = [0] * core.M
    served, tokens, correct = [], [0] * core.M, [0] * C
    for dl, s, q, c in sorted(x for x in pend if x not in deferred):  # earliest deadline
        cum = np.cumsum(mix[c])[:-1]
        j = int(np.sum(core.u_assign[b, s, q] >= cum))
        i, budget = int(core.model_of[j]), int(core.budget_of[j])
        steps = int(core.steps[b, s, q, i])
        ok = core.u_solve[b, s, q] < core.solvable[i, c] and steps * cfg.step_tokens <= budget
        tok = steps * cfg.step_tokens if ok else budget
        used[i] += tok
        if used[i] <= core.caps[i]:
            served.append((dl, s, q, c))
            tokens[i] += tok
            correct[c] += ok
    dropped = [x for x in pend if x[0] == t and x not in served]
    done.update((x[1], x[2]) for x in served + dropped)
    waiting = [0] * C
    for x in pend:
        if x not in served and x not in dropped:
            waiting[x[3]] += 1
    return len(served), len(dropped), tokens, correct, waiting


@pytest.mark.parametrize("n_copies", [1, 3])
@pytest.mark.parametrize("caps", [(), (3000.0, 2000.0, 1500.0)])
def test_queued_step_follows_the_rules_task_by_task(caps, n_copies):
    """The queue step against a plain per-task reading of the module's rules: deferral of
    the newest, assignment by quantile, caps in deadline order, drops; the slot's demand and
    value bit for bit from the reference's tokens and correct answers."""
    cfg = _small_queue_config(model_tokens_per_slot=caps, horizon=30)
    core = make_core(cfg, n_copies)
    _reset_all(core, 8)
    rng = np.random.default_rng(5)
    done = [set() for _ in range(core.B)]
    saw = np.zeros(3, dtype=int)
    for t in range(cfg.horizon):
        mix = rng.dirichlet(np.ones(cfg.n_configs), size=(core.B, cfg.n_classes))
        defer = rng.choice([0.0, 0.4, 1.0], size=(core.B, cfg.n_classes))
        ref = [_reference_queue_slot(core, b, t, mix[b], defer[b], done[b])
               for b in range(core.B)]
        res = core.step(mixtures=mix, defer=defer)
        np.testing.assert_array_equal(res.served, [r[0] for r in ref])
        np.testing.assert_array_equal(res.dropped, [r[1] for r in ref])
        np.testing.assert_array_equal(res.tokens_by_model, [r[2] for r in ref])
        np.testing.assert_array_equal(res.correct_by_class, [r[3] for r in ref])
        np.testing.assert_array_equal(core.queue_len, [r[4] for r in ref])
        for b, r in enumerate(ref):  # demand and value, summed in the documented order
            energy = 0.0
            for jpt, tok in zip(core.j_per_token.tolist(), r[2]):
                energy += jpt * tok
            value = 0.0
            for v, n in zip(core.values.tolist(), r[3]):
                value += v * n
            assert res.demand_kwh[b] == core.idle_kwh + energy / J_PER_KWH
            assert res.value_correct[b] == value
        saw += [res.dropped.sum() > 0, core.queue_len.sum() > 0, res.served.sum() > 0]
    assert saw[1] > 0 and saw[2] > 0 and (saw[0] > 0) == bool(caps)


def test_energy_conservation_with_efficiency_and_idle():
    env = gym.make("lrm/R1Trace-v0")
    cfg = env.unwrapped.config
    assert cfg.charge_efficiency < 1 and cfg.idle_power_kw > 0
    env.reset(seed=4)
    rng = np.random.default_rng(4)
    h = d = w = u = loss = 0.0
    for _ in range(cfg.horizon):
        _, _, _, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        h += info["harvest_kwh"]
        d += info["demand_kwh"]
        w += info["waste_kwh"]
        u += info["aux_kwh"]
        loss += info["loss_kwh"]
        assert 0.0 <= info["storage_kwh"] <= cfg.storage_kwh
        assert info["demand_kwh"] >= cfg.idle_power_kw * cfg.slot_minutes / 60 - 1e-15
    assert trunc and loss > 0 and w > 0 and u > 0
    lhs = h - d
    rhs = info["storage_kwh"] - cfg.initial_storage_kwh + w - u + loss
    assert abs(lhs - rhs) < 1e-12 * max(1.0, h + d)


def test_dropped_reward_term_and_weight():
    env = gym.make("lrm/R1Trace-v0", model_tokens_per_slot=(3000.0, 3000.0, 3000.0))
    env.reset(seed=0)
    wts = env.unwrapped.reward_weights
    assert wts["dropped"] == -env.unwrapped.config.w_dropped / env.unwrapped.config.arrival_rate
    seen = 0
    for _ in range(40):
        _, r, _, _, info = env.step(env.action_space.sample())
        terms = info["reward_terms"]
        assert terms["dropped"] == info["dropped"]
        assert math.isclose(r, sum(wts[k] * terms[k] for k in terms), rel_tol=1e-12,
                            abs_tol=1e-12)
        seen += info["dropped"]
    assert seen > 0


def test_discrete_queue_action_defers():
    env = gym.make("lrm/R1Trace-v0", action_type="discrete", model_tokens_per_slot=())
    n_j = env.unwrapped.config.n_configs
    assert env.action_space.n == 2 * n_j
    env.reset(seed=1)
    queued = 0
    for _ in range(10):
        _, _, _, _, info = env.step(n_j)  # defer what is not due, due tasks on config 0
        queued = info["queued"]
    assert queued > 0
    _, _, _, _, info = env.step(0)  # serve everything pending (no caps)
    assert info["queued"] == 0
    capped = gym.make("lrm/R1Trace-v0", action_type="discrete")
    capped.reset(seed=1)
    for _ in range(10):
        capped.step(n_j)
    _, _, _, _, info = capped.step(0)  # 8B at 1k tokens: caps keep part of the backlog
    assert info["queued"] > 0 and info["served"] * 1024 >= 0


def test_paper_shaped_action_means_nothing_deferred():
    env_q = gym.make("lrm/R1Trace-v0", model_tokens_per_slot=())
    env_p = gym.make("lrm/R1Trace-v0", class_deadlines=(), model_tokens_per_slot=())
    cfg = env_q.unwrapped.config
    env_q.reset(seed=6)
    env_p.reset(seed=6)
    rng = np.random.default_rng(6)
    for _ in range(30):
        a = rng.uniform(-1, 1, cfg.n_classes * cfg.n_configs).astype(np.float32)
        _, rq, _, _, iq = env_q.step(a)
        _, rp, _, _, ip = env_p.step(a)
        assert rq == rp and iq["demand_kwh"] == ip["demand_kwh"] and iq["queued"] == 0
    with pytest.raises(ValueError, match="shape"):
        env_q.step(np.zeros(7, dtype=np.float32))


def test_realistic_env_pickles():
    import pickle

    env = gym.make("lrm/R1Trace-v0", forecast_hours=2)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    a = np.zeros(env.action_space.shape, dtype=np.float32)
    o1, r1, *_ = env.step(a)
    o2, r2, *_ = clone.step(a)
    np.testing.assert_array_equal(o1, o2)
    assert r1 == r2


def test_queued_action_roundtrip():
    cfg = PRESETS["r1_trace"]
    rng = np.random.default_rng(0)
    mix = rng.dirichlet(np.ones(cfg.n_configs), size=cfg.n_classes)
    f = np.array([0.0, 0.3, 0.7, 1.0])
    from envs.actions import decode_continuous

    m2, f2 = decode_continuous(cfg, queued_action(mix, f)[None])
    np.testing.assert_allclose(f2[0], f, atol=1e-6)
    np.testing.assert_allclose(m2[0, :3], mix[:3], atol=1e-6)  # class with f=1: uniform


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("env_id", ["lrm/SolarDay-v0", "lrm/R1Trace-v0"])
def test_same_seed_same_episode(env_id):
    def run(seed):
        env = gym.make(env_id, horizon=96, forecast_hours=2)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(7)
        out = [obs]
        for _ in range(96):
            obs, r, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
            out.append(np.concatenate([obs, [r, info["harvest_kwh"], info["dropped"]]]))
        return np.concatenate(out)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_exogenous_inputs_independent_of_policy():
    env1, env2 = gym.make("lrm/R1Trace-v0"), gym.make("lrm/R1Trace-v0")
    env1.reset(seed=9)
    env2.reset(seed=9)
    for _ in range(50):
        _, _, _, _, i1 = env1.step(np.ones(env1.action_space.shape, dtype=np.float32))
        _, _, _, _, i2 = env2.step(-np.ones(env2.action_space.shape, dtype=np.float32))
        assert i1["harvest_kwh"] == i2["harvest_kwh"] and i1["arrived"] == i2["arrived"]


# ---------------------------------------------------------------------------- supply traces
def _daily_profile_of_source(months, step_per_slot=6):
    """Mean GHI per 30-minute slot of the day over the given months (source file)."""
    ghi = load_nsrdb_ghi().values.reshape(365, 48)
    days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                           for m in months])
    return ghi[days].mean(axis=0)


def test_solar_replay_reproduces_source_mean_and_daily_profile():
    cfg = PRESETS["solar_day"]
    months = cfg.harvest_months
    days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                           for m in months])
    # Replay every day of the window (deterministic start days): the mean over the window is
    # exactly provisioning x D_ref (up to the linear-interpolation edges, < 0.5 %).
    h = []
    for d in days:
        core = FleetCore(dataclasses.replace(cfg, trace_start_day=int(d),
                                             trace_start_hour=0.0), 1)
        h.append(core.harvest_process.sample(np.random.default_rng(0), cfg.horizon))
    h = np.array(h)  # (days, 288) kWh per 5-min slot
    d_ref = reference_demand_kwh(cfg)
    assert abs(h.mean() / (cfg.provisioning * d_ref) - 1.0) < 0.005
    # Daily profile: 30-minute means of the replay vs the source's mean daily GHI profile x
    # the scale. Samples are joined linearly, so a half-hour's mean is the trapezoid of its
    # two end samples (the next midnight is dark): equal up to float rounding.
    scale = core.harvest_process.scale
    replay_30 = h.reshape(len(days), 48, 6).mean(axis=(0, 2))
    src = _daily_profile_of_source(months)
    source_30 = 0.5 * (src + np.append(src[1:], 0.0)) * scale
    np.testing.assert_allclose(replay_30, source_30, rtol=1e-9, atol=1e-12 * source_30.max())
    assert abs(int(np.argmax(replay_30)) - int(np.argmax(source_30))) <= 1
    assert np.all(h >= 0) and h[:, :8].max() == 0.0  # no sun before 00:40 local time
    # The presets start at 06:00: the first slot of a seeded episode is the 06:00 slot.
    seeded = FleetCore(cfg, 1).harvest_process
    first = seeded.sample(np.random.default_rng(0), 12)
    day = int(seeded._start_days(12)[np.random.default_rng(0).integers(len(days))])
    np.testing.assert_array_equal(first, h[list(days).index(day), 72:84])
    # Stated capacity: mean harvest = capacity x mean GHI / 1000 x slot hours.
    cap = core.harvest_process.capacity_kw
    assert math.isclose(cap * load_nsrdb_ghi().values.reshape(365, 48)[days].mean() / 1000
                        * cfg.slot_minutes / 60, cfg.provisioning * d_ref, rel_tol=1e-9)


def test_seeded_start_days_stay_in_the_month_window():
    cfg = PRESETS["solar_winter"]
    core = FleetCore(cfg, 1)
    hp = core.harvest_process
    days = hp._start_days(cfg.horizon)
    assert set(np.unique(((days[:, None] >= np.array(MONTH_START_DAY[:-1])).sum(1)))) == set(
        cfg.harvest_months)
    summer = FleetCore(PRESETS["solar_day"], 1).harvest_process
    assert math.isclose(hp.capacity_kw, summer.capacity_kw, rel_tol=1e-12)  # same plant
    # Winter supply of the same plant is about half the summer supply (144 vs 280 W/m2).
    rng = np.random.default_rng(0)
    winter_mean = np.mean([hp.sample(rng, cfg.horizon).mean() for _ in range(60)])
    assert 0.35 < winter_mean / summer.mean_kwh < 0.7


@pytest.mark.parametrize("name", ["solar_day", "wind_winter"])
def test_replayed_supply_kept_per_start_day_is_the_computed_one(name):
    """Episodes kept per start day equal the slot means computed afresh, every draw returns
    its own array, and the kept episodes stay within the byte limit."""
    from envs.traces import MINUTES_PER_DAY, slot_means

    cfg = PRESETS[name]
    hp = FleetCore(cfg, 1).harvest_process
    days = hp._start_days(40)
    hp.CACHE_BYTES = 30 * 40 * 8  # room for 30 episodes of 40 slots
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(200):
        got = hp.sample(a, 40)
        day = int(days[b.integers(days.size)])
        start = day * MINUTES_PER_DAY + 60.0 * hp.start_hour
        want = hp.scale * slot_means(hp.series, start, hp.slot_minutes, 40, hp._cum)
        assert np.array_equal(got, want)
        got[:] = -1.0  # a caller's changes do not reach the kept episode
    assert len(hp._episodes) == 30 and hp._episode_bytes == 30 * 40 * 8
    clone = pickle.loads(pickle.dumps(hp))
    assert clone._episodes == {} and np.array_equal(clone.sample(np.random.default_rng(1), 40),
                                                    hp.sample(np.random.default_rng(1), 40))


def test_bad_start_day_is_a_clear_error():
    with pytest.raises(ValueError, match="trace_start_day=364"):
        FleetCore(dataclasses.replace(PRESETS["solar_day"], trace_start_day=364, horizon=576), 1)
    with pytest.raises(ValueError, match="trace_start_day"):
        resolve_config("solar_day", trace_start_day=365)
    with pytest.raises(ValueError, match="harvest_months"):
        resolve_config("solar_day", harvest_months=(13,))


def test_wind_replay_mean_matches_source():
    cfg = PRESETS["wind_day"]
    core = FleetCore(dataclasses.replace(cfg, harvest_months=(), horizon=288 * 364,
                                         trace_start_day=0, harvest_reference_months=()), 1)
    h = core.harvest_process.sample(np.random.default_rng(0), 288 * 364)
    # Whole-year replay: mean = provisioning x D_ref (the scaling), capacity factor 17.8 %.
    assert abs(h.mean() / core.harvest_process.mean_kwh - 1.0) < 0.005
    cf = h.mean() / (core.harvest_process.capacity_kw * cfg.slot_minutes / 60)
    assert abs(cf - 0.178) < 0.002


# ---------------------------------------------------------------------------- arrival traces
def test_servegen_arrivals_reproduce_mean_and_daily_profile():
    cfg = PRESETS["r1_trace"]
    proc = ServeGenR1Arrivals(cfg)
    rng = np.random.default_rng(123)
    n_ep = 200
    counts = np.stack([proc.sample(rng, 288).sum(axis=1) for _ in range(n_ep)])  # (n, 288)
    hourly = counts.reshape(n_ep, 24, 12).sum(axis=2).mean(axis=0)
    rate = load_servegen_rate()  # 10-minute windows
    start = int(cfg.trace_start_hour)  # the episode starts at this hour of the trace's day
    expect_hourly = cfg.arrival_rate * 12 * np.roll(rate.reshape(24, 6).mean(axis=1),
                                                     -start) / rate.mean()
    # A gamma renewal process with CV k has count variance ~ k^2 x mean over windows much
    # longer than a gap; the mean over n episodes has sd sqrt(k^2 mean / n). 5 sd per hour.
    sd = np.sqrt(cfg.arrival_cv**2 * expect_hourly / n_ep)
    assert np.all(np.abs(hourly - expect_hourly) < 5 * sd + 1.0), (hourly - expect_hourly) / sd
    day_mean = counts.sum(axis=1).mean()
    sd_day = math.sqrt(cfg.arrival_cv**2 * 288 * cfg.arrival_rate / n_ep)
    assert abs(day_mean - 288 * cfg.arrival_rate) < 5 * sd_day
    # Peak-to-trough of the 10-minute source profile is 9.9; hourly replay keeps the shape.
    assert int(np.argmax(hourly)) == int(np.argmax(expect_hourly)) == (22 - start) % 24


class _ShortGaps:
    """A generator whose gamma draws are all 0.01: the first batch of gaps never reaches the
    end of the episode, so the arrival process must draw more (its rare path)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls: list[str] = []

    def gamma(self, shape, scale, size):  # noqa: ANN001
        self.calls.append("gamma")
        return np.full(size, 0.01)

    def random(self):
        self.calls.append("random")
        return self.rng.random()

    def multinomial(self, n, pvals):  # noqa: ANN001
        self.calls.append("multinomial")
        return self.rng.multinomial(n, pvals)


def _servegen_counts_by_numpy(proc: ServeGenR1Arrivals, rng, horizon: int  # noqa: ANN001
                              ) -> np.ndarray:
    """The arrival counts of ``ServeGenR1Arrivals.sample`` as numpy expressions: operational
    time at the slot edges, gamma gaps, cumulative sums, searchsorted, multinomial split."""
    t = proc.start_minute + proc.slot_minutes * np.arange(horizon + 1)
    laps, rem = np.divmod(t, 24 * 60.0)
    grid = proc.win_min * np.arange(proc.profile.size + 1)
    lam = laps * proc.cum[-1] + np.interp(rem, grid, proc.cum)
    edges = (lam - lam[0]) * proc.per_min
    total = float(edges[-1])
    k = 1.0 / proc.cv**2
    n = int(total + 10.0 * proc.cv * math.sqrt(total + 1.0) + 64)
    gaps = rng.gamma(k, 1.0 / k, size=n)
    phase = rng.random()
    points = np.cumsum(gaps) - phase * gaps[0]
    while points[-1] < total:
        more = rng.gamma(k, 1.0 / k, size=n)
        points = np.concatenate([points, points[-1] + np.cumsum(more)])
    totals = np.diff(np.searchsorted(points, edges, side="left"))
    return rng.multinomial(totals, proc.shares)


def test_renewal_counts_equal_cumsum_and_searchsorted():
    """The one-pass count of renewal points between sorted edges equals numpy's cumulative
    sums and searchsorted, bit for bit: edges below the first point, beyond the last,
    repeated, and on a point."""
    from envs.trace_processes import _renewal_counts

    rng = np.random.default_rng(5)
    for k in range(300):
        n = int(rng.integers(1, 400))
        gaps = rng.gamma(0.2 + 2 * rng.random(), 1.0, size=n)
        gaps[rng.random(n) < 0.05] = 0.0
        phase = rng.random()
        points = np.cumsum(gaps) - phase * gaps[0]
        edges = np.sort(rng.uniform(-1.0, points[-1] * 1.2 + 1.0, int(rng.integers(1, 60))))
        if k % 3 == 0:  # edges on points, and repeated
            edges = np.sort(np.concatenate([edges, rng.choice(points, 5), edges[:2]]))
        totals = np.full(edges.size - 1, -1, dtype=np.int64)
        last = _renewal_counts(gaps, phase, edges, totals)
        assert last == points[-1]
        assert np.array_equal(totals, np.diff(np.searchsorted(points, edges, side="left")))


@pytest.mark.parametrize("name", ["r1_trace", "r1_trace_bursty"])
def test_servegen_counts_equal_the_numpy_expressions(name):
    """The compiled arrival times and counts give numpy's counts and leave the generator
    where numpy's draws leave it, also when the first batch of gaps falls short."""
    proc = ServeGenR1Arrivals(PRESETS[name])
    for seed in range(6):
        for horizon in (288, 37, 600):
            a, b = np.random.default_rng([seed, horizon]), np.random.default_rng([seed, horizon])
            got, want = proc.sample(a, horizon), _servegen_counts_by_numpy(proc, b, horizon)
            assert got.dtype == np.int64 and got.shape == (horizon, proc.shares.size)
            assert np.array_equal(got, want)
            assert a.random() == b.random()  # the same number of variates drawn
    short_a, short_b = _ShortGaps(1), _ShortGaps(1)
    got = proc.sample(short_a, 288)
    assert np.array_equal(got, _servegen_counts_by_numpy(proc, short_b, 288))
    assert short_a.calls == short_b.calls and short_a.calls.count("gamma") > 1
    assert got.sum() > 0
    # The operational time is computed once per horizon and cannot be changed by a caller.
    assert proc._op_time(288) is proc._op_time(288)
    assert not proc._op_time(288).flags.writeable


def test_servegen_burstier_variant_has_larger_slot_variance():
    cfg = PRESETS["r1_trace"]
    base, bursty = ServeGenR1Arrivals(cfg), ServeGenR1Arrivals(PRESETS["r1_trace_bursty"])
    rng = np.random.default_rng(0)
    x = np.stack([base.sample(rng, 288).sum(1) for _ in range(50)])
    y = np.stack([bursty.sample(rng, 288).sum(1) for _ in range(50)])
    mu = base.expected_counts(288)
    # Index of dispersion (var / mean per slot) tends to CV^2: 5.2 vs 19.7.
    idx_x = ((x - mu) ** 2).mean() / mu.mean()
    idx_y = ((y - mu) ** 2).mean() / mu.mean()
    assert 2.5 < idx_x < 8 and idx_y > 2 * idx_x


@pytest.mark.parametrize("name", ["azure_conv", "azure_code"])
def test_azure_replay_follows_the_trace(name):
    from envs.trace_processes import ARRIVAL_TRACES

    cfg = FleetConfig(arrival_process=name, slot_minutes=0.5, horizon=240)
    proc = ARRIVAL_TRACES[name](cfg)
    rng = np.random.default_rng(5)
    for _ in range(5):
        r2 = np.random.default_rng(rng.integers(1 << 30))
        start = float(np.random.default_rng(r2.bit_generator.seed_seq).integers(proc.n_sec))
        counts = proc.sample(r2, cfg.horizon).sum(axis=1)
        edges = start + proc.slot_s * np.arange(cfg.horizon + 1)
        x = np.diff(proc._cumulative(edges)) * proc.scale
        # Stochastic rounding: every slot is the scaled trace count rounded down or up.
        assert np.all((counts == np.floor(x)) | (counts == np.ceil(x)))
    # Over whole laps of the trace the mean is arrival_rate exactly (up to rounding noise).
    lap = FleetConfig(arrival_process=name, slot_minutes=1.0 / 60, horizon=proc.n_sec * 2)
    p2 = ARRIVAL_TRACES[name](lap)
    c = p2.sample(np.random.default_rng(0), lap.horizon).sum(axis=1)
    # Rounding noise: sum of n Bernoulli(frac) has sd <= sqrt(n)/2.
    assert abs(c.sum() - lap.arrival_rate * lap.horizon) < 5 * math.sqrt(lap.horizon) / 2


# ---------------------------------------------------------------------------- class fit
def test_r1_classes_are_the_fit_to_the_servegen_pmf():
    cfg = PRESETS["r1_trace"]
    fit = fit_classes(load_servegen_pmf("output_tokens", "all"), cfg.model_step_success,
                      cfg.step_tokens)
    assert fit.class_skills == cfg.class_skills and fit.class_shares == cfg.class_shares
    assert abs(fit.fleet["mean"] / fit.target["mean"] - 1) < 0.01
    for q in ("p50", "p90", "p99"):
        assert abs(fit.fleet[q] / fit.target[q] - 1) < 0.06, q
    heavy = fit_classes(load_servegen_pmf("output_tokens", "21600"), cfg.model_step_success,
                        cfg.step_tokens)
    assert heavy.class_skills == PRESETS["r1_trace_heavy"].class_skills
    assert abs(heavy.fleet["mean"] / heavy.target["mean"] - 1) < 0.01


def test_realistic_preset_constants_follow_their_definition():
    for name in ("solar_day", "wind_day", "r1_trace"):
        cfg = PRESETS[name]
        d_ref = reference_demand_kwh(cfg)
        assert abs(cfg.storage_kwh / (72 * d_ref) - 1) < 1e-3, name  # 6 h of reference demand
        idle = cfg.idle_power_kw * cfg.slot_minutes / 60
        assert 0.08 < idle / (d_ref - idle) < 0.12, name  # idle ~ 10 % of task demand
    heavy = PRESETS["r1_trace_heavy"]
    ratio = reference_demand_kwh(PRESETS["r1_trace"]) / reference_demand_kwh(
        dataclasses.replace(heavy, provisioning=1.0))
    assert abs(heavy.provisioning / ratio - 1) < 1e-3  # same plant as the training env
    for name in PRESETS:
        if name in ("critical", "oversupply", "undersupply", "volatile"):
            assert not PRESETS[name].queue_enabled and PRESETS[name].forecast_hours == 0


# ---------------------------------------------------------------------------- forecast
def test_forecast_without_noise_is_the_future_hourly_mean():
    env = gym.make("lrm/SolarDay-v0", forecast_hours=3, forecast_noise=0.0)
    names = env.unwrapped.observation_names
    k = names.index("forecast_1h")
    assert names[k:k + 3] == ["forecast_1h", "forecast_2h", "forecast_3h"]
    obs, _ = env.reset(seed=2)
    h_ref = env.unwrapped.core.harvest_process.mean_kwh
    fc, harvest = [obs[k:k + 3]], []
    for _ in range(288):
        obs, _, _, _, info = env.step(env.action_space.sample())
        fc.append(obs[k:k + 3])
        harvest.append(info["harvest_kwh"])
    harvest = np.array(harvest) / h_ref
    for t in range(0, 288 - 36, 7):
        expect = harvest[t:t + 36].reshape(3, 12).mean(axis=1)
        np.testing.assert_allclose(fc[t], expect, rtol=1e-5, atol=1e-6)


def test_forecast_noise_has_the_stated_spread():
    cfg = dataclasses.replace(PRESETS["solar_day"], forecast_hours=2, forecast_noise=0.3)
    core = make_core(cfg, 16)
    _reset_all(core, 0)
    clean = dataclasses.replace(cfg, forecast_noise=0.0)
    core0 = make_core(clean, 16)
    _reset_all(core0, 0)
    err = core.forecast - core0.forecast
    pos = core0.forecast > 1.5  # > 3.5 sd above the floor at 0: the error is Gaussian
    for h in range(2):
        e = err[..., h][pos[..., h]]
        want = 0.3 * math.sqrt(h + 1)
        # n > 500 samples: the sd estimate has relative sd 1/sqrt(2n) < 3.2 %; allow 15 %.
        assert e.size > 500 and abs(e.std() / want - 1) < 0.15


def test_bad_realistic_config_values():
    with pytest.raises(ValueError, match="class_deadlines must have 3 entries"):
        FleetConfig(class_deadlines=(1, 2))
    with pytest.raises(ValueError, match=r"model_tokens_per_slot\[1\]"):
        FleetConfig(model_tokens_per_slot=(1e4, -1.0, 1e4))
    with pytest.raises(ValueError, match="forecast_hours"):
        FleetConfig(forecast_hours=-1)
    with pytest.raises(ValueError, match="arrival_cv"):
        FleetConfig(arrival_cv=0.0)
    with pytest.raises(ValueError, match="harvest_process must be one of"):
        FleetConfig(harvest_process="tidal")


def test_mixture_action_helper_unchanged_for_paper_envs():
    cfg = PRESETS["critical"]
    mix = np.full((cfg.n_classes, cfg.n_configs), 1.0 / cfg.n_configs)
    assert mixture_to_action(mix).shape == (cfg.n_classes * cfg.n_configs,)


@pytest.mark.parametrize("env_id", ["lrm/Critical-v0", "lrm/SolarDay-v0"])
def test_forecast_does_not_change_supply_or_tasks(env_id):
    """The forecast errors come after the supply in the harvest stream: same seed, same day."""
    def run(**kw):
        env = gym.make(env_id, horizon=48, **kw)
        env.reset(seed=12)
        a = np.zeros(env.unwrapped.config.n_classes * env.unwrapped.config.n_configs,
                     dtype=np.float32)
        infos = [env.step(a)[4] for _ in range(48)]
        return [(i["harvest_kwh"], i["arrived"], i["demand_kwh"]) for i in infos]

    assert run() == run(forecast_hours=4)
