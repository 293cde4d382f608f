"""Properties over generated inputs (hypothesis): action decoding, config validation and the
energy ledger of random configs.

Examples are derandomised (the same inputs on every run) and few enough for the default suite.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from envs.actions import action_to_mixture, mixture_to_action
from envs.config import FleetConfig, resolve_config
from envs.dynamics import FleetCore
from tests.helpers import copy_generators

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])

C, J = 3, 9  # classes and configurations of the default config
CFG = FleetConfig()
assert (CFG.n_classes, CFG.n_configs) == (C, J)

unit = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@SETTINGS
@given(arrays(np.float32, (4, C * J), elements=unit))
def test_any_action_in_the_box_decodes_to_a_mixture(actions):
    mix = action_to_mixture(CFG, actions)
    assert mix.shape == (4, C, J)
    assert np.all(mix >= 0.0)
    np.testing.assert_allclose(mix.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    # A larger entry never gets a smaller weight within its class.
    a = actions.reshape(4, C, J).astype(np.float64)
    for b, c in np.ndindex(4, C):
        order = np.argsort(a[b, c], kind="stable")
        assert np.all(np.diff(mix[b, c][order]) >= 0.0)


@SETTINGS
@given(arrays(np.float64, (C, J), elements=st.floats(0.0, 1e6, allow_nan=False)).filter(
    lambda m: bool(np.all(m.max(axis=-1) > 0.0))))
def test_mixture_to_action_round_trips(mixture):
    action = mixture_to_action(mixture)
    assert action.shape == (C * J,) and action.dtype == np.float32
    assert np.all(action >= -1.0) and np.all(action <= 1.0)
    back = action_to_mixture(CFG, action[None])[0]
    want = mixture / mixture.sum(axis=-1, keepdims=True)
    # float32 rounding of the action: a few ulps of float32 relative to the row's largest weight
    np.testing.assert_allclose(back, want, rtol=0, atol=2e-7 * J)


NUMBER_FIELDS = [f.name for f in dataclasses.fields(FleetConfig)
                 if f.type in ("float", "int", float, int)]
any_number = st.one_of(st.integers(-10**6, 10**6),
                       st.floats(allow_nan=True, allow_infinity=True))


#: Fields whose value sets the allowed range of another field, which the error then names.
RANGE_OF = {"step_tokens": ("token_budgets",)}


@SETTINGS
@given(st.sampled_from(NUMBER_FIELDS), any_number)
def test_a_number_is_accepted_or_refused_naming_its_field(field, value):
    """Any number in any numeric field either makes a valid config or a ValueError that
    names the field (or the field whose range it sets): never another exception, never a NaN
    let through."""
    try:
        cfg = FleetConfig(**{field: value})
    except ValueError as exc:
        named = [field, *RANGE_OF.get(field, ())]
        assert any(f"FleetConfig.{n}" in str(exc) for n in named), (field, value, str(exc))
        return
    got = getattr(cfg, field)
    assert not (isinstance(got, float) and math.isnan(got)), (field, value)


@settings(derandomize=True, deadline=None, max_examples=15)
@given(storage=st.sampled_from([0.0, 0.004, 0.05, math.inf]),
       eta_c=st.floats(0.5, 1.0), eta_d=st.floats(0.5, 1.0),
       idle=st.sampled_from([0.0, 0.003]), provisioning=st.floats(0.2, 3.0),
       harvest_cv=st.one_of(st.just(0.0), st.floats(1e-3, 2.0)), seed=st.integers(0, 2**31 - 1))
def test_ledger_balances_on_random_configs(storage, eta_c, eta_d, idle, provisioning,
                                           harvest_cv, seed):
    """O1 on every slot of random configs: H - D = (S_t - S_{t-1}) + W - U + loss."""
    s0 = 0.0 if storage == 0.0 else min(storage, 0.002)
    cfg = resolve_config("critical", horizon=24, storage_kwh=storage, initial_storage_kwh=s0,
                         charge_efficiency=eta_c, discharge_efficiency=eta_d,
                         idle_power_kw=idle, provisioning=provisioning, harvest_cv=harvest_cv)
    core = FleetCore(cfg, 2)
    for b, gens in enumerate(copy_generators(seed, 2)):
        core.reset_copy(b, *gens)
    rng = np.random.default_rng(seed)
    prev = np.full(2, s0)
    for _ in range(cfg.horizon):
        res = core.step(mixtures=rng.dirichlet(np.ones(J), size=(2, C)))
        h, d, u, w = res.harvest_kwh, res.demand_kwh, res.aux_kwh, res.waste_kwh
        for x in (h, d, u, w, res.loss_kwh, res.storage_kwh):
            assert np.all(np.isfinite(x)) and np.all(x >= 0.0)
        assert np.all(res.storage_kwh <= storage)
        err = (h - d) - (res.storage_kwh - prev + w - u + res.loss_kwh)
        assert np.all(np.abs(err) <= 1e-12 * (h + d + 1e-9)), err
        prev = res.storage_kwh


def test_number_fields_are_found():
    assert {"horizon", "storage_kwh", "arrival_rate"} <= set(NUMBER_FIELDS)
