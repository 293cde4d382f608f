"""Layout of a config's observation and action vectors (names and lengths; config only)."""

from __future__ import annotations

from envs.config import FleetConfig


def extra_feature_names(config: FleetConfig) -> list[str]:
    """Names of the observation features appended after the paper features."""
    names: list[str] = []
    if config.queue_enabled:
        names += [f"queue_{c}" for c in config.class_names]
    names += [f"forecast_{h + 1}h" for h in range(config.forecast_hours)]
    return names


def queued_action_dim(config: FleetConfig) -> int:
    """Length of the continuous action with a queue: C x (J + 1) (J configs, then defer)."""
    return config.n_classes * (config.n_configs + 1)
