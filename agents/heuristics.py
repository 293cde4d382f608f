"""Rule-based dispatch policies (MODEL.md section 7).

Every heuristic reads the observation and the public config (``env.unwrapped.config``), never
hidden simulator state. Each works with both action types:

* ``continuous``: the rule's per-class mixture pi (C x J) is sent as the action
  (:func:`envs.spaces.mixture_to_action`, exact up to float32 rounding).
* ``discrete``: one configuration serves the whole slot, so the rule is solved class-blind
  (:mod:`agents.lp`, one probability q_j per configuration) and each slot draws j ~ q from the
  policy's own generator ``self.rng``; pure rules (``cheapest``, ``most_accurate``) always
  return their configuration.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from agents.base import Heuristic
from agents.lp import (
    RoutingModel,
    clip_target,
    max_accuracy,
    max_value_mixture,
    min_second_moment_mixture,
    routing_model,
)
from envs.outcomes import config_moments, reference_demand_kwh
from envs.spaces import STORE_SCALE_SLOTS, observation_names, serve_action

#: Default accuracy a variance-aware router may give up against the best accuracy reachable at
#: the critical mean demand (absolute fraction of tasks).
DEFAULT_ACCURACY_SLACK = 0.02


class MixtureHeuristic(Heuristic):
    """A heuristic whose rule is a mixture over configurations (per class, or class-blind).

    Subclasses implement :meth:`mixture`; :meth:`act` turns it into an action of either type.
    """

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env, seed)
        self.discrete = self.config.action_type == "discrete"
        self.model: RoutingModel = routing_model(self.config)
        self.n_configs = self.config.n_configs

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """Mixture of the slot, shape (C, J) (continuous) or (1, J) (discrete)."""
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action for one observation (see the module docstring for the discrete case)."""
        x = self.mixture(observation)
        if self.discrete:
            q = np.clip(x[0], 0.0, None)
            top = int(np.argmax(q))
            if q[top] >= 1.0 - 1e-12:
                return np.int64(top)
            return np.int64(self.rng.choice(self.n_configs, p=q / q.sum()))
        return serve_action(self.config, x)


class RandomPolicy(Heuristic):
    """Uniformly random action each slot, drawn from the policy's own seeded generator.

    Failure mode: ignores supply, storage and accuracy; it is the floor of the normalised score.
    """

    name = "random"

    def act(self, observation: np.ndarray) -> np.ndarray:
        """A uniform action: a random weight vector in [-1, 1], or a random configuration."""
        if self.config.action_type == "discrete":
            return np.int64(self.rng.integers(self.config.n_configs))
        return self.rng.uniform(-1.0, 1.0, size=self.action_space.shape).astype(np.float32)


class CheapestPolicy(MixtureHeuristic):
    """Every task to the smallest model with the shortest budget.

    Failure mode: lowest energy but near-zero accuracy on classes that need longer reasoning;
    in over-supplied or critical regimes it leaves most of the harvest unused.
    """

    name = "cheapest"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env, seed)
        n_b = len(self.config.token_budgets)
        j = int(np.argmin(self.config.model_params_b)) * n_b + 0
        rows = 1 if self.discrete else self.config.n_classes
        self._x = np.zeros((rows, self.n_configs))
        self._x[:, j] = 1.0

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed pure mixture."""
        return self._x


class MostAccuratePolicy(MixtureHeuristic):
    """Each class to the configuration with the highest accuracy (ties: lower mean energy).

    Failure mode: ignores energy; far above the critical demand it draws auxiliary energy
    linearly in time.
    """

    name = "most_accurate"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env, seed)
        acc, mean = self.model.accuracy, self.model.mean
        self._x = np.zeros_like(acc)
        for r in range(acc.shape[0]):
            best = np.flatnonzero(acc[r] >= acc[r].max() - 1e-12)
            self._x[r, best[np.argmin(mean[r, best])]] = 1.0

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed pure mixture."""
        return self._x


