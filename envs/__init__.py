"""lrm-energy-gym environments: energy-aware dispatch to a fleet of large reasoning models.

Importing this package registers the ``lrm/*`` ids with Gymnasium (idempotently).
"""

from __future__ import annotations

import warnings

import gymnasium as gym

from envs.config import PRESETS, FleetConfig, resolve_config

#: Registered id -> preset name (the kwargs stay JSON-clean).
ENV_IDS: dict[str, str] = {
    "lrm/Critical-v0": "critical",
    "lrm/OverSupply-v0": "oversupply",
    "lrm/UnderSupply-v0": "undersupply",
    "lrm/Volatile-v0": "volatile",
    # Realistic scenarios (real solar, wind and request traces; deadlines, queue, caps).
    # Train / held-out test pairs: SolarDay -> SolarWinter, WindDay -> WindWinter,
    # R1Trace -> R1TraceHeavy, R1TraceBursty, R1TraceWinter.
    "lrm/SolarDay-v0": "solar_day",
    "lrm/SolarWinter-v0": "solar_winter",
    "lrm/WindDay-v0": "wind_day",
    "lrm/WindWinter-v0": "wind_winter",
    "lrm/R1Trace-v0": "r1_trace",
    "lrm/R1TraceHeavy-v0": "r1_trace_heavy",
    "lrm/R1TraceBursty-v0": "r1_trace_bursty",
    "lrm/R1TraceWinter-v0": "r1_trace_winter",
}

#: The ``-v1`` ids: the same episodes as ``-v0`` with the observation of ``envs.observation``
#: (``observation_version=1``): every public quantity a heuristic reads.
ENV_IDS.update({env_id.replace("-v0", "-v1"): preset for env_id, preset in list(ENV_IDS.items())})

#: Registration kwargs of each id besides its preset (the ``-v1`` observation layout).
ID_KWARGS: dict[str, dict[str, int]] = {
    env_id: {"observation_version": 1} for env_id in ENV_IDS if env_id.endswith("-v1")}

#: Held-out test ids of each realistic training id (generalisation under distribution shift).
HELD_OUT: dict[str, tuple[str, ...]] = {
    "lrm/SolarDay-v0": ("lrm/SolarWinter-v0",),
    "lrm/WindDay-v0": ("lrm/WindWinter-v0",),
    "lrm/R1Trace-v0": ("lrm/R1TraceHeavy-v0", "lrm/R1TraceBursty-v0", "lrm/R1TraceWinter-v0"),
}
HELD_OUT.update({train.replace("-v0", "-v1"): tuple(t.replace("-v0", "-v1") for t in tests)
                 for train, tests in list(HELD_OUT.items())})


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS`; ids already registered are left alone."""
    for env_id, preset in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="envs.fleet_env:FleetEnv",
                     vector_entry_point="envs.vector_env:FleetVectorEnv",
                     kwargs={"config": preset, **ID_KWARGS.get(env_id, {})})


register_envs()

# The -v0 ids stay, unchanged, so that published results can be reproduced; Gymnasium's
# "out of date, consider upgrading to v1" notice on making one would only add a stderr line
# to every run of theirs.
warnings.filterwarnings("ignore", message=r".*The environment lrm/[A-Za-z0-9]+-v0 is out of date",
                        category=DeprecationWarning)

__all__ = ["ENV_IDS", "HELD_OUT", "ID_KWARGS", "PRESETS", "FleetConfig", "register_envs", "resolve_config"]
