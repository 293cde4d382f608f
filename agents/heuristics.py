"""Rule-based dispatch policies (MODEL.md section 7).

Every heuristic reads the observation and the public config (``env.unwrapped.config``), never
hidden simulator state. Each works with both action types:

* ``continuous``: the rule's per-class mixture pi (C x J) is sent as the action
  (:func:`envs.actions.mixture_to_action`, exact up to float32 rounding).
* ``discrete``: one configuration serves the whole slot, so the rule is solved class-blind
  (:mod:`agents.lp`, one probability q_j per configuration) and each slot draws j ~ q from the
  policy's own generator ``self.rng``; pure rules (``cheapest``, ``most_accurate``) always
  return their configuration.
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np

from agents.base import Heuristic
from agents.lp import (
    DEFAULT_CAP_FRACTION,
    RoutingModel,
    clip_target,
    max_accuracy,
    max_value_mixture,
    min_second_moment_mixture,
    routing_model,
)
from envs.actions import queued_action, serve_action
from envs.config import FleetConfig
from envs.outcomes import config_moments, reference_demand_kwh
from envs.spaces import STORE_SCALE_SLOTS, observation_names

#: Default accuracy a variance-aware router may give up against the best accuracy reachable at
#: the critical mean demand (absolute fraction of tasks).
DEFAULT_ACCURACY_SLACK = 0.02


class MixtureHeuristic(Heuristic):
    """A heuristic whose rule is a mixture over configurations (per class, or class-blind).

    Subclasses implement :meth:`mixture`; :meth:`act` turns it into an action of either type.
    A subclass whose :meth:`mixture` returns one fixed array, whatever the observation, sets
    ``static = True`` next to it (batched evaluation then converts it once per step).
    """

    static: bool = False

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

    def act_rows(self, observations: np.ndarray,
                 rngs: list[np.random.Generator]) -> np.ndarray:
        """:meth:`act` of row k of a batch drawn from ``rngs[k]``: the same actions as
        ``act(observations[k])`` with ``self.rng = rngs[k]``, without a call per row."""
        if self.config.action_type == "discrete":
            return np.array([r.integers(self.config.n_configs) for r in rngs], dtype=np.int64)
        shape = self.action_space.shape
        return np.stack([r.uniform(-1.0, 1.0, size=shape) for r in rngs]).astype(np.float32)


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

    static = True

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

    static = True

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed pure mixture."""
        return self._x


