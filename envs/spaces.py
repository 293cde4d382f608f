"""Observation and action spaces of the fleet environments, and their (batched) packing.

Observation: a float32 vector of normalised features, built for B copies at once from the
core's state (:func:`observe`). Action: a float32 Box in [-1, 1] with one weight per
(class, configuration), or a Discrete over configurations (:func:`action_to_mixture`).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from envs.config import FleetConfig
from envs.dynamics import FleetCore
from envs.layout import extra_feature_names, queued_action_dim
from envs.observation import v1_bounds, v1_feature_names

#: Slots of reference demand that make the soft scale of an unbounded store (1 hour at 5 min).
STORE_SCALE_SLOTS = 12.0


def observation_names(config: FleetConfig) -> list[str]:
    """Names of the observation features, in order."""
    return (["store", "harvest_last", "demand_last", "aux_last", "waste_last"]
            + [f"arrivals_{c}" for c in config.class_names]
            + ["time_sin", "time_cos", "progress", "net_mean", "net_std"]
            + extra_feature_names(config) + v1_feature_names(config))


#: Bound of the features that are unbounded in principle (ratios, running statistics): the
#: largest finite float32, so the Box is finite (Gymnasium's checker warns on infinite bounds)
#: and every finite feature value lies inside it.
OBS_BOUND = float(np.finfo(np.float32).max)


def observation_space(config: FleetConfig) -> spaces.Box:
    """The float32 Box of :func:`observation_names` with each feature's range."""
    n_c = config.n_classes
    big = OBS_BOUND
    low = np.array([0, 0, 0, 0, 0] + [0] * n_c + [-1, -1, 0, -big, 0], dtype=np.float32)
    high = np.array([1] + [big] * 4 + [big] * n_c + [1, 1, 1, big, big], dtype=np.float32)
    n_extra = len(extra_feature_names(config))  # queue lengths, forecast: [0, inf)
    if n_extra:
        low = np.concatenate([low, np.zeros(n_extra, dtype=np.float32)])
        high = np.concatenate([high, np.full(n_extra, big, dtype=np.float32)])
    if config.observation_version >= 1:  # envs.observation
        v1_low, v1_high = v1_bounds(config, big)
        low, high = np.concatenate([low, v1_low]), np.concatenate([high, v1_high])
    return spaces.Box(low=low, high=high, dtype=np.float32)


def action_space(config: FleetConfig) -> spaces.Space:
    """Box(-1, 1, (C*J,)) for ``continuous``, Discrete(J) for ``discrete``.

    With a queue (``config.queue_enabled``): Box(-1, 1, (C*(J+1),)) with a "defer" weight per
    class, and Discrete(2J) (``a >= J``: defer what is not due); see ``envs.realistic``.
    """
    if config.queue_enabled:
        if config.action_type == "discrete":
            return spaces.Discrete(2 * config.n_configs)
        return spaces.Box(-1.0, 1.0, shape=(queued_action_dim(config),), dtype=np.float32)
    if config.action_type == "discrete":
        return spaces.Discrete(config.n_configs)
    return spaces.Box(-1.0, 1.0, shape=(config.n_classes * config.n_configs,), dtype=np.float32)


def action_mask(config: FleetConfig, space: spaces.Space) -> np.ndarray:
    """Legal actions of a Discrete action space, a bool array of ``space.n`` entries.

    Every action is legal in every state: on the paper ids each of the J configurations can
    take every task of the slot; on the queue ids (Discrete(2J)) an action ``a >= J`` defers
    what is not due and serves the due tasks on configuration ``a - J``, which is defined
    (it serves everything when nothing is deferrable), and a throughput cap never makes a
    configuration illegal (tasks that do not fit wait or are dropped at their deadline, a
    priced outcome the policy should learn). So the mask is all True; it exists for
    maskable learners (sb3-contrib's MaskablePPO), which require one.

    Raises:
        TypeError: For a continuous (Box) action space, which has no finite set to mask.
    """
    if not isinstance(space, spaces.Discrete):
        raise TypeError(f"action masks exist for discrete actions only (action_type="
                        f"'discrete'); this env's action space is {space}")
    return np.ones(int(space.n), dtype=bool)


class Observer:
    """Builds the observation of every copy of a :class:`FleetCore` (normalised features).

    The core's kernel writes every feature into ``core.obs`` after each step and reset
    (the paper features, the forecast, the ``-v1`` features; the queue step also the queue
    lengths); :meth:`observe` fills in the queue lengths of a state it did not step to.
    """

    def __init__(self, core: FleetCore) -> None:
        cfg = core.config
        self.core = core
        self.d_ref = core.ref_demand_kwh
        self.h_ref = core.h_ref
        self.inv_rates = core.inv_rates
        self.s_max = cfg.storage_kwh
        self.s_ref = STORE_SCALE_SLOTS * self.d_ref
        self.n_c = cfg.n_classes
        self.n_extra = len(extra_feature_names(cfg))
        self.dim = core.dim
        self.queued = cfg.queue_enabled

    def observe(self) -> np.ndarray:
        """Observation of every copy from the core's state, shape (B, dim), float32 (a new
        array)."""
        core = self.core
        out = core.observe()
        if self.queued:  # tasks waiting / class rate, as the queue step writes them
            n_c = self.n_c
            out[:, 10 + n_c:10 + 2 * n_c] = core.queue_len * core.inv_rates
        return out.copy()

    def current(self) -> np.ndarray:
        """The core's observation buffer (B, dim) as its last kernel step left it (valid
        until the core's next step or reset)."""
        return self.core.obs


def make_observer(core: FleetCore) -> Observer:
    """The observer of a core (every ``observation_version``)."""
    return Observer(core)
