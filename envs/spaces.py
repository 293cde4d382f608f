"""Observation and action spaces of the fleet environments, and their (batched) packing.

Observation: a float32 vector of normalised features, built for B copies at once from the
core's state (:func:`observe`). Action: a float32 Box in [-1, 1] with one weight per
(class, configuration), or a Discrete over configurations (:func:`action_to_mixture`).
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from envs.config import FleetConfig
from envs.dynamics import FleetCore
from envs.observation import v1_bounds, v1_feature_names
from envs.realistic import extra_feature_names, extra_features, queued_action_dim

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


def mixture_to_action(mixture: np.ndarray) -> np.ndarray:
    """Inverse of :func:`action_to_mixture` for the continuous action: (C, J) -> (C*J,) in [-1, 1].

    Any mixture, pure or mixed, is represented exactly (up to float32 rounding): each row is
    scaled so its largest weight maps to +1.
    """
    pi = np.asarray(mixture, dtype=np.float64)
    top = pi.max(axis=-1, keepdims=True)
    w = np.divide(pi, top, out=np.zeros_like(pi), where=top > 0)
    return (2.0 * w - 1.0).reshape(*pi.shape[:-2], -1).astype(np.float32)


def action_weights(config: FleetConfig, actions: np.ndarray) -> np.ndarray:
    """Mixture weights (B, C, J) of a batch of continuous actions (B, C*J) in [-1, 1].

    Weight ``a + 1`` per (class, configuration), not normalised (the core normalises each
    class's row, see ``FleetCore.step``); a class whose entries are all -1 gets equal weights.
    """
    a = np.asarray(actions, dtype=np.float64)
    w = a.reshape(a.shape[0], config.n_classes, config.n_configs) + 1.0
    empty = np.maximum.reduce(w, axis=-1) <= 0.0
    if empty.any():
        w[empty] = 1.0
    return w


def action_to_mixture(config: FleetConfig, actions: np.ndarray) -> np.ndarray:
    """Map a batch of continuous actions (B, C*J) in [-1, 1] to mixtures (B, C, J).

    Weight w = (a + 1) / 2 per (class, configuration), normalised per class; a class whose
    weights are all zero (every entry -1) is split uniformly over configurations.
    """
    w = action_weights(config, actions)
    return w / w.sum(axis=-1, keepdims=True)


def real_action_array(action: object) -> np.ndarray:
    """A continuous action (or batch) as a float64 array; ``ValueError`` unless it is real.

    Integer and bool entries convert as numbers (as ``Box.contains`` allows); complex
    entries are refused instead of losing their imaginary part, and so is anything that is
    not a number (strings, other objects), with the message of the other action checks.
    """
    a = np.asarray(action)
    kind = a.dtype.kind
    if kind in "fiub":
        return a.astype(np.float64, copy=False)
    if kind == "c":
        raise ValueError(f"action entries must be real numbers in [-1, 1], got complex "
                         f"values (dtype {a.dtype})")
    if kind == "O":
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"action entries must be real numbers in [-1, 1], got "
                     f"{type(action).__name__} of dtype {a.dtype}: {action!r:.80}")


def discrete_action(action: object, n: int) -> int:
    """Index of one Discrete(n) action; ``ValueError`` naming the range unless it is one.

    Accepted: a Python or numpy integer, or a finite integral float, alone or in an array of
    one element. Refused, each with a ``ValueError`` naming ``[0, n - 1]``: bools (``True``
    is not configuration 1; the config's integer fields refuse bools the same way), NaN and
    infinite values, non-integral floats, complex numbers, strings and anything else.
    """
    if (type(action) is int or isinstance(action, np.integer)) and 0 <= action < n:
        return int(action)  # fast path
    msg = f"action must be an integer in [0, {n - 1}], got {action!r:.80}"
    a = np.asarray(action)
    if a.size != 1:
        raise ValueError(f"{msg} (an array of {a.size} elements)")
    x = a.reshape(()).item()
    kind = a.dtype.kind
    if kind == "b" or isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{msg} (a bool, not an index)")
    if kind in "iu" or (kind == "O" and isinstance(x, (int, np.integer))):
        j = int(x)
    elif kind == "f" or (kind == "O" and isinstance(x, (float, np.floating))):
        if not math.isfinite(x) or x != math.floor(x):
            raise ValueError(msg)
        j = int(x)
    else:
        raise ValueError(f"{msg} (type {type(x).__name__})")
    if not 0 <= j < n:
        raise ValueError(msg)
    return j


def validate_action(config: FleetConfig, action: object, space: spaces.Space) -> np.ndarray:
    """Check one unbatched action and return it as an array; raise ValueError if invalid."""
    if config.action_type == "discrete":
        return np.array([discrete_action(action, int(space.n))])
    a = real_action_array(action)
    if a.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape} (classes x configurations), "
                         f"got shape {a.shape}")
    if not np.maximum.reduce(np.abs(a), axis=None) <= 1.0:  # also rejects NaN
        raise ValueError(f"action entries must be finite and in [-1, 1], got min "
                         f"{float(a.min())!r}, max {float(a.max())!r}")
    return a[None, :]


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

    The paper features are written by the core's kernel (after every step and reset, into
    ``core.obs``); the features of the realistic extensions (queue lengths, forecast) are
    appended here.
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
        self.dim = 10 + self.n_c + self.n_extra

    def observe(self) -> np.ndarray:
        """Observation of every copy from the core's state, shape (B, dim), float32 (a new
        array)."""
        self.core.observe()
        return self.current().copy()

    def current(self) -> np.ndarray:
        """The core's observation buffer (B, dim) as its kernel step left it, with the extra
        features filled in (valid until the core's next step or reset)."""
        core = self.core
        out = core.obs
        if self.n_extra:
            out[:, 10 + self.n_c:] = extra_features(core)
        return out


def serve_action(config: FleetConfig, mixture: np.ndarray) -> np.ndarray:
    """Continuous action that serves every task now with a mixture (C, J), for any env.

    On envs with a queue the action has a defer entry per class (set to 0 here); elsewhere it
    is :func:`mixture_to_action`.
    """
    if config.queue_enabled:
        from envs.realistic import queued_action

        mixture = np.asarray(mixture, dtype=np.float64)
        return queued_action(mixture, np.zeros(mixture.shape[:-1]))
    return mixture_to_action(mixture)
