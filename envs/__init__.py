"""lrm-energy-gym environments: energy-aware dispatch to a fleet of large reasoning models.

Importing this package registers the ``lrm/*`` ids with Gymnasium (idempotently).
"""

from __future__ import annotations

import gymnasium as gym

from envs.config import PRESETS, FleetConfig, resolve_config

#: Registered id -> preset name (the kwargs stay JSON-clean).
ENV_IDS: dict[str, str] = {
    "lrm/Critical-v0": "critical",
    "lrm/OverSupply-v0": "oversupply",
    "lrm/UnderSupply-v0": "undersupply",
    "lrm/Volatile-v0": "volatile",
}


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS`; ids already registered are left alone."""
    for env_id, preset in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="envs.fleet_env:FleetEnv",
                     vector_entry_point="envs.vector_env:FleetVectorEnv",
                     kwargs={"config": preset})


register_envs()

__all__ = ["ENV_IDS", "PRESETS", "FleetConfig", "register_envs", "resolve_config"]
