"""The compiled queue step (``envs.kernel_queue``): its action decode equals numpy's, its raw
action paths equal the step of the decoded actions, and bad input changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs import kernel_queue as kq
from envs.actions import decode_continuous, decode_discrete
from envs.config import FleetConfig, resolve_config
from envs.dynamics import SlotResult
from envs.layout import queued_action_dim
from envs.realistic import make_core

FIELDS = [f.name for f in dataclasses.fields(SlotResult)]


def _same(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and \
        np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()


def _queue_config(**kw) -> FleetConfig:
    base = dict(horizon=40, class_deadlines=(0, 2, 5), storage_kwh=0.01,
                charge_efficiency=0.9, discharge_efficiency=0.8, idle_power_kw=0.002,
                model_tokens_per_slot=(3000.0, 2000.0, 1500.0))
    base.update(kw)
    return FleetConfig(**base)


def _random_box_actions(rng: np.random.Generator, cfg: FleetConfig, n: int, k: int) -> np.ndarray:
    """n continuous queue actions, from dense to all -1, with rows that only defer and
    entries at exactly +-1."""
    C, J = cfg.n_classes, cfg.n_configs
    a = rng.uniform(-1, 1, (n, C * (J + 1)))
    a[rng.random(a.shape) < (k % 5) / 4] = -1.0
    a[rng.random(a.shape) < 0.05] = 1.0
    if k % 7 == 0:  # the first class only defers: all its configuration weights zero
        a[:, :J] = -1.0
        a[:, J] = 1.0
    return a


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 10, 15, 16, 17, 33, 128])
def test_pairwise_sum_equals_numpy_sum(n: int) -> None:
    """The kernel's row sum equals numpy's sum of a row (numpy's pairwise order), bit for bit,
    over magnitudes from 1e-8 to 1e8, for contiguous and strided rows."""
    rng = np.random.default_rng(n)
    w = rng.random((2000, n)) * 10.0 ** rng.integers(-8, 9, (2000, n))
    w[rng.random(w.shape) < 0.2] = 0.0
    want = w.sum(axis=-1)
    flat = w.ravel()
    got = np.array([kq.pairwise_sum(flat, r * n, n) for r in range(w.shape[0])])
    assert _same(got, want)
    assert _same(np.c_[w, w][:, :n].sum(axis=-1), want)  # numpy sums a strided row the same


@pytest.mark.parametrize("name", ["r1_trace", "critical-queue", "one-config"])
def test_compiled_decode_equals_decode_continuous(name: str) -> None:
    """decode_box gives the running sums of decode_continuous's mixture and its clipped defer
    fractions, bit for bit, for float32 and float64 actions."""
    cfg = {"r1_trace": resolve_config("r1_trace", horizon=20),
           "critical-queue": resolve_config("critical", class_deadlines=(0, 1, 3)),
           "one-config": resolve_config("critical", class_deadlines=(0, 1, 3),
                                        model_names=("m",), model_params_b=(8.0,),
                                        model_j_per_token=(0.2,), model_step_success=(0.5,),
                                        model_skill_coverage=(0.99,), token_budgets=(2048,),
                                        model_tokens_per_slot=(4000.0,))}[name]
    C, J = cfg.n_classes, cfg.n_configs
    rng = np.random.default_rng(11)
    thr, f, w = np.empty(C * (J - 1)), np.empty(C), np.empty(J + 1)
    for k in range(300):
        a = _random_box_actions(rng, cfg, 1, k)[0]
        a = a.astype(np.float32) if k % 2 else a
        mix, defer = decode_continuous(cfg, a[None])
        kq.decode_box(a, C, J, thr, f, w)
        want_thr = np.cumsum(mix[0], axis=-1)[:, :-1]
        assert _same(thr.reshape(C, J - 1), want_thr), k
        assert _same(f, np.clip(defer[0], 0.0, 1.0)), k


@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
@pytest.mark.parametrize("variant", ["caps", "no-caps", "sparse", "dense"])
@pytest.mark.parametrize("n_copies", [1, 4])
def test_raw_actions_equal_step_of_decoded_actions(action_type: str, variant: str,
                                                    n_copies: int) -> None:
    """step_action (the kernel decodes the raw action) equals step of numpy's decode
    (decode_continuous / decode_discrete: the kernel's mixtures and configs paths) on a twin
    core, bit for bit in every field and state, with copies reset at different times."""
    kw = {"caps": {}, "no-caps": {"model_tokens_per_slot": ()},
          "sparse": {"arrival_rate": 0.3}, "dense": {"arrival_rate": 60.0}}[variant]
    cfg = _queue_config(action_type=action_type, **kw)
    raw, ref = make_core(cfg, n_copies), make_core(cfg, n_copies)
    for core in (raw, ref):
        for b in range(n_copies):
            core.reset_copy(b, *np.random.default_rng([3, b]).spawn(3))
    rng = np.random.default_rng(2)
    saw = np.zeros(3, dtype=bool)
    for k in range(2 * cfg.horizon):
        for b in np.flatnonzero((raw.t >= cfg.horizon) | (rng.random(n_copies) < 0.03)):
            for core in (raw, ref):  # restart a copy: the copies sit in different slots
                core.reset_copy(int(b), *np.random.default_rng([k, int(b)]).spawn(3))
        if action_type == "discrete":
            a = rng.integers(0, 2 * cfg.n_configs, n_copies)
            got = raw.step_action(a)
            configs, defer = decode_discrete(cfg, a)
            want = ref.step(configs=configs, defer=defer)
        else:
            a = _random_box_actions(rng, cfg, n_copies, k)
            got = raw.step_action(a.astype(np.float32) if k % 2 else a)
            mixtures, defer = decode_continuous(cfg, a.astype(np.float32) if k % 2 else a)
            want = ref.step(mixtures=mixtures, defer=defer)
        for f in FIELDS:
            assert np.array_equal(getattr(got, f), getattr(want, f)), (k, f)
            assert _same(np.asarray(getattr(got, f)).astype(getattr(want, f).dtype),
                         getattr(want, f)), (k, f)
        for f in ("queue_len", "first_open", "done", "t", "storage", "net_mean", "net_m2"):
            assert _same(getattr(raw, f), getattr(ref, f)), (k, f)
        saw |= [got.dropped.any(), raw.queue_len.any(), len(set(raw.t.tolist())) > 1]
    # queues and drops occur (not always with 0.3 tasks per slot; no drops without caps)
    assert saw[1] or variant == "sparse"
    assert saw[0] or variant in ("no-caps", "sparse")
    assert saw[2] or n_copies == 1


@pytest.mark.parametrize("int32", [False, True])  # the step counts' type
def test_step_entry_returns_the_status_and_the_result_rows(int32: bool) -> None:
    """The bound entry (queue_step_bound*) returns (status, copy 0's result rows), also for a
    status other than OK."""
    cfg = _queue_config(horizon=12)
    core = make_core(cfg, 1)
    if int32:  # as a core whose step counts do not fit int16 holds them
        core._steps_tm = core._steps_tm.astype(np.int32)
        core._bind()
    assert core._qstep is (kq.queue_step_bound32 if int32 else kq.queue_step_bound16)
    core.reset_copy(0, *np.random.default_rng(4).spawn(3))
    rng = np.random.default_rng(0)
    for _ in range(cfg.horizon):
        a = _random_box_actions(rng, cfg, 1, 3)[0]
        r = core._qstep(core._qtab, kq.BOX, a)
        assert r[0] == kq.OK
        assert r[1:] == (*core.res_f[0, :9].tolist(), *core.res_i[0, :7].tolist())
    assert core._qstep(core._qtab, kq.BOX, a)[0] == kq.ENDED  # the episode has ended


def test_bad_input_raises_and_changes_nothing() -> None:
    """Out-of-range, NaN, mis-sized and ended-episode steps raise a clear error before any
    state changes: a step after them equals a step of a core that never saw them."""
    cfg = _queue_config()
    C, J = cfg.n_classes, cfg.n_configs
    core, twin = make_core(cfg, 2), make_core(cfg, 2)
    for c in (core, twin):
        for b in range(2):
            c.reset_copy(b, *np.random.default_rng([5, b]).spawn(3))
    good = np.zeros((2, queued_action_dim(cfg)))
    core.step_action(good)
    twin.step_action(good)
    state = ("queue_len", "first_open", "done", "t", "storage")
    before = {f: getattr(core, f).copy() for f in state}
    bad_box = []
    for edge in (np.nan, np.inf, -np.inf, np.nextafter(1.0, 2.0), np.nextafter(-1.0, -2.0)):
        a = good.copy()
        a[1, -1] = edge  # the last copy's last entry: the check must not have stepped copy 0
        bad_box.append(a)
    for a in bad_box:
        with pytest.raises(ValueError, match=r"finite and in \[-1, 1\]"):
            core.step_action(a)
    with pytest.raises(ValueError, match="entries"):
        core.step_action(good[:, :-1])
    mix = np.full((2, C, J), 1.0 / J)
    with pytest.raises(ValueError, match="mixtures must have shape"):
        core.step(mixtures=mix[:, :, :-1])
    with pytest.raises(ValueError, match="defer must have shape"):
        core.step(mixtures=mix, defer=np.zeros(3))
    for configs in (np.array([0, J]), np.array([-1, 0])):
        with pytest.raises(ValueError, match=rf"configs must be integers in \[0, {J - 1}\]"):
            core.step(configs=configs)
    with pytest.raises(ValueError, match="configs must be 2 integers"):
        core.step(configs=np.array([0.0, 1.0]))
    for f in state:
        assert _same(getattr(core, f), before[f]), f
    assert all(_same(getattr(core.step_action(good), f), getattr(twin.step_action(good), f))
               for f in FIELDS)
    # discrete actions
    dcfg = dataclasses.replace(cfg, action_type="discrete")
    dcore = make_core(dcfg, 2)
    for b in range(2):
        dcore.reset_copy(b, *np.random.default_rng([5, b]).spawn(3))
    for a in (np.array([0, 2 * J]), np.array([-1, 0]), np.array([0.0, 2.5]),
              np.array([np.nan, 0.0])):
        with pytest.raises(ValueError, match=rf"actions must be integers in \[0, {2 * J - 1}\]"):
            dcore.step_action(a)
    assert not dcore.t.any() and not dcore.done.any()
    # an ended episode (one copy at the horizon): nothing steps
    while core.t[0] < cfg.horizon:
        core.step_action(good)
    core.reset_copy(1, *np.random.default_rng([6, 1]).spawn(3))
    before = {f: getattr(core, f).copy() for f in state}
    with pytest.raises(RuntimeError, match="reset"):
        core.step_action(good)
    for f in state:
        assert _same(getattr(core, f), before[f]), f


def test_single_env_rejects_bad_actions_as_before() -> None:
    """The single env's raw-array path raises the messages of validate_queued_action."""
    import gymnasium as gym

    import envs  # noqa: F401

    env = gym.make("lrm/R1Trace-v0", horizon=10)
    env.reset(seed=0)
    shape = env.action_space.shape
    for dtype in (np.float32, np.float64):
        bad = np.zeros(shape, dtype=dtype)
        bad[3] = 1.5
        with pytest.raises(ValueError, match=r"finite and in \[-1, 1\], got min 0.0, max 1.5"):
            env.step(bad)
        bad[3] = np.nan
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            env.step(bad)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(shape[0] - 1, dtype=np.float32))
    _, _, _, _, info = env.step(np.zeros(shape, dtype=np.float32).tolist())  # a list works
    assert info["t"] == 1


def test_task_buffers_hold_each_slot_class_by_class() -> None:
    """The kernel finds class c of slot s at the positions after the slot's earlier classes
    (``arrivals[b, s, :c].sum()`` on) and reads no class buffer: the buffer agrees, padding
    (class C) after the slot's tasks, for copies reset together and alone."""
    cfg = _queue_config(arrival_rate=30.0, horizon=24)
    core = make_core(cfg, 3)
    core.reset_copies([0, 1, 2], [tuple(np.random.default_rng([1, b]).spawn(3)) for b in range(3)])
    core.reset_copy(1, *np.random.default_rng([2, 1]).spawn(3))
    C, A = cfg.n_classes, core.A
    want = np.full((3, cfg.horizon, A), C)
    for b in range(3):
        for s in range(cfg.horizon):
            row = np.repeat(np.arange(C), core.arrivals[b, s])
            want[b, s, :row.size] = row
    assert np.array_equal(core.cls, want)


def test_long_action_rows_take_numpy_decode() -> None:
    """With J + 1 > 128 (beyond the kernel's row sum) continuous actions are decoded by
    decode_continuous and stepped as mixtures: the same result as that decode stepped
    directly, and the same error for invalid entries."""
    cfg = resolve_config("critical", horizon=6, class_deadlines=(0, 1, 2),
                         model_tokens_per_slot=(20000.0,) * 3,
                         token_budgets=tuple(range(512, 512 * 44, 512)))
    assert cfg.n_configs + 1 > 128
    raw, ref = make_core(cfg, 2), make_core(cfg, 2)
    for core in (raw, ref):
        for b in range(2):
            core.reset_copy(b, *np.random.default_rng([4, b]).spawn(3))
    rng = np.random.default_rng(0)
    for k in range(cfg.horizon - 1):  # the last slot stays for the invalid action below
        a = _random_box_actions(rng, cfg, 2, k)
        got = raw.step_action(a)
        mixtures, defer = decode_continuous(cfg, a)
        want = ref.step(mixtures=mixtures, defer=defer)
        assert all(np.array_equal(getattr(got, f), getattr(want, f)) for f in FIELDS)
    a[0, 5] = np.nan
    with pytest.raises(ValueError, match=r"finite and in \[-1, 1\]"):
        raw.step_action(a)