class MeanMatchingPolicy(MixtureHeuristic):
    """Certainty equivalent: the static mixture of largest expected value whose expected demand
    equals the expected harvest (the critical point), variance ignored.

    Failure mode: at the critical point its auxiliary draw and unused energy grow like
    sigma sqrt(T), and it picks high-variance configurations freely (O4, O8); any error in
    the energy estimates becomes a linear drift (O5).
    """

    name = "mean_matching"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env, seed)
        self._x = max_value_mixture(self.model, self.model.mean_harvest_kwh)

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed certainty-equivalent mixture."""
        return self._x


class VarianceAwarePolicy(MixtureHeuristic):
    """The paper's static router (O8): the mixture with the smallest second moment of slot
    demand, subject to expected demand = expected harvest and an accuracy floor.

    The floor defaults to the best accuracy reachable at that mean demand minus
    ``accuracy_slack`` (0.02, i.e. two points of accuracy); ``accuracy_floor`` sets it directly
    (it is lowered to the best reachable accuracy if above it).

    Failure mode: open loop; the store still performs a random walk (aux ~ sigma sqrt(T) at
    the critical point, only with a smaller sigma), and the floor trades accuracy for variance.

    Args:
        env: The environment.
        seed: Seed of the policy's generator (used by the discrete action type only).
        accuracy_floor: Smallest admissible fraction of correct answers, in [0, 1].
        accuracy_slack: Used when ``accuracy_floor`` is None, in [0, 1].
    """

    name = "variance_aware"

    def __init__(self, env: gym.Env, seed: int | None = None, accuracy_floor: float | None = None,
                 accuracy_slack: float = DEFAULT_ACCURACY_SLACK) -> None:
        super().__init__(env, seed)
        if accuracy_floor is not None and not 0.0 <= accuracy_floor <= 1.0:
            raise ValueError(f"accuracy_floor must be in [0, 1], got {accuracy_floor!r}")
        if not 0.0 <= accuracy_slack <= 1.0:
            raise ValueError(f"accuracy_slack must be in [0, 1], got {accuracy_slack!r}")
        target = self.model.mean_harvest_kwh
        if accuracy_floor is None:
            accuracy_floor = max_accuracy(self.model, target) - accuracy_slack
        self.accuracy_floor = float(accuracy_floor)
        self._x = min_second_moment_mixture(self.model, target, self.accuracy_floor)

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed variance-aware mixture."""
        return self._x


class VarianceFeedbackPolicy(MixtureHeuristic):
    """Closed loop: each slot, target mean demand = expected harvest + (S - S*) / tau, served by
    the variance-aware mixture of that mean, where S is the observed store level and the safety
    margin S* = z sigma sqrt(min(tau, slots left) / 2) is z times the store's stationary spread.

    With the proportional gain 1/tau the store is a mean-reverting walk with standard deviation
    about sigma sqrt(tau / 2); keeping its mean z of those above zero makes a shortfall rare, and
    shrinking the margin towards zero at the end of the episode leaves little energy unused.

    Failure mode: it reacts to the store only after the fact (a lag of about tau slots), so a
    harvest with long droughts (diurnal solar) still empties the store; a store smaller than
    the margin overflows; its mixture changes every slot, which costs some accuracy when the
    store is high or low.

    Args:
        env: The environment.
        seed: Seed of the policy's generator (discrete action type only).
        time_constant_slots: tau, slots over which a store deviation is corrected (> 0);
            default 24 (two hours of 5-minute slots).
        safety_z: z, the margin in store standard deviations (>= 0); default 2 (a Gaussian
            store falls below zero about 2% of the time).
        accuracy_slack: Accuracy the frontier mixtures may give up, as in ``variance_aware``;
            default 0: the loop absorbs variance across time, so its mixture at each mean is
            the least variable among the most accurate ones.
        grid: Number of precomputed frontier mixtures between the smallest and largest mean.

    The defaults were chosen on seeds disjoint from ``evaluate.py``'s default seeds.
    """

    name = "variance_feedback"

    def __init__(self, env: gym.Env, seed: int | None = None, time_constant_slots: float = 24.0,
                 safety_z: float = 2.0, accuracy_slack: float = 0.0, grid: int = 41) -> None:
        super().__init__(env, seed)
        if not time_constant_slots > 0:
            raise ValueError(f"time_constant_slots must be > 0, got {time_constant_slots!r}")
        if not safety_z >= 0:
            raise ValueError(f"safety_z must be >= 0, got {safety_z!r}")
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
        self.tau = float(time_constant_slots)
        self.z = float(safety_z)
        lo, hi = self.model.demand_range()
        self._means = np.linspace(lo, hi, grid)
        self._frontier = np.stack([
            min_second_moment_mixture(self.model, d, max_accuracy(self.model, d) - accuracy_slack)
            for d in self._means])
        centre = min_second_moment_mixture(
            self.model, self.model.mean_harvest_kwh,
            max_accuracy(self.model, self.model.mean_harvest_kwh) - accuracy_slack)
        #: Volatility of the net energy at the critical mixture [kWh/slot].
        self.sigma = self.model.stats(centre)["sigma_kwh"]
        cfg = self.config
        self._s_ref = STORE_SCALE_SLOTS * reference_demand_kwh(cfg, config_moments(cfg))
        names = list(getattr(env.unwrapped, "observation_names", None)
                     or observation_names(cfg))
        self._i_store, self._i_progress = names.index("store"), names.index("progress")

    def store_kwh(self, observation: np.ndarray) -> float:
        """Store level [kWh] recovered from the observation's normalised ``store`` feature."""
        x = float(observation[self._i_store])
        if math.isinf(self.config.storage_kwh):
            return x * self._s_ref / max(1.0 - x, 1e-9)
        return x * self.config.storage_kwh

    def target_demand(self, observation: np.ndarray) -> float:
        """Mean demand the slot should aim for [kWh]."""
        t = float(observation[self._i_progress]) * self.config.horizon
        left = max(self.config.horizon - t, 1.0)
        horizon = min(self.tau, left)
        margin = self.z * self.sigma * math.sqrt(horizon / 2.0)
        if math.isfinite(self.config.storage_kwh):
            margin = min(margin, 0.5 * self.config.storage_kwh)
        return self.model.mean_harvest_kwh + (self.store_kwh(observation) - margin) / horizon

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """Frontier mixture at the target demand (linear interpolation keeps the mean exact)."""
        d = clip_target(self.model, self.target_demand(observation))
        k = int(np.clip(np.searchsorted(self._means, d) - 1, 0, len(self._means) - 2))
        w = (d - self._means[k]) / (self._means[k + 1] - self._means[k])
        w = min(max(w, 0.0), 1.0)
        return (1.0 - w) * self._frontier[k] + w * self._frontier[k + 1]


