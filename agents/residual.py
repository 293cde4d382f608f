"""Residual action mode: the agent's action corrects a heuristic's action.

Each slot the heuristic (e.g. ``variance_feedback``) proposes its action; per class its
weights are ``w = (a_h + 1) / 2`` (the env's own map: the mixture over configurations, plus
the defer weight on envs with a queue). The agent's action ``a`` in [-1, 1] (one entry per
weight) rescales them,

    w' = w * exp(scale * a) + boost * max(a, 0),

and ``w'`` is sent as the env action (``envs.actions.mixture_to_action``, each class's largest
weight at +1). The multiplicative part moves weight between the configurations the heuristic
uses (``scale`` 1: a factor e^2 between a = +1 and a = -1), the additive part lets the agent
route some tasks to a configuration the heuristic does not use. The zero action gives the
heuristic's own action bit for bit (w' = w, and ``2 w - 1`` restores ``a_h`` exactly), so a
policy whose mean starts at zero (SB3's small initial action layer) starts as the heuristic.

* :class:`ResidualMixtureAction`: the single-env wrapper (``gym.Wrapper``: it needs the
  observation), for ``--vec-env dummy`` and the validation callback;
* :class:`ResidualActionMap`: the batched map (agent actions (N, D), raw observations
  (N, obs_dim)) -> env actions, for the native vector env (``agents.vec.VecActionMap``) and
  for a saved model (``agents.sb3.load_sb3_policy``), equal to the wrapper row by row.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.config import FleetConfig
from envs.actions import mixture_to_action

#: Heuristics a residual agent can correct (those with an observation-only, batchable rule).
RESIDUAL_HEURISTICS = ("variance_feedback", "variance_aware", "mean_matching")


def residual_env_action(heuristic_actions: np.ndarray, actions: np.ndarray,
                        shape: tuple[int, int], scale: float, boost: float) -> np.ndarray:
    """Env actions (..., D) from heuristic env actions and agent actions (..., D)."""
    a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    a = a.reshape(*a.shape[:-1], *shape)
    w = (np.asarray(heuristic_actions, dtype=np.float64).reshape(a.shape) + 1.0) / 2.0
    w = w * np.exp(scale * a) + boost * np.maximum(a, 0.0)
    return mixture_to_action(w)


def _check(heuristic: str, scale: float, boost: float) -> None:
    if heuristic not in RESIDUAL_HEURISTICS:
        raise ValueError(f"residual heuristic must be one of {', '.join(RESIDUAL_HEURISTICS)}, "
                         f"got {heuristic!r}")
    if not (isinstance(scale, (int, float)) and 0 < scale <= 10):
        raise ValueError(f"residual scale must be in (0, 10], got {scale!r}")
    if not (isinstance(boost, (int, float)) and 0 <= boost <= 1):
        raise ValueError(f"residual boost must be in [0, 1], got {boost!r}")


def _make_heuristic(env: gym.Env, heuristic: str) -> Any:
    from agents.heuristics import HEURISTICS

    return HEURISTICS[heuristic](env, seed=0)


class ResidualActionMap:
    """Batched residual map: ``(agent actions (N, D), raw observations (N, obs_dim))`` ->
    env actions (N, D) float32. Needs the observations (``needs_obs``)."""

    needs_obs = True

    def __init__(self, env: gym.Env, heuristic: str = "variance_feedback", scale: float = 1.0,
                 boost: float = 0.1) -> None:
        _check(heuristic, scale, boost)
        cfg: FleetConfig = env.unwrapped.config
        if cfg.action_type != "continuous":
            raise ValueError("the residual action mode needs action_type='continuous'")
        self.heuristic_name = heuristic
        self.heuristic = _make_heuristic(env, heuristic)
        self.scale, self.boost = float(scale), float(boost)
        dim = int(np.prod(env.action_space.shape))
        self.shape = (cfg.n_classes, dim // cfg.n_classes)
        self.obs_dim = int(np.prod(env.observation_space.shape))

    def heuristic_actions(self, observations: np.ndarray) -> np.ndarray:
        """The heuristic's env actions (N, D) of a batch of raw observations (N, obs_dim).

        The batched mixture where the heuristic has one (the paper loop), else its ``act``
        row by row (queue ids; ``variance_feedback``'s harvest trend, shared by the rows,
        only matters with its opt-in defer rule, which the residual mode does not enable).
        """
        h = self.heuristic
        obs = np.asarray(observations).reshape(-1, self.obs_dim)
        batch = getattr(h, "mixture_batch", None)
        mix = batch(obs) if batch is not None else None
        if mix is None and getattr(h, "static", False):  # one fixed mixture
            fixed = h.mixture(obs[0])
            mix = np.broadcast_to(fixed, (obs.shape[0], *fixed.shape))
        if mix is not None and self.shape[1] == mix.shape[-1]:  # no defer entry
            return mixture_to_action(mix)
        return np.stack([h.act(o) for o in obs])

    def __call__(self, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        a = np.asarray(actions)
        single = a.ndim == 1
        a2 = a.reshape(-1, a.shape[-1])
        out = residual_env_action(self.heuristic_actions(observations), a2, self.shape,
                                  self.scale, self.boost)
        return out[0] if single else out

    def spec_dict(self) -> dict[str, Any]:
        """What ``action_wrapper.json`` stores to rebuild the map (the config included)."""
        return residual_spec(self.heuristic.config, self.heuristic_name, self.scale,
                             self.boost, self.shape)


def residual_spec(config: FleetConfig, heuristic: str, scale: float, boost: float,
                  shape: tuple[int, int]) -> dict[str, Any]:
    """The ``action_wrapper.json`` content of a residual map."""
    return {"class": "agents.residual.ResidualMixtureAction",
            "kwargs": {"heuristic": heuristic, "scale": scale, "boost": boost},
            "shape": list(shape), "config": config.to_dict()}


def residual_map_from_spec(spec: dict[str, Any]) -> ResidualActionMap:
    """Rebuild the batched map of a saved spec (the heuristic on the saved config)."""
    from envs.fleet_env import FleetEnv

    env = FleetEnv(config=spec["config"])
    kw = spec.get("kwargs", {})
    return ResidualActionMap(env, kw.get("heuristic", "variance_feedback"),
                             float(kw.get("scale", 1.0)), float(kw.get("boost", 0.1)))


class _ObservedActionWrapper(gym.Wrapper):
    """A single-env wrapper whose action map ``map(action, observation)`` reads the
    observation the agent acted on (the residual modes below)."""

    def __init__(self, env: gym.Env, action_map: Any) -> None:
        super().__init__(env)
        self.map = action_map
        self._obs: np.ndarray | None = None

    def _on_reset(self) -> None:
        """Called at every reset, before the first step of the episode."""

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._on_reset()
        self._obs = obs
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        out = self.env.step(self.map(np.asarray(action), self._obs))
        self._obs = out[0]
        return out

    def spec_dict(self) -> dict[str, Any]:
        """What ``action_wrapper.json`` stores to rebuild the map."""
        return self.map.spec_dict()


class ResidualMixtureAction(_ObservedActionWrapper):
    """Single-env residual mode: ``step(a)`` sends the heuristic's action corrected by ``a``
    (module docstring); the zero action is the heuristic's action exactly.

    Args:
        env: A fleet env with the continuous action type.
        heuristic: Name of the heuristic corrected (:data:`RESIDUAL_HEURISTICS`).
        scale: Log-factor per unit of action on each weight, in (0, 10].
        boost: Weight added per unit of positive action, in [0, 1].
    """

    def __init__(self, env: gym.Env, heuristic: str = "variance_feedback", scale: float = 1.0,
                 boost: float = 0.1) -> None:
        super().__init__(env, ResidualActionMap(env, heuristic, scale, boost))

    def _on_reset(self) -> None:
        self.map.heuristic.reset()


# ---------------------------------------------------------------------- knob residual
#: Knobs of ``variance_feedback`` the knob residual sets, in the order of the action entries.
KNOBS = ("safety_z", "time_constant_slots")


def _check_knob_scales(z_scale: float, tau_scale: float) -> None:
    for name, v in (("z_scale", z_scale), ("tau_scale", tau_scale)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 5):
            raise ValueError(f"knob residual {name} must be in [0, 5], got {v!r}")


class ResidualKnobMap:
    """Batched knob residual: ``(agent actions (N, 2), raw observations (N, obs_dim))`` ->
    env actions (N, C*J) float32. Needs the observations (``needs_obs``).

    Action entry 0 scales ``variance_feedback``'s safety margin z, entry 1 its time constant
    tau, each by a log-factor: ``z' = z exp(z_scale a_0)``, ``tau' = tau exp(tau_scale a_1)``
    (a clipped to [-1, 1]); the slot's mixture is then the heuristic's own rule with z' and
    tau' (:meth:`agents.heuristics.VarianceFeedbackPolicy.mixture_batch`, the same operations
    row by row). ``exp(0) = 1`` exactly, so the zero action is the heuristic's action bit
    for bit. Paper ids only (the rule without a queue).
    """

    needs_obs = True

    def __init__(self, env: gym.Env, z_scale: float = 0.7, tau_scale: float = 1.4) -> None:
        _check_knob_scales(z_scale, tau_scale)
        cfg: FleetConfig = env.unwrapped.config
        if cfg.action_type != "continuous":
            raise ValueError("the knob residual needs action_type='continuous'")
        if cfg.queue_enabled:
            raise ValueError("the knob residual needs an env without a queue (no class_deadlines "
                             "or model_tokens_per_slot): variance_feedback's queue rules keep "
                             "per-episode state")
        self.heuristic = _make_heuristic(env, "variance_feedback")
        self.z_scale, self.tau_scale = float(z_scale), float(tau_scale)
        self.shape = (cfg.n_classes, cfg.n_configs)
        self.obs_dim = int(np.prod(env.observation_space.shape))
        #: The agent's action space: one entry per knob.
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(KNOBS),), dtype=np.float32)

    def knobs(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row ``(z', tau')`` of a batch of agent actions (N, 2)."""
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(-1, len(KNOBS)), -1.0, 1.0)
        h = self.heuristic
        return h.z * np.exp(self.z_scale * a[:, 0]), h.tau * np.exp(self.tau_scale * a[:, 1])

    def mixtures(self, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        """The mixtures (N, C, J) of the heuristic's rule with the knobs of ``actions``."""
        z, tau = self.knobs(actions)
        obs = np.asarray(observations).reshape(-1, self.obs_dim)
        return self.heuristic.mixture_batch(obs, safety_z=z, time_constant_slots=tau)

    def __call__(self, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        single = np.asarray(actions).ndim == 1
        out = mixture_to_action(self.mixtures(actions, observations))
        return out[0] if single else out

    def spec_dict(self) -> dict[str, Any]:
        """What ``action_wrapper.json`` stores to rebuild the map (the config included)."""
        return {"class": "agents.residual.ResidualKnobAction",
                "kwargs": {"z_scale": self.z_scale, "tau_scale": self.tau_scale},
                "shape": [len(KNOBS)], "config": self.heuristic.config.to_dict()}


def knob_map_from_spec(spec: dict[str, Any]) -> ResidualKnobMap:
    """Rebuild the batched knob map of a saved spec (the heuristic on the saved config)."""
    from envs.fleet_env import FleetEnv

    env = FleetEnv(config=spec["config"])
    kw = spec.get("kwargs", {})
    return ResidualKnobMap(env, float(kw.get("z_scale", 0.7)), float(kw.get("tau_scale", 1.4)))


class ResidualKnobAction(_ObservedActionWrapper):
    """Single-env knob residual: the agent's action (2 entries in [-1, 1]) sets
    ``variance_feedback``'s safety margin and time constant for the slot
    (:class:`ResidualKnobMap`); the zero action is the heuristic's action exactly.

    A two-entry action the agent can learn reliably, against one entry per mixture weight in
    :class:`ResidualMixtureAction`: the rule's frontier mixtures stay, the agent chooses how
    much of the store to hold back and how fast to correct it (e.g. a wider margin mid-episode
    and a narrower one near the end).

    Args:
        env: A paper fleet env (no queue) with the continuous action type.
        z_scale: Log-factor on the margin z per unit of action entry 0, in [0, 5].
        tau_scale: Log-factor on the time constant tau per unit of action entry 1, in [0, 5].
            A scale of 0 keeps that knob at the rule's value (its entry is then ignored).
    """

    def __init__(self, env: gym.Env, z_scale: float = 0.7, tau_scale: float = 1.4) -> None:
        super().__init__(env, ResidualKnobMap(env, z_scale, tau_scale))
        self.action_space = self.map.action_space
