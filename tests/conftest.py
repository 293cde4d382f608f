"""Registry-driven parametrisation and small shared fixtures.

Every test that takes ``env_id`` runs over every id whose entry point lives in ``envs``, so a
new preset is tested without touching the tests.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import envs  # noqa: F401  (registers the lrm/* ids)

FLEET_IDS = sorted(i for i, s in gym.registry.items() if str(s.entry_point).startswith("envs."))

#: Both action interfaces of every id.
ACTION_TYPES = ("continuous", "discrete")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``env_id`` over the registry (an empty list would silently pass).

    A test that parametrises ``env_id`` itself (a chosen subset) keeps its own list.
    """
    explicit = any("env_id" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "env_id" in metafunc.fixturenames and not explicit:
        assert FLEET_IDS, "no envs.* ids registered: every env test would silently vanish"
        metafunc.parametrize("env_id", FLEET_IDS)


@pytest.fixture(params=ACTION_TYPES)
def action_type(request: pytest.FixtureRequest) -> str:
    """Each action interface in turn."""
    return request.param


@pytest.fixture
def short_horizon() -> int:
    """A horizon short enough for full-episode API tests [slots]."""
    return 24