class ScalingLawPolicy(MixtureHeuristic):
    """Mean matching on predicted energies: each configuration's per-task energy is predicted
    by the scaling-law outcome model (``envs.outcomes``) with a per-task error ``delta``, and
    the certainty-equivalent mixture is chosen on those predictions.

    With ``delta_kwh > 0`` the router underestimates every task's energy by delta, so the real
    drift of the net energy is -lambda delta and the auxiliary draw bends from sigma sqrt(T) to
    about lambda delta T beyond T* = sigma^2 / (lambda delta)^2 (O5); ``delta_kwh < 0``
    overestimates and leaves energy unused at the same rate.

    Failure mode: exactly that: a small systematic prediction error turns the critical
    regime's sqrt(T) costs into linear costs on long horizons.

    Args:
        env: The environment.
        seed: Seed of the policy's generator (discrete action type only).
        delta_kwh: Per-task energy underestimate delta [kWh]; None = ``delta_rel`` times the
            mean task energy of the reference mixture.
        delta_rel: Relative error used when ``delta_kwh`` is None (default 0.05).
    """

    name = "scaling_law"

    def __init__(self, env: gym.Env, seed: int | None = None, delta_kwh: float | None = None,
                 delta_rel: float = 0.05) -> None:
        super().__init__(env, seed)
        cfg = self.config
        if delta_kwh is None:
            if not math.isfinite(delta_rel):
                raise ValueError(f"delta_rel must be finite, got {delta_rel!r}")
            delta_kwh = delta_rel * reference_demand_kwh(cfg) / cfg.arrival_rate
        if not math.isfinite(delta_kwh):
            raise ValueError(f"delta_kwh must be finite, got {delta_kwh!r}")
        self.delta_kwh = float(delta_kwh)
        predicted = routing_model(cfg, self.discrete, energy_bias_kwh=-self.delta_kwh)
        self._x = max_value_mixture(predicted, predicted.mean_harvest_kwh)

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed mixture chosen on predicted energies."""
        return self._x


#: Heuristics by registry name.
HEURISTICS: dict[str, type[Heuristic]] = {
    cls.name: cls for cls in (RandomPolicy, CheapestPolicy, MostAccuratePolicy,
                              MeanMatchingPolicy, VarianceAwarePolicy, VarianceFeedbackPolicy,
                              ScalingLawPolicy)
}