class MeanMatchingPolicy(MixtureHeuristic):
    """Certainty equivalent: the static mixture of largest expected value whose expected demand
    equals the expected harvest (the critical point), variance ignored.

    Failure mode: at the critical point its auxiliary draw and unused energy grow like
    sigma sqrt(T), and it picks high-variance configurations freely (O4, O8); any error in
    the energy estimates becomes a linear drift (O5).

    Throughput caps (all the static mixtures here, ``agents.lp``): the expected token load
    of every capped model stays within ``DEFAULT_CAP_FRACTION`` of its cap and the mean is
    the achievable one closest to the harvest; being static, it neither defers nor follows
    the daily arrival peak, so it must keep wide head room (and under-uses the fleet off-peak).
    """

    name = "mean_matching"

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env, seed)
        self._x = max_value_mixture(self.model, self.model.mean_harvest_kwh)

    static = True

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

    static = True

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

    Queue-aware rules (envs with deadlines or throughput caps; ``queue_aware``, default on
    there; the paper envs never use them):

    * Load: the pending tasks of each class, n_c = (``arrivals_c`` + ``queue_c``) x rate_c,
      read by name from the observation, set the load level rho = the largest ratio, over the
      capped models, of the expected tokens of serving them with the critical mixture to its
      expected tokens at the mean arrival rate. The frontier is then the one whose expected
      load at rho times the mean rate fills at most ``cap_fraction`` of every cap (frontiers
      are cached per level, rho rounded up to a power of 1.25), and the target demand is
      divided among the rho-fold load (mean m' = idle + (target - idle) / rho).
    * Defer (opt-in, ``defer=True``): when the store is below the margin S* and the supply is
      expected to rise, every class with a deadline defers ``defer_fraction`` of its pending
      tasks (the env never
      defers a task due now and serves due tasks first under the caps). Supply rising: the
      one-hour forecast ``forecast_1h`` above the last harvest if the observation has it, else
      a rising harvest trend (exponential average of the slot-to-slot change of
      ``harvest_last``, weight ``trend_weight``). Otherwise nothing is deferred, which
      releases the whole backlog. Off by default because it did not pay on the shipped ids:
      on lrm/R1Trace-v0 (seeds 1001-1006, paired against the load rule alone) deferring
      everything cost 6.7 +- 1.9 reward per episode (half: 1.1 +- 0.5; a quarter: +0.2 +- 0.3),
      and 11 +- 5 with a 3-hour forecast in the observation (seeds 1001-1004): with deadlines
      of at most an hour and a store that is low only in a deficit, deferring shifts the
      deficit instead of meeting a surplus, and the backlog falls due at once.

    Failure mode: it reacts to the store only after the fact (a lag of about tau slots), so a
    harvest with long droughts (diurnal solar) still empties the store; a store smaller than
    the margin overflows; its mixture changes every slot, which costs some accuracy when the
    store is high or low. With a queue: deadlines of an hour or less cannot carry load
    across the night, so deferral helps only around sunrise and passing clouds; a
    backlog released when many tasks fall due together can exceed a cap and drop them; the
    trend signal lags the harvest by a few slots and a cloud edge fakes a sunrise.

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
        queue_aware: Use the load and defer rules above; None = on exactly when the env has a
            queue. False gives the non-deferring, load-blind loop (static cap head room of
            ``agents.lp.DEFAULT_CAP_FRACTION``).
        defer: With ``queue_aware``, also apply the defer rule (default False: load rule only).
        defer_fraction: Share of the pending tasks the defer rule keeps waiting, in [0, 1].
        cap_fraction: Share of each cap the load rule may fill on average, in (0, 1].
        trend_weight: Weight of the newest change in the harvest trend average, in (0, 1].

    The defaults were chosen on seeds disjoint from ``evaluate.py``'s default seeds.
    """

    name = "variance_feedback"

    def __init__(self, env: gym.Env, seed: int | None = None, time_constant_slots: float = 24.0,
                 safety_z: float = 2.0, accuracy_slack: float = 0.0, grid: int = 41,
                 queue_aware: bool | None = None, defer: bool = False,
                 cap_fraction: float = 0.8, trend_weight: float = 0.3,
                 defer_fraction: float = 1.0) -> None:
        super().__init__(env, seed)
        if not time_constant_slots > 0:
            raise ValueError(f"time_constant_slots must be > 0, got {time_constant_slots!r}")
        if not safety_z >= 0:
            raise ValueError(f"safety_z must be >= 0, got {safety_z!r}")
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
        if not 0.0 < cap_fraction <= 1.0:
            raise ValueError(f"cap_fraction must be in (0, 1], got {cap_fraction!r}")
        if not 0.0 <= defer_fraction <= 1.0:
            raise ValueError(f"defer_fraction must be in [0, 1], got {defer_fraction!r}")
        if not 0.0 < trend_weight <= 1.0:
            raise ValueError(f"trend_weight must be in (0, 1], got {trend_weight!r}")
        self.tau = float(time_constant_slots)
        self.z = float(safety_z)
        self.accuracy_slack = float(accuracy_slack)
        self.grid = grid
        _, self._means, self._frontier = _level_frontier(self.config, DEFAULT_CAP_FRACTION,
                                                         self.accuracy_slack, grid)
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
        self.queue_aware = cfg.queue_enabled if queue_aware is None else bool(queue_aware)
        if self.queue_aware and not cfg.queue_enabled:
            raise ValueError("queue_aware=True needs an env with a queue (class_deadlines or "
                             "model_tokens_per_slot in the config)")
        self.defer = bool(defer)
        self.cap_fraction = float(cap_fraction)
        self.trend_weight = float(trend_weight)
        self.defer_fraction = float(defer_fraction)
        if self.queue_aware:
            self._setup_queue(names, centre)

    # ------------------------------------------------------------------ paper loop
    def store_kwh(self, observation: np.ndarray) -> float:
        """Store level [kWh] recovered from the observation's normalised ``store`` feature."""
        x = float(observation[self._i_store])
        if math.isinf(self.config.storage_kwh):
            return x * self._s_ref / max(1.0 - x, 1e-9)
        return x * self.config.storage_kwh

    def margin_kwh(self, observation: np.ndarray) -> float:
        """Safety margin S* of the store [kWh] in the observation's slot."""
        t = float(observation[self._i_progress]) * self.config.horizon
        horizon = min(self.tau, max(self.config.horizon - t, 1.0))
        margin = self.z * self.sigma * math.sqrt(horizon / 2.0)
        if math.isfinite(self.config.storage_kwh):
            margin = min(margin, 0.5 * self.config.storage_kwh)
        return margin

    def target_demand(self, observation: np.ndarray) -> float:
        """Mean demand the slot should aim for [kWh]."""
        t = float(observation[self._i_progress]) * self.config.horizon
        left = max(self.config.horizon - t, 1.0)
        horizon = min(self.tau, left)
        margin = self.z * self.sigma * math.sqrt(horizon / 2.0)
        if math.isfinite(self.config.storage_kwh):
            margin = min(margin, 0.5 * self.config.storage_kwh)
        return self.model.mean_harvest_kwh + (self.store_kwh(observation) - margin) / horizon

    @staticmethod
    def _interpolate(means: np.ndarray, frontier: np.ndarray, model: RoutingModel,
                     target: float) -> np.ndarray:
        d = clip_target(model, target)
        k = int(np.clip(np.searchsorted(means, d) - 1, 0, len(means) - 2))
        gap = means[k + 1] - means[k]
        w = (d - means[k]) / gap if gap > 0 else 0.0  # a single achievable mean: gap 0
        w = min(max(w, 0.0), 1.0)
        return (1.0 - w) * frontier[k] + w * frontier[k + 1]

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """Frontier mixture at the target demand (linear interpolation keeps the mean exact)."""
        if self.queue_aware:
            return self._queue_mixture(observation)
        return self._interpolate(self._means, self._frontier, self.model,
                                 self.target_demand(observation))

    def mixture_batch(self, observations: np.ndarray, safety_z: np.ndarray | None = None,
                      time_constant_slots: np.ndarray | None = None) -> np.ndarray | None:
        """:meth:`mixture` of a batch of observations (B, dim) -> (B, C, J), or None.

        The paper loop only (None on queue envs, where the rule keeps per-episode state);
        the same operations as the one-observation path, so the same mixtures.
        ``safety_z`` and ``time_constant_slots`` (arrays (B,), default the policy's own z and
        tau) set the knobs row by row (``agents.residual.ResidualKnobMap``).
        """
        if self.queue_aware:
            return None
        z = self.z if safety_z is None else np.asarray(safety_z, dtype=np.float64)
        tau = self.tau if time_constant_slots is None else np.asarray(time_constant_slots,
                                                                      dtype=np.float64)
        obs = np.asarray(observations)
        cfg = self.config
        x = obs[:, self._i_store].astype(np.float64)
        if math.isinf(cfg.storage_kwh):
            store = x * self._s_ref / np.maximum(1.0 - x, 1e-9)
        else:
            store = x * cfg.storage_kwh
        t = obs[:, self._i_progress].astype(np.float64) * cfg.horizon
        horizon = np.minimum(tau, np.maximum(cfg.horizon - t, 1.0))
        margin = z * self.sigma * np.sqrt(horizon / 2.0)
        if math.isfinite(cfg.storage_kwh):
            margin = np.minimum(margin, 0.5 * cfg.storage_kwh)
        target = self.model.mean_harvest_kwh + (store - margin) / horizon
        lo, hi = self.model.demand_range()
        d = np.minimum(np.maximum(target, lo), hi)
        means, frontier = self._means, self._frontier
        k = np.clip(np.searchsorted(means, d) - 1, 0, len(means) - 2)
        gap = means[k + 1] - means[k]
        w = np.where(gap > 0, (d - means[k]) / np.where(gap > 0, gap, 1.0), 0.0)
        w = np.minimum(np.maximum(w, 0.0), 1.0)[:, None, None]
        return (1.0 - w) * frontier[k] + w * frontier[k + 1]

    # ------------------------------------------------------------------ queue rules
    def _setup_queue(self, names: list[str], centre: np.ndarray) -> None:
        cfg = self.config
        cls = cfg.class_names
        self._i_arr = np.array([names.index(f"arrivals_{c}") for c in cls])
        self._i_queue = np.array([names.index(f"queue_{c}") for c in cls])
        self._i_harvest = names.index("harvest_last")
        self._i_forecast = names.index("forecast_1h") if "forecast_1h" in names else None
        self._can_defer = np.asarray(cfg.class_deadlines or (0,) * cfg.n_classes) > 0
        # Expected tokens of each class on each capped model under the critical mixture, at
        # the mean rate: (K, C) for the continuous form, (K, 1) class-blind.
        full = routing_model(cfg, class_blind=False)
        if full.load is not None:
            mix = centre if not self.discrete else np.repeat(centre, cfg.n_classes, axis=0)
            self._class_load = (full.load * mix[None]).sum(axis=-1)
        else:
            self._class_load = None
        self._levels: dict[int, tuple[RoutingModel, np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the harvest trend (new episode)."""
        self._last_h: float | None = None
        self._trend = 0.0

    def load_level(self, observation: np.ndarray) -> tuple[float, float]:
        """(rho for the caps, ratio of pending tasks to the mean arrivals) of the slot."""
        share = np.asarray(observation[self._i_arr], dtype=np.float64) + np.asarray(
            observation[self._i_queue], dtype=np.float64)  # pending / rate, per class
        shares = np.asarray(self.config.class_shares, dtype=np.float64)
        count = float(np.dot(share, shares))  # pending tasks / mean arrivals per slot
        if self._class_load is None:
            return count, count
        rel = (self._class_load @ share) / np.maximum(self._class_load.sum(axis=1), 1e-300)
        return float(rel.max()), count

    def _level_frontier(self, rho: float) -> tuple[RoutingModel, np.ndarray, np.ndarray]:
        k = int(math.ceil(math.log(max(rho, 1e-3)) / math.log(1.25) - 1e-9))
        k = max(k, -6)
        if k not in self._levels:  # head room below the feasible minimum is raised to it
            self._levels[k] = _level_frontier(self.config, min(1.0, self.cap_fraction / 1.25**k),
                                              self.accuracy_slack, self.grid)
        return self._levels[k]

    def _queue_mixture(self, observation: np.ndarray) -> np.ndarray:
        rho, count = self.load_level(observation)
        model, means, frontier = self._level_frontier(rho)
        idle = model.idle_kwh
        target = idle + (self.target_demand(observation) - idle) / max(count, 1e-3)
        return self._interpolate(means, frontier, model, target)

    def defer_fractions(self, observation: np.ndarray) -> np.ndarray:
        """Defer fraction of each class (C,): see the class docstring; updates the trend."""
        h = float(observation[self._i_harvest])
        if self._last_h is not None:
            a = self.trend_weight
            self._trend = (1.0 - a) * self._trend + a * (h - self._last_h)
        self._last_h = h
        if not self.defer:
            return np.zeros(self.config.n_classes)
        if self._i_forecast is not None:
            rising = float(observation[self._i_forecast]) > h
        else:
            rising = self._trend > 0.0
        low = self.store_kwh(observation) < self.margin_kwh(observation)
        return np.where(self._can_defer & rising & low, self.defer_fraction, 0.0)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action for one observation: the mixture, plus defer fractions on queue envs."""
        if not self.queue_aware:
            return super().act(observation)
        defer = self.defer_fractions(observation)
        x = self.mixture(observation)
        if self.discrete:
            q = np.clip(x[0], 0.0, None)
            top = int(np.argmax(q))
            j = top if q[top] >= 1.0 - 1e-12 else int(self.rng.choice(self.n_configs,
                                                                        p=q / q.sum()))
            return np.int64(j + (self.n_configs if np.any(defer > 0) else 0))
        return queued_action(x, defer)


@functools.lru_cache(maxsize=64)
def _level_frontier(config: FleetConfig, cap_fraction: float, accuracy_slack: float,
                    grid: int) -> tuple[RoutingModel, np.ndarray, np.ndarray]:
    """Routing model and frontier (means, mixtures) at one cap head room (cached: a frontier
    costs 2 x grid linear programs and depends only on these public parameters)."""
    model = routing_model(config, cap_fraction=cap_fraction)
    lo, hi = model.demand_range()
    means = np.linspace(lo, hi, grid)
    frontier = np.stack([
        min_second_moment_mixture(model, d, max_accuracy(model, d) - accuracy_slack)
        for d in means])
    frontier.setflags(write=False)
    return model, means, frontier


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

    static = True

    def mixture(self, observation: np.ndarray) -> np.ndarray:
        """The fixed mixture chosen on predicted energies."""
        return self._x


#: Heuristics by registry name.
HEURISTICS: dict[str, type[Heuristic]] = {
    cls.name: cls for cls in (RandomPolicy, CheapestPolicy, MostAccuratePolicy,
                              MeanMatchingPolicy, VarianceAwarePolicy, VarianceFeedbackPolicy,
                              ScalingLawPolicy)
}
