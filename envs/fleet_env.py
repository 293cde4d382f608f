"""Gymnasium shell around the fleet simulator core (one copy, B = 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from envs import kernel
from envs import kernel_queue as kq
from envs.actions import discrete_action, real_action_array, validate_queued_action
from envs.config import FleetConfig, plain_spec, resolve_config
from envs.info import reset_info, slot_result
from envs.realistic import RealisticCore, make_core
from envs.reward import reward_weights
from envs.spaces import (
    action_mask,
    action_space,
    make_observer,
    observation_names,
    observation_space,
)

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
#: How ``FleetEnv.step`` takes an action (``FleetEnv._step_kind``).
_STEP_CONTINUOUS, _STEP_DISCRETE, _STEP_QUEUE = 0, 1, 2
_MODE_ACTION, _MODE_CONFIG = kernel.MODE_ACTION, kernel.MODE_CONFIG

class FleetEnv(gym.Env[np.ndarray, np.ndarray]):
    r"""Energy-aware dispatch of reasoning tasks to a fleet of large reasoning models (LRMs).

    ## Description

    Each slot (5 minutes by default) a Poisson number of reasoning tasks arrives, split over
    difficulty classes (easy, medium, hard). The agent routes the tasks of each class to
    *configurations*: a model (8B, 32B, 70B active parameters) and a reasoning-token budget
    (1k, 4k, 16k tokens). A task needs a negative-binomial number of reasoning steps; it stops
    when solved (oracle stopping), is correct if its model holds the needed skills and it
    finishes within the budget, and otherwise runs to the budget. Its energy is the model's
    J/token times the tokens it ran. A harvested *baseline* supply (i.i.d. gamma in the paper
    presets) fills an energy store; *auxiliary* energy covers any shortfall, and baseline energy
    that does not fit in the store is *wasted*. The reward trades correct answers against
    auxiliary and wasted energy. The model follows "Energy-Aware Routing to Large Reasoning
    Models" (Ellis-Mohr, Hartman, Varshney, arXiv:2601.00823); every task carries latent random
    numbers drawn at arrival, so its outcome under every configuration is fixed before the
    agent acts (common random numbers).

    ## Action Space

    ``action_type="continuous"`` (default): ``Box(-1, 1, (C*J,), float32)``, row-major
    (class, configuration) with configurations model-major (``j = model * K + budget``).
    Weight ``w = (a + 1) / 2`` is normalised per class into the mixture of configurations that
    the class's tasks are sent to; all ``-1`` in a class means uniform. A pure configuration is
    ``+1`` at one entry and ``-1`` elsewhere. ``envs.actions.mixture_to_action`` builds the
    action of any mixture.

    ``action_type="discrete"``: ``Discrete(J)``: every task of the slot goes to configuration j.

    With deadlines or throughput caps (``class_deadlines``, ``model_tokens_per_slot``; the
    ``R1Trace`` ids): ``Box(-1, 1, (C*(J+1),))`` with a "defer" weight after each class's J
    configuration weights (defer fraction = w_defer / sum of the class's weights; build it with
    ``envs.actions.queued_action``), or ``Discrete(2J)`` (``a >= J``: defer every task that is
    not due, serve the due ones on configuration ``a - J``). Queue rules: ``envs.realistic``.

    ## Observation Space

    ``Box(float32, (10 + C,))``, see ``envs.spaces.observation_names``:

    | index | name | meaning | range |
    |---|---|---|---|
    | 0 | store | S/S_max, or S/(S + 12 D_ref) if the store is unbounded | [0, 1] |
    | 1 | harvest_last | previous slot's harvest / mean harvest | [0, inf) |
    | 2 | demand_last | previous slot's demand / D_ref | [0, inf) |
    | 3 | aux_last | previous slot's auxiliary energy / D_ref | [0, inf) |
    | 4 | waste_last | previous slot's wasted energy / D_ref | [0, inf) |
    | 5..4+C | arrivals_c | tasks of class c to dispatch now / their mean rate | [0, inf) |
    | 5+C, 6+C | time_sin, time_cos | time of day of the slot | [-1, 1] |
    | 7+C | progress | t / horizon | [0, 1] |
    | 8+C | net_mean | running mean of (H - D) / D_ref this episode | (-inf, inf) |
    | 9+C | net_std | running std of (H - D) / D_ref this episode | [0, inf) |

    Appended when enabled (``envs.layout.extra_feature_names``): ``queue_<class>``, tasks
    waiting from earlier slots / the class's mean rate (queue enabled); ``forecast_<h>h``, noisy
    forecast of the mean harvest of hour h ahead / mean harvest (``forecast_hours`` > 0).

    D_ref is the mean demand per slot of the reference mixture (every class uniform over all
    configurations) [kWh].

    The ``-v1`` ids (``observation_version=1``) append the public quantities the heuristics
    read (``envs.observation``): ``store_log`` = log(1 + S / D_ref), ``capacity_log`` =
    log(1 + S_max / D_ref) (0 if unbounded), ``capacity_finite``, ``harvest_mean`` (mean
    harvest / D_ref), ``harvest_cv``, ``demand_std`` (slot demand std of the reference
    mixture / D_ref), ``arrival_rate_log``, ``slots_left`` (/ 288) and ``harvest_trend``
    (running average of the change of ``harvest_last``, weight 0.3).

    ## Rewards

    ``reward = sum(w[k] * info["reward_terms"][k])`` with terms in natural units:
    ``value_correct`` (sum of class values of correct answers), ``aux_kwh``, ``waste_kwh``,
    ``leftover_kwh`` (on the last slot only: energy left in the store above S_0, the unused
    baseline energy of the episode), and effective weights ``env.unwrapped.reward_weights``:
    ``w_correct / (arrival_rate * mean class value)``, ``-w_aux / D_ref``, ``-w_waste / D_ref``,
    ``-w_leftover / D_ref``, and ``dropped`` (tasks past their deadline, queue only) with
    ``-w_dropped / arrival_rate``. A slot where every task is
    correct and no auxiliary energy is drawn or baseline energy wasted earns ``w_correct``.

    ## Starting State

    Empty store (``initial_storage_kwh``); the first slot's arrivals are visible.

    ## Episode End

    Never terminates; truncated after ``horizon`` slots (288 = one day of 5-minute slots).

    ## Arguments

    ``gym.make(id, config=..., render_mode=None, **overrides)``: ``config`` is a preset name
    (``critical``, ``oversupply``, ``undersupply``, ``volatile``; realistic: ``solar_day``,
    ``solar_winter``, ``wind_day``, ``wind_winter``, ``r1_trace``, ``r1_trace_heavy``,
    ``r1_trace_bursty``, ``r1_trace_winter``), a ``FleetConfig`` or a dict; any
    ``FleetConfig`` field can be overridden, e.g. ``provisioning``, ``storage_kwh``
    (``math.inf`` allowed), ``harvest_cv``, ``arrival_rate``, ``horizon``, ``action_type``.

    Realistic fields (all off in the paper presets; units and sources in ``FleetConfig``):

    | argument | meaning |
    |---|---|
    | ``harvest_process`` | ``iid_gamma`` (paper), ``solar`` (NSRDB 2023 GHI), ``wind`` (80 m) |
    | ``harvest_months`` | months from which the start day is drawn (empty = year) |
    | ``harvest_reference_months`` | months over which mean harvest = provisioning x D_ref |
    | ``trace_start_day``, ``trace_start_hour`` | fixed start day (-1 = seeded), start hour |
    | ``forecast_hours``, ``forecast_noise`` | noisy hourly harvest forecast in the observation |
    | ``arrival_process`` | ``poisson``, ``azure_conv``, ``azure_code``, ``servegen_r1`` |
    | ``arrival_cv`` | gamma inter-arrival CV of ``servegen_r1`` (2.28) |
    | ``class_deadlines`` | deadline per class [slots]; enables the queue and defer action |
    | ``model_tokens_per_slot`` | throughput cap per model [tokens/slot] |
    | ``w_dropped`` | weight of dropped tasks |
    | ``charge_efficiency``, ``discharge_efficiency``, ``idle_power_kw`` | store and idle |
    ``env.unwrapped.config`` is the resolved config. Render modes: ``ansi``, ``rgb_array``.

    A mapping given as ``config`` may name its base under the key ``"config"`` and override
    fields with its other keys (and may carry ``render_mode``): RLlib hands its ``env_config``
    to the class positionally, ``FleetEnv({"config": "critical", "horizon": 96})``. Numpy
    values (``np.int64``, ``np.float32``, 1-D arrays) are taken as Python numbers and tuples.
    ``action_masks()`` gives the legal discrete actions (all of them) for maskable learners.

    ```python
    import gymnasium as gym
    import envs  # registers the lrm/* ids
    env = gym.make("lrm/Critical-v1", storage_kwh=0.5, action_type="discrete")
    env = gym.make("lrm/R1Trace-v1", forecast_hours=3)   # solar, R1 day, deadlines, caps
    ```

    ## Version History

    * v1: the observation gains the public quantities every shipped heuristic reads (store
      in log slots of reference demand, store capacity, mean and variability of the
      harvest, the demand's reference standard deviation, arrival rate, slots left, harvest
      trend; ``envs.observation``); episodes, actions and rewards are those of v0 (same seed,
      same episode), and the v0 features keep their place at the front of the vector.
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    _spec: EnvSpec | None = None

    def __init__(self, config: FleetConfig | str | Mapping[str, Any] | None = "critical",
                 render_mode: str | None = None, **overrides: Any) -> None:
        if isinstance(config, Mapping) and "render_mode" in config and render_mode is None:
            # An env_config mapping handed over positionally (RLlib) may carry render_mode.
            render_mode = config["render_mode"]
            config = {k: v for k, v in config.items() if k != "render_mode"}
        self.config: FleetConfig = resolve_config(config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} "
                             f"or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.core = make_core(self.config, batch_size=1)
        self.observer = make_observer(self.core)
        self.observation_space = observation_space(self.config)
        self.action_space = action_space(self.config)
        self.observation_names = observation_names(self.config)
        self.reward_weights = reward_weights(self.core)
        self._discrete = self.config.action_type == "discrete"
        self._realistic = isinstance(self.core, RealisticCore)
        self._horizon = self.config.horizon
        self._s0 = self.config.initial_storage_kwh
        #: How ``step`` takes an action: a continuous or discrete action to the core's kernel,
        #: or any action to the queue step.
        self._queued = self.config.queue_enabled
        self._step_kind = (_STEP_QUEUE if self._queued
                           else _STEP_DISCRETE if self._discrete else _STEP_CONTINUOUS)
        self._shape = self.action_space.shape
        self._n_actions = int(self.action_space.n) if self._discrete else 0
        self._act1 = np.zeros(1)  # a discrete queue action
        self._bind()
        self._last: dict[str, Any] | None = None
        #: Per slot (harvest, demand, storage) [kWh], kept for the rgb_array render only.
        self._history: list[tuple[float, float, float]] = []
        self._keep_history = render_mode == "rgb_array"
        self._needs_reset = True

    @property
    def spec(self) -> EnvSpec | None:
        """The spec ``gym.make`` gave this env, its kwargs as plain Python values."""
        return self._spec

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        # gym.make stores its kwargs here as given: numpy scalars and arrays become Python
        # numbers and tuples (as in the config), so spec.to_json() and gym.make(spec) work.
        self._spec = plain_spec(value)

    def _bind(self) -> None:
        """Copy 0's rows of the core's result and observation buffers (views), its kernel table
        and its kernel entry."""
        core = self.core
        self._res_f0 = core.res_f[0, :kernel.N_RES_F]
        self._res_i0 = core.res_i[0, :kernel.N_RES_I]
        self._obs0 = core.obs[0]
        self._configs = core._configs
        self._tab = core._tab  # the core's kernel table (renewed when a reset grows a buffer)
        self._step = core._step
        self._no_act = core._no_act

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_tab", "_step"):  # rebuilt by _bind
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()  # an unpickled copy's views must look at its own core's buffers

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        arrivals_rng, harvest_rng, tasks_rng = self.np_random.spawn(3)
        self.core.reset_copy(0, arrivals_rng, harvest_rng, tasks_rng)
        self._tab = self.core._tab
        self._last = None
        self._history = []
        self._needs_reset = False
        return self.observer.observe()[0], reset_info(float(self.core.storage[0]))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (and after an episode ends)")
        kind = self._step_kind
        if kind == _STEP_CONTINUOUS:
            a = action
            if type(a) is not np.ndarray or (a.dtype is not _F32 and a.dtype is not _F64):
                a = real_action_array(a)
            if a.shape != self._shape:
                raise ValueError(f"action must have shape {self._shape} (classes x "
                                 f"configurations), got shape {a.shape}")
            r = self._step(self._tab, _MODE_ACTION, a)
            if r[0]:  # BAD_ACTION
                raise ValueError(f"action entries must be finite and in [-1, 1], got min "
                                 f"{float(a.min())!r}, max {float(a.max())!r}")
        elif kind == _STEP_DISCRETE:
            self._configs[0] = discrete_action(action, self._n_actions)
            r = self._step(self._tab, _MODE_CONFIG, self._no_act)
        else:
            r = self._step_queue(action)
        reward, truncated, info = slot_result(r)
        if self._keep_history:
            self._history.append((info["harvest_kwh"], info["demand_kwh"], info["storage_kwh"]))
        self._needs_reset = truncated
        self._last = info
        return self._obs0.copy(), reward, False, truncated, info

    def _step_queue(self, action: Any) -> tuple:
        """One slot of a queue id (``envs.realistic``; its compiled step decodes and checks
        the action); returns the slot as :func:`envs.kernel.step_bound16` does."""
        core = self.core
        if self._discrete:  # an index in [0, 2J), held as float64 by the queue step
            self._act1[0] = discrete_action(action, self._n_actions)
            mode, action = kq.DISCRETE, self._act1
        elif (type(action) is np.ndarray and action.shape == self._shape
              and (action.dtype is _F32 or action.dtype is _F64)):
            mode = kq.BOX if core._box_in_kernel else -1
        else:
            mode, action = -1, validate_queued_action(self.config, action, self.action_space)
        if mode < 0:  # the queue step's other decodes (envs.realistic)
            core.run_action(action)
            return (kernel.OK, *self._res_f0.tolist(), *self._res_i0.tolist())
        r = core._qstep(core._qtab, mode, action)
        if r[0] != kq.OK:
            raise core._queue_error(r[0], mode, action)
        return r

    def action_masks(self) -> np.ndarray:
        """Legal actions of a discrete env, for maskable learners (sb3-contrib's MaskablePPO).

        All True in every state, on every id: no action is illegal (see
        ``envs.spaces.action_mask``). Raises ``TypeError`` for a continuous action space.
        """
        return action_mask(self.config, self.action_space)

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_ansi(self) -> str:
        core, info = self.core, self._last
        t = int(core.t[0])
        cap = "inf" if math.isinf(self.config.storage_kwh) else f"{self.config.storage_kwh:.4f}"
        lines = [f"slot {t}/{self.config.horizon}   store {core.storage[0]:.4f} kWh (cap {cap})"]
        if info is None:
            lines.append("(no slot played yet)")
        else:
            d_ref = core.ref_demand_kwh
            def bar(x: float) -> str:
                return "#" * min(40, int(round(20 * x / d_ref)))
            lines += [
                f"harvest {info['harvest_kwh']:.5f} kWh |{bar(info['harvest_kwh'])}",
                f"demand  {info['demand_kwh']:.5f} kWh |{bar(info['demand_kwh'])}",
                f"aux     {info['aux_kwh']:.5f} kWh   waste {info['waste_kwh']:.5f} kWh",
                f"tasks   arrived {info['arrived']}  correct {info['correct']}  "
                f"dropped {info['dropped']}",
            ]
        return "\n".join(lines) + "\n"

    def _render_rgb(self) -> np.ndarray:
        """A 160 x 320 image: harvest (green) and demand (red) per slot, store level (blue)."""
        h, w = 160, 320
        img = np.full((h, w, 3), 255, dtype=np.uint8)
        t = int(self.core.t[0])
        hist = np.array(self._history[max(0, t - 96):t]).reshape(-1, 3).T
        if hist.shape[1]:
            scale = max(float(hist[:2].max()), 1e-12)
            cols = np.linspace(0, w - 40, hist.shape[1] + 1).astype(int)
            for n in range(hist.shape[1]):
                x0, x1 = cols[n], max(cols[n] + 1, cols[n + 1])
                hh = int((h - 10) * hist[0, n] / scale)
                dd = int((h - 10) * hist[1, n] / scale)
                img[h - hh:, x0:x1] = (60, 170, 60)
                img[h - dd:h - dd + 2 if dd else h, x0:x1] = (200, 40, 40)
        s = float(self.core.storage[0])
        cap = self.config.storage_kwh
        frac = s / cap if math.isfinite(cap) and cap > 0 else s / (s + 12 * self.core.ref_demand_kwh)
        img[h - int((h - 10) * frac):, w - 30:w - 10] = (40, 80, 200)
        return img
