"""Action parametrisations for learning agents, applied outside the env.

A wrapper here changes only how an agent's action vector becomes the env's action; the env
and its action space are untouched. A model trained through one of them saves the wrapper's
name and arguments in ``action_wrapper.json`` beside ``model.zip``, and
:func:`agents.sb3.load_sb3_policy` applies the same map to the model's actions, so the saved
policy acts directly on the plain env (evaluate.py needs nothing else).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.actions import mixture_to_action

#: File beside ``model.zip`` naming the action wrapper a model was trained through.
ACTION_WRAPPER_FILE = "action_wrapper.json"


class SoftmaxMixtureAction(gym.ActionWrapper):
    """Agent action in [-1, 1]^(C*J) -> per-class softmax of ``scale * action`` -> env action.

    On envs with a queue each class has one more entry (defer), and the softmax covers it too:
    the defer fraction is the softmax weight of that entry.

    The env's own map (weights ``(a + 1) / 2`` normalised per class) reaches a pure route only
    when every other entry of the class sits exactly at -1, so a Gaussian policy drifts
    towards diffuse mixtures. Here every entry moves the mixture smoothly and ``+1`` against
    ``-1`` already gives odds of ``exp(2 * scale)``; the zero action is still the uniform
    (reference) mixture.

    Args:
        env: A fleet env with the continuous action type.
        scale: Logit per unit of action; 3 gives odds of about 400:1 between +1 and -1.
    """

    def __init__(self, env: gym.Env, scale: float = 3.0) -> None:
        super().__init__(env)
        cfg = env.unwrapped.config
        if cfg.action_type != "continuous":
            raise ValueError("SoftmaxMixtureAction needs action_type='continuous'")
        if not (isinstance(scale, (int, float)) and 0 < scale <= 50):
            raise ValueError(f"SoftmaxMixtureAction scale must be in (0, 50], got {scale!r}")
        self.scale = float(scale)
        # Per class: the J configuration weights, plus the defer weight on envs with a queue.
        self.shape = (cfg.n_classes, int(np.prod(env.action_space.shape)) // cfg.n_classes)
        self.action_space = env.action_space

    @staticmethod
    def transform(actions: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
        """Map agent actions (..., C*J) to env actions (..., C*J), batched or not."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        logits = scale * a.reshape(*a.shape[:-1], *shape)
        logits -= logits.max(axis=-1, keepdims=True)
        w = np.exp(logits)
        return mixture_to_action(w / w.sum(axis=-1, keepdims=True))

    def action(self, action: np.ndarray) -> np.ndarray:
        """The env action of one agent action."""
        return self.transform(action, self.shape, self.scale)

    def spec_dict(self) -> dict[str, Any]:
        """What ``action_wrapper.json`` stores to rebuild the map."""
        return {"class": "agents.wrappers.SoftmaxMixtureAction",
                "kwargs": {"scale": self.scale}, "shape": list(self.shape)}


#: Wrappers whose action map :func:`action_map` can rebuild (name -> class).
ACTION_WRAPPERS: dict[str, Any] = {"agents.wrappers.SoftmaxMixtureAction": SoftmaxMixtureAction}


def _register_residual() -> None:
    from agents.residual import ResidualKnobAction, ResidualMixtureAction

    ACTION_WRAPPERS["agents.residual.ResidualMixtureAction"] = ResidualMixtureAction
    ACTION_WRAPPERS["agents.residual.ResidualKnobAction"] = ResidualKnobAction


_register_residual()


def action_map(spec: dict[str, Any]) -> Any:
    """A function batched-or-single agent actions -> env actions, from ``action_wrapper.json``.

    A map with ``needs_obs`` set (the residual mode of :mod:`agents.residual`) is called as
    ``map(actions, raw_observations)``.
    """
    name = spec.get("class")
    if name == "agents.residual.ResidualMixtureAction":
        from agents.residual import residual_map_from_spec

        return residual_map_from_spec(spec)
    if name == "agents.residual.ResidualKnobAction":
        from agents.residual import knob_map_from_spec

        return knob_map_from_spec(spec)
    if name not in ACTION_WRAPPERS:
        raise ValueError(f"unknown action wrapper {name!r} in {ACTION_WRAPPER_FILE}; known: "
                         f"{sorted(ACTION_WRAPPERS)}")
    shape = tuple(spec["shape"])
    scale = float(spec["kwargs"].get("scale", 3.0))
    return lambda a: ACTION_WRAPPERS[name].transform(a, shape, scale)  # type: ignore[arg-type]
