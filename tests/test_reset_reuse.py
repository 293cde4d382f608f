"""A core whose buffers held an earlier episode steps exactly like a fresh core.

Resets set only the class of padding task slots; their latents and step counts hold
whatever was there (values of earlier episodes, or unset memory), and nothing may read them.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import resolve_config
from envs.realistic import make_core


def _rngs(seed: int, n: int) -> list[tuple[np.random.Generator, ...]]:
    return [tuple(np.random.default_rng([seed, i]).spawn(3)) for i in range(n)]


def _episode(core, rng: np.random.Generator) -> list[np.ndarray]:
    """Step the whole episode with random mixtures; every SlotResult field, per slot."""
    out = []
    for _ in range(core.T):
        mix = rng.dirichlet(np.ones(core.J), size=(core.B, core.C))
        res = core.step(mixtures=mix)
        out.append(np.concatenate([np.ravel(v) for v in vars(res).values()]))
    return out


@pytest.mark.parametrize("overrides", [
    {"horizon": 24},
    {"horizon": 24, "arrival_rate": 40.0},  # busier slots: more padding behind
    {"horizon": 24, "class_deadlines": (0, 2, 5), "storage_kwh": 0.01},  # queued core
])
def test_reused_buffers_give_the_fresh_episode(overrides: dict) -> None:
    cfg = resolve_config("critical", **overrides)
    used = make_core(cfg, 4)
    used.reset_copies(range(4), _rngs(1, 4))
    _episode(used, np.random.default_rng(0))
    used.reset_copies(range(4), _rngs(2, 4))
    fresh = make_core(cfg, 4)
    fresh.reset_copies(range(4), _rngs(2, 4))
    assert (used.cls == fresh.cls).all()
    # Poison the padding of the reused core: if a step read it, the episodes would differ.
    pad = used.cls == cfg.n_classes
    assert pad.any()
    for name in ("u_assign", "u_solve"):
        view = getattr(used, name)
        view[pad] = np.nan
    used.steps[pad] = np.iinfo(used.steps.dtype).max
    got = _episode(used, np.random.default_rng(5))
    want = _episode(fresh, np.random.default_rng(5))
    for t, (a, b) in enumerate(zip(got, want)):
        assert np.array_equal(a, b), t
