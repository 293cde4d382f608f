"""Actions of the fleet environments, encoded and decoded in one place.

Paper ids: a float32 Box in [-1, 1] with one weight per (class, configuration), weight
``a + 1`` normalised per class (:func:`action_to_mixture`, inverse :func:`mixture_to_action`),
or a Discrete over configurations (:func:`discrete_action`). Queue ids: one more "defer" entry
per class (:func:`decode_continuous`, inverse :func:`queued_action`), or Discrete(2J)
(:func:`decode_discrete`). :func:`serve_action` is the action serving a mixture now on any id;
:func:`validate_action` and :func:`validate_queued_action` check one unbatched action.

Numpy only at import (the simulator core decodes through it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from envs.config import FleetConfig


# ---------------------------------------------------------------------------------- paper ids
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


def validate_action(config: FleetConfig, action: object, space: Any) -> np.ndarray:
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


# ---------------------------------------------------------------------------------- queue ids
def queued_action(mixture: np.ndarray, defer: np.ndarray) -> np.ndarray:
    """Continuous action of a mixture (C, J) and defer fractions (C,) in [0, 1], in [-1, 1].

    Inverse of :func:`decode_continuous` (up to float32 rounding): per class the weights
    ``(1 - f) * mixture`` and ``f`` are scaled so the largest maps to +1.
    """
    pi = np.asarray(mixture, dtype=np.float64)
    f = np.asarray(defer, dtype=np.float64)[..., None]
    w = np.concatenate([(1.0 - f) * pi, f], axis=-1)
    top = w.max(axis=-1, keepdims=True)
    w = np.divide(w, top, out=np.zeros_like(w), where=top > 0)
    return (2.0 * w - 1.0).reshape(*w.shape[:-2], -1).astype(np.float32)


def decode_continuous(config: FleetConfig, actions: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Continuous queue actions (B, C*(J+1)) in [-1, 1] -> mixtures (B, C, J), defer (B, C).

    Per class, weights w = (a + 1) / 2 over J configurations and one "defer" entry; the defer
    fraction is w_defer / sum(w); the mixture is the configuration weights normalised (uniform
    if they are all zero). All -1 in a class: uniform mixture, nothing deferred.

    The step decodes actions in its compiled kernel (``envs.kernel_queue.decode_box``, the
    same values); this numpy version is its reference, and decodes the rows the kernel does
    not take (J + 1 > 128).
    """
    n_c, n_j = config.n_classes, config.n_configs
    a = np.asarray(actions, dtype=np.float64).reshape(-1, n_c, n_j + 1)
    w = (a + 1.0) * 0.5
    total = w.sum(axis=-1)
    defer = np.divide(w[..., n_j], total, out=np.zeros_like(total), where=total > 0)
    wj = w[..., :n_j]
    s = wj.sum(axis=-1, keepdims=True)
    mix = np.where(s > 0, wj / np.where(s > 0, s, 1.0), 1.0 / n_j)
    return mix, defer


def decode_discrete(config: FleetConfig, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discrete queue actions in [0, 2J) -> configuration (B,), defer (B, C).

    ``a < J``: serve every pending task on configuration a. ``a >= J``: defer every task that
    is not due, serve the due ones on configuration ``a - J``.
    """
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    n_j = config.n_configs
    defer = np.repeat((a >= n_j).astype(np.float64)[:, None], config.n_classes, axis=1)
    return a % n_j, defer


def validate_queued_action(config: FleetConfig, action: object, space: Any) -> np.ndarray:
    """Check one unbatched action of a queue env; return it batched, shape (1, ...).

    Besides actions of ``space``, a continuous action of the paper's shape (C*J,) is accepted
    and means "nothing deferred", so policies written for the paper ids run unchanged.
    """
    from gymnasium import spaces as gym_spaces  # local: keep this module numpy-only at import

    n_c, n_j = config.n_classes, config.n_configs
    if (config.queue_enabled and config.action_type != "discrete"
            and np.shape(action) == (n_c * n_j,)):
        paper = gym_spaces.Box(-1.0, 1.0, shape=(n_c * n_j,), dtype=np.float32)
        a = validate_action(config, action, paper).reshape(1, n_c, n_j)
        return np.concatenate([a, -np.ones((1, n_c, 1))], axis=-1).reshape(1, -1)
    return validate_action(config, action, space)


def serve_action(config: FleetConfig, mixture: np.ndarray) -> np.ndarray:
    """Continuous action that serves every task now with a mixture (C, J), for any env.

    On envs with a queue the action has a defer entry per class (set to 0 here); elsewhere it
    is :func:`mixture_to_action`.
    """
    if config.queue_enabled:
        mixture = np.asarray(mixture, dtype=np.float64)
        return queued_action(mixture, np.zeros(mixture.shape[:-1]))
    return mixture_to_action(mixture)
