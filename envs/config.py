"""Configuration of the fleet model: one frozen dataclass, named presets, validation.

Every constant is tagged with where it comes from:

* *measured*: a published measurement (source given);
* *calibrated*: chosen to reproduce a published number (source given);
* *modelled*: a modelling choice of this suite, documented here.

Units are in field names and docstrings: energy in kWh (ledger) or J (per token), time in slots.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTION_TYPES = ("continuous", "discrete")

#: Smallest positive coefficient of variation of a gamma process (harvest, arrivals): its
#: shape 1 / cv^2 must be a finite float.
MIN_POSITIVE_CV = 1e-150

#: The harvest processes ``FleetConfig.harvest_process`` may name, each with the config fields
#: that only it reads (a field set away from its default under another process is refused).
#: The process classes (envs/processes.py, envs/trace_processes.py) take their
#: ``config_fields`` from here.
HARVEST_PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "iid_gamma": ("harvest_cv",),
    "solar": ("harvest_months", "harvest_reference_months", "trace_start_day"),
    "wind": ("harvest_months", "harvest_reference_months", "trace_start_day"),
}
#: The arrival processes ``FleetConfig.arrival_process`` may name, likewise.
ARRIVAL_PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "poisson": (),
    "azure_conv": (),
    "azure_code": (),
    "servegen_r1": ("arrival_cv",),
}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def plain_value(value: Any) -> Any:
    """``value`` with numpy scalars and 1-D arrays turned into Python numbers and tuples.

    ``np.int64(5)`` becomes ``5``, ``np.float32(0.5)`` becomes ``0.5``, ``np.bool_`` a Python
    bool (which the numeric checks refuse, as they refuse ``True``), ``np.str_`` a ``str``;
    lists, tuples and 1-D arrays become tuples of such values. Anything else is returned as is.
    A config built from numpy values is then JSON-clean and hashable like one built from
    Python values.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        if value.ndim == 1:
            return tuple(value.tolist())
        return value
    if isinstance(value, (list, tuple)):
        return tuple(plain_value(x) for x in value)
    return value


def plain_spec(spec: Any) -> Any:
    """A Gymnasium ``EnvSpec`` whose kwargs hold plain values (:func:`plain_value`, also in
    nested dicts), so ``spec.to_json()`` works after ``gym.make(id, horizon=np.int64(96))``."""
    def plain(v: Any) -> Any:
        return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else plain_value(v)

    if spec is None or not getattr(spec, "kwargs", None):
        return spec
    return dataclasses.replace(spec, kwargs=plain(spec.kwargs))


@dataclass(frozen=True)
class FleetConfig:
    """Parameters of the LRM fleet model (see the model description in the README).

    Episode:
        horizon: Slots per episode [slots]; 288 slots of 5 minutes make one day.
        slot_minutes: Length of one slot [min]; used for idle energy and time-of-day features.

    Workload (task classes c = 1..C):
        arrival_rate: Mean task arrivals per slot [tasks/slot], Poisson (paper: i.i.d.).
        class_names: Name of each task class.
        class_shares: Share phi_c of arrivals in each class; non-negative, sums to 1.
        class_skills: Successful reasoning steps m_c a task of the class needs (modelled;
            with the defaults the fleet's mean output length is about 1.5k tokens, as in the
            production DeepSeek-R1 day of ServeGen, mean 1,527 tokens).
        class_values: Value of one correct answer of the class [reward units before scaling].

    Fleet (models i = 1..M, budgets k = 1..K; a configuration is a pair (i, k)):
        model_names: Name of each model.
        model_params_b: Active parameters N_i [billions]; informs the scaling-law router.
        model_j_per_token: Energy per output token e_i [J/token], accelerators of one replica.
            Calibrated: EcoLogits fit to ML.ENERGY H100 data at batch 64 (0.162 J for 8B on one
            GPU, 0.212 J for 32B on one GPU, 2 x 0.290 J for 70B on two GPUs); the 8B value
            lies inside the measured 0.12 - 0.20 J/token (ML.ENERGY longitudinal study).
        model_step_success: Probability r_i that one reasoning step succeeds (modelled;
            larger models need fewer, less variable steps).
        model_skill_coverage: Probability gamma_i that the model holds one needed skill
            (modelled); a task of class c is solvable at all with probability gamma_i**m_c.
        token_budgets: Reasoning-token caps b_k [tokens], increasing.
        step_tokens: Tokens per reasoning step omega [tokens] (MODEL.md: about 25).

    Supply and storage:
        provisioning: Mean harvest divided by the mean demand of the reference mixture
            (every class split uniformly over all configurations); 1.0 is the critical point.
        harvest_cv: Coefficient of variation of the i.i.d. harvest per slot [-].
        harvest_process: Name of the harvest process (see ``envs.processes.HARVEST_PROCESSES``).
        arrival_process: Name of the arrival process (see ``envs.processes.ARRIVAL_PROCESSES``).
        storage_kwh: Capacity S_max of the energy store [kWh]; ``math.inf`` means unbounded.
        initial_storage_kwh: Energy in the store at the start of an episode S_0 [kWh].
        charge_efficiency: Fraction of surplus energy that reaches the store (extension).
        discharge_efficiency: Fraction of stored energy that reaches the fleet (extension).
        idle_power_kw: Power the powered-on fleet draws when idle [kW] (extension; 0 = paper).
        harvest_months: Months (1-12) from which a trace-driven harvest draws the start day of
            an episode; empty = the whole year (extension; ``solar`` and ``wind`` only).
        harvest_reference_months: Months over which the mean harvest of a trace-driven supply
            equals ``provisioning`` x the reference demand: this fixes the installed capacity.
            Empty = ``harvest_months``. A held-out season keeps the training months here, so
            the same plant sees a different season (extension).
        trace_start_day: Day of the year (0-364) at which trace-driven supply starts; -1 =
            drawn from the seed among the days of ``harvest_months`` (extension).
        trace_start_hour: Local hour of day at which episodes of trace-driven supply and of the
            ``servegen_r1`` arrivals start [h]; also sets the time-of-day features.
        forecast_hours: Hours of noisy harvest forecast appended to the observation, one
            feature per hour ahead; 0 = off (extension).
        forecast_noise: Standard deviation of the forecast error of the next hour, relative to
            the mean harvest; it grows with the square root of the lead time [-].

    Arrival traces (extension):
        arrival_cv: Coefficient of variation of the gamma inter-arrival times of the
            ``servegen_r1`` arrivals [-]. Calibrated: 2.28 is the request-weighted mean CV of
            the ServeGen DeepSeek-R1 clients (``servegen_r1_client_windows.csv``).

    Deadlines, queue and capacity (extension; all off in the paper presets):
        class_deadlines: Deadline of each class [slots]: a task arriving in slot s may be served
            in slots s..s+d_c, and is dropped if still waiting after slot s+d_c. 0 = serve in
            the arrival slot. Empty = no queue (the paper). Enables the "defer" action.
        model_tokens_per_slot: Throughput cap of each model [output tokens/slot]; ``math.inf``
            = unlimited. Empty = unlimited parallelism (the paper). Tasks that do not fit wait
            in the queue, or are dropped at their deadline (see ``envs.realistic``); caps
            without ``class_deadlines`` mean every deadline is 0 (no waiting).

    Reward (weights of named components; the env scales them to order 1 per slot):
        w_correct: Weight of the value of correct answers.
        w_aux: Weight of the auxiliary energy drawn.
        w_waste: Weight of the baseline energy wasted.
        w_leftover: Weight of the baseline energy left in the store at the end of the episode
            (above S_0). MODEL.md: with an unbounded store the unused baseline energy S_T is
            the waste; this term makes over-supply cost something in the unbounded presets.
        w_dropped: Weight of the tasks dropped past their deadline (queue enabled only).

    Interface:
        action_type: ``"continuous"`` (Box mixture per class) or ``"discrete"`` (one
            configuration for every task of the slot).
        observation_version: Observation layout: 0 (the ``-v0`` ids) or 1 (the ``-v1`` ids:
            the v0 features plus the public quantities the heuristics read, see
            ``envs.observation``).
    """

    horizon: int = 288
    slot_minutes: float = 5.0

    arrival_rate: float = 20.0
    class_names: tuple[str, ...] = ("easy", "medium", "hard")
    class_shares: tuple[float, ...] = (0.6, 0.3, 0.1)
    class_skills: tuple[int, ...] = (10, 40, 160)
    class_values: tuple[float, ...] = (1.0, 1.0, 1.0)

    model_names: tuple[str, ...] = ("llm-8b", "llm-32b", "llm-70b")
    model_params_b: tuple[float, ...] = (8.0, 32.0, 70.0)
    model_j_per_token: tuple[float, ...] = (0.162, 0.212, 0.580)
    model_step_success: tuple[float, ...] = (0.45, 0.60, 0.75)
    model_skill_coverage: tuple[float, ...] = (0.990, 0.995, 0.998)
    token_budgets: tuple[int, ...] = (1024, 4096, 16384)
    step_tokens: int = 25

    provisioning: float = 1.0
    harvest_cv: float = 0.3
    harvest_process: str = "iid_gamma"
    arrival_process: str = "poisson"
    storage_kwh: float = math.inf
    initial_storage_kwh: float = 0.0
    charge_efficiency: float = 1.0
    discharge_efficiency: float = 1.0
    idle_power_kw: float = 0.0
    harvest_months: tuple[int, ...] = ()
    harvest_reference_months: tuple[int, ...] = ()
    trace_start_day: int = -1
    trace_start_hour: float = 0.0
    forecast_hours: int = 0
    forecast_noise: float = 0.2

    arrival_cv: float = 2.28
    class_deadlines: tuple[int, ...] = ()
    model_tokens_per_slot: tuple[float, ...] = ()

    w_correct: float = 1.0
    w_aux: float = 1.0
    w_waste: float = 0.5
    w_leftover: float = 0.5
    w_dropped: float = 1.0

    action_type: str = "continuous"
    observation_version: int = 0

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        # JSON round trips hand back lists, numpy code hands over numpy scalars and arrays:
        # store Python numbers and tuples, so the config stays hashable and JSON-clean.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            plain = plain_value(value)
            if plain is not value:
                object.__setattr__(self, f.name, plain)
        self._validate()

    def _validate(self) -> None:  # noqa: C901 - one flat list of checks reads best
        def number(name: str, lo: float, hi: float, *, lo_open: bool = False,
                   hi_open: bool = False, allow_inf: bool = False, integer: bool = False) -> None:
            v = getattr(self, name)
            if integer:
                ok_type = isinstance(v, int) and not isinstance(v, bool)
            else:
                ok_type = _is_number(v)
            rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            kind = "an integer" if integer else "a number"
            if not ok_type:
                raise ValueError(f"FleetConfig.{name} must be {kind} in {rng}, got {v!r}")
            if math.isnan(v) or (math.isinf(v) and not allow_inf):
                raise ValueError(f"FleetConfig.{name} must be finite and in {rng}, got {v!r}")
            if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
                raise ValueError(f"FleetConfig.{name} must be in {rng}, got {v!r}")

        def seq(name: str, length: int | None, lo: float, hi: float, *, lo_open: bool = False,
                integer: bool = False, strings: bool = False) -> None:
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) == 0:
                raise ValueError(f"FleetConfig.{name} must be a non-empty tuple, got {v!r}")
            if length is not None and len(v) != length:
                raise ValueError(
                    f"FleetConfig.{name} must have {length} entries (one per "
                    f"{'class' if name.startswith('class') else 'model'}), got {len(v)}")
            for j, x in enumerate(v):
                if strings:
                    if not isinstance(x, str) or not x:
                        raise ValueError(f"FleetConfig.{name}[{j}] must be a non-empty string")
                    if x in v[:j]:
                        raise ValueError(f"FleetConfig.{name} must be distinct names, got {v!r}"
                                         f" ({x!r} at positions {v.index(x)} and {j})")
                    continue
                ok = (isinstance(x, int) and not isinstance(x, bool)) if integer else _is_number(x)
                rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
                if not ok or math.isnan(x) or math.isinf(x) or x < lo or x > hi or (
                        lo_open and x == lo):
                    kind = "an integer" if integer else "a finite number"
                    raise ValueError(f"FleetConfig.{name}[{j}] must be {kind} in {rng}, got {x!r}")

        number("horizon", 1, 10_000_000, integer=True)
        number("slot_minutes", 0, 1e6, lo_open=True)
        number("arrival_rate", 0, 1e6, lo_open=True)
        seq("class_names", None, 0, 0, strings=True)
        n_cls = len(self.class_names)
        seq("class_shares", n_cls, 0, 1)
        if abs(sum(self.class_shares) - 1.0) > 1e-9:
            raise ValueError(
                f"FleetConfig.class_shares must sum to 1, got {sum(self.class_shares)!r}")
        seq("class_skills", n_cls, 1, 100_000, integer=True)
        seq("class_values", n_cls, 0, 1e9)
        seq("model_names", None, 0, 0, strings=True)
        n_mod = len(self.model_names)
        seq("model_params_b", n_mod, 0, 1e6, lo_open=True)
        seq("model_j_per_token", n_mod, 0, 1e6, lo_open=True)
        seq("model_step_success", n_mod, 0, 1, lo_open=True)
        seq("model_skill_coverage", n_mod, 0, 1)
        number("step_tokens", 1, 1_000_000, integer=True)
        seq("token_budgets", None, self.step_tokens, 10_000_000, integer=True)
        if any(b2 <= b1 for b1, b2 in zip(self.token_budgets, self.token_budgets[1:])):
            raise ValueError(
                f"FleetConfig.token_budgets must be strictly increasing, got {self.token_budgets}")
        number("provisioning", 0, 1e6)
        number("harvest_cv", 0, 100)
        if 0.0 < self.harvest_cv < MIN_POSITIVE_CV:  # 1 / cv^2 (the gamma shape) would overflow
            raise ValueError(f"FleetConfig.harvest_cv must be 0 or in [{MIN_POSITIVE_CV}, 100], "
                             f"got {self.harvest_cv!r}")
        number("storage_kwh", 0, math.inf, allow_inf=True)
        number("initial_storage_kwh", 0, 1e12)
        if self.initial_storage_kwh > self.storage_kwh:
            raise ValueError(
                f"FleetConfig.initial_storage_kwh must be in [0, storage_kwh={self.storage_kwh}],"
                f" got {self.initial_storage_kwh!r}")
        number("charge_efficiency", 0, 1, lo_open=True)
        number("discharge_efficiency", 0, 1, lo_open=True)
        number("idle_power_kw", 0, 1e9)
        for w in ("w_correct", "w_aux", "w_waste", "w_leftover", "w_dropped"):
            number(w, 0, 1e9)
        self._validate_realistic(number, seq)
        if self.action_type not in ACTION_TYPES:
            raise ValueError(
                f"FleetConfig.action_type must be one of {ACTION_TYPES}, got {self.action_type!r}")
        if type(self.observation_version) is not int or self.observation_version not in (0, 1):
            raise ValueError(f"FleetConfig.observation_version must be 0 or 1, got "
                             f"{self.observation_version!r}")
        if self.harvest_process not in HARVEST_PROCESS_FIELDS:
            raise ValueError(f"FleetConfig.harvest_process must be one of "
                             f"{sorted(HARVEST_PROCESS_FIELDS)}, got {self.harvest_process!r}")
        if self.arrival_process not in ARRIVAL_PROCESS_FIELDS:
            raise ValueError(f"FleetConfig.arrival_process must be one of "
                             f"{sorted(ARRIVAL_PROCESS_FIELDS)}, got {self.arrival_process!r}")
        self._validate_used_fields()

    def _validate_used_fields(self) -> None:
        """Refuse a field set away from its default when nothing reads it.

        :data:`HARVEST_PROCESS_FIELDS` and :data:`ARRIVAL_PROCESS_FIELDS` list the config
        fields only some processes read (e.g. ``harvest_months`` for ``solar`` and ``wind``);
        such a field given with a process that ignores it would be silently dropped. Likewise
        ``forecast_noise`` without a forecast.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for kind, registry in (("harvest_process", HARVEST_PROCESS_FIELDS),
                               ("arrival_process", ARRIVAL_PROCESS_FIELDS)):
            chosen = getattr(self, kind)
            users: dict[str, list[str]] = {}
            for proc, fields in registry.items():
                for name in fields:
                    users.setdefault(name, []).append(proc)
            for name, procs in users.items():
                value = getattr(self, name)
                if chosen not in procs and value != defaults[name]:
                    raise ValueError(
                        f"FleetConfig.{name}={value!r} is used only with {kind} in {procs}, "
                        f"but {kind} is {chosen!r}; leave {name} at its default "
                        f"{defaults[name]!r} or choose one of these processes")
        if self.forecast_hours == 0 and self.forecast_noise != defaults["forecast_noise"]:
            raise ValueError(
                f"FleetConfig.forecast_noise={self.forecast_noise!r} is used only with "
                f"forecast_hours > 0, but forecast_hours is 0; leave forecast_noise at its "
                f"default {defaults['forecast_noise']!r} or set forecast_hours in [1, 48]")

    def _validate_realistic(self, number: Any, seq: Any) -> None:
        """Checks of the trace, forecast, deadline and capacity fields (empty = off)."""
        for name in ("harvest_months", "harvest_reference_months"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                raise ValueError(f"FleetConfig.{name} must be a tuple of months in [1, 12], "
                                 f"got {v!r}")
            if v:
                seq(name, None, 1, 12, integer=True)
        number("trace_start_day", -1, 364, integer=True)
        number("trace_start_hour", 0, 24, hi_open=True)
        number("forecast_hours", 0, 48, integer=True)
        number("forecast_noise", 0, 100)
        number("arrival_cv", MIN_POSITIVE_CV, 100)
        if not isinstance(self.class_deadlines, tuple):
            raise ValueError(f"FleetConfig.class_deadlines must be a tuple (one deadline per "
                             f"class, in slots) or empty, got {self.class_deadlines!r}")
        if self.class_deadlines:
            seq("class_deadlines", self.n_classes, 0, 10_000, integer=True)
        if not isinstance(self.model_tokens_per_slot, tuple):
            raise ValueError(f"FleetConfig.model_tokens_per_slot must be a tuple (one cap per "
                             f"model, tokens/slot; inf = unlimited) or empty, "
                             f"got {self.model_tokens_per_slot!r}")
        for j, x in enumerate(self.model_tokens_per_slot):
            if not _is_number(x) or math.isnan(x) or x <= 0:
                raise ValueError(f"FleetConfig.model_tokens_per_slot[{j}] must be a number in "
                                 f"(0, inf], got {x!r}")
        if self.model_tokens_per_slot and len(self.model_tokens_per_slot) != self.n_models:
            raise ValueError(f"FleetConfig.model_tokens_per_slot must have {self.n_models} "
                             f"entries (one per model), got {len(self.model_tokens_per_slot)}")

    @property
    def queue_enabled(self) -> bool:
        """True when deadlines or throughput caps are set (tasks can wait in a queue)."""
        return bool(self.class_deadlines) or bool(self.model_tokens_per_slot)

    # ------------------------------------------------------------------ derived sizes
    @property
    def n_classes(self) -> int:
        """Number of task classes C."""
        return len(self.class_names)

    @property
    def n_models(self) -> int:
        """Number of models M."""
        return len(self.model_names)

    @property
    def n_configs(self) -> int:
        """Number of configurations J = M * K (model-major: j = i * K + k)."""
        return len(self.model_names) * len(self.token_budgets)

    def config_labels(self) -> list[str]:
        """Human-readable label of each configuration, e.g. ``"llm-8b@1024"``."""
        return [f"{m}@{b}" for m in self.model_names for b in self.token_budgets]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable; ``math.inf`` is written as Infinity)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, FleetConfig] = {
    # Paper-faithful regimes: i.i.d. Poisson arrivals, i.i.d. gamma harvest, unbounded store.
    "critical": FleetConfig(),
    "oversupply": FleetConfig(provisioning=1.2),
    "undersupply": FleetConfig(provisioning=0.8),
    "volatile": FleetConfig(harvest_cv=1.0),
}

# ---------------------------------------------------------------------------------- realistic
# Trace-driven scenarios (extension). Numbers are derived in envs/calibration.py and checked
# by tests/test_realistic.py against the shipped data:
#  * supply: the plant is sized so that mean harvest = reference demand over April-September
#    (provisioning 1.0); held-out seasons keep this plant and replay October-March; episodes
#    run from 06:00 to 06:00 local time (the empty store meets the sunrise, the policy must
#    carry energy through the night);
#  * store: 6 hours of reference demand (72 slots x D_ref), round-trip efficiency 0.95 x 0.95
#    (Li-ion class, modelled); idle power 3.3 W, about 10 % of the reference task demand
#    (CALIBRATION.md section 2: idle reserve 10 % of serving energy);
#  * R1 workload: ServeGen DeepSeek-R1 day, four classes fitted to its output-length PMF
#    (envs.calibration.fit_classes; whole day: fleet mean 1,523 vs 1,530 tokens, p50 800 vs
#    793, p90 3,275 vs 3,437, p99 12,325 vs 12,655), deadlines 0 / 10 / 30 / 60 minutes,
#    throughput caps twice each model's mean load under the reference mixture.
_SUMMER = (4, 5, 6, 7, 8, 9)
_WINTER = (10, 11, 12, 1, 2, 3)
_REALISTIC = dict(storage_kwh=0.2185, charge_efficiency=0.95, discharge_efficiency=0.95,
                  idle_power_kw=0.0033, harvest_months=_SUMMER, trace_start_hour=6.0)
_R1_CLASSES = dict(class_names=("short", "medium", "long", "xlong"),
                   class_shares=(0.5, 0.3, 0.15, 0.05), class_skills=(10, 28, 69, 225),
                   class_values=(1.0, 1.0, 1.0, 1.0))
_R1 = dict(_R1_CLASSES, arrival_process="servegen_r1", harvest_process="solar",
           class_deadlines=(0, 2, 6, 12), model_tokens_per_slot=(34_000.0, 24_000.0, 17_000.0),
           **{**_REALISTIC, "storage_kwh": 0.2238})

PRESETS.update({
    "solar_day": FleetConfig(harvest_process="solar", **_REALISTIC),
    "solar_winter": FleetConfig(harvest_process="solar", **{
        **_REALISTIC, "harvest_months": _WINTER, "harvest_reference_months": _SUMMER}),
    "wind_day": FleetConfig(harvest_process="wind", **_REALISTIC),
    "wind_winter": FleetConfig(harvest_process="wind", **{
        **_REALISTIC, "harvest_months": _WINTER, "harvest_reference_months": _SUMMER}),
    "r1_trace": FleetConfig(**_R1),
    # Heavier reasoning tail: classes fitted to the 06:00-12:00 window (mean 3,264 tokens);
    # provisioning = D_ref(r1_trace) / D_ref(heavy), so the plant is the same.
    "r1_trace_heavy": FleetConfig(**{**_R1, "class_skills": (23, 83, 157, 304),
                                     "provisioning": 0.5781}),
    # Burstier arrivals: gamma CV 4.44 = sqrt of the rate-weighted mean squared client CV.
    "r1_trace_bursty": FleetConfig(**{**_R1, "arrival_cv": 4.44}),
    "r1_trace_winter": FleetConfig(**{**_R1, "harvest_months": _WINTER,
                                      "harvest_reference_months": _SUMMER}),
})


def _unknown_fields(names: Any, known: set[str]) -> None:
    """Raise ``TypeError`` in Python's own wording for the first unknown keyword argument
    (``... got an unexpected keyword argument 'x'``, which wrappers such as TorchRL's
    ``GymEnv`` match on), followed by every unknown name and the known fields."""
    unknown = sorted(set(names) - known, key=str)
    if unknown:
        more = f" (unknown: {unknown})" if len(unknown) > 1 else ""
        raise TypeError(f"FleetConfig.__init__() got an unexpected keyword argument "
                        f"{unknown[0]!r}{more}; known fields: {sorted(known)}")


#: Key of a config mapping that names the base config (a preset name, a FleetConfig or a
#: mapping of fields); the mapping's other keys override fields of it. RLlib hands
#: ``env_config`` to the env class as its first positional argument, so
#: ``{"config": "critical", "horizon": 96}`` works there as it does in ``gym.make``.
CONFIG_KEY = "config"


def resolve_config(config: FleetConfig | str | Mapping[str, Any] | None = None,
                   **overrides: Any) -> FleetConfig:
    """Build a validated :class:`FleetConfig` from a preset name, an instance or a dict.

    Args:
        config: A preset name (key of :data:`PRESETS`), a config, a mapping of fields, or None
            for the default config. A mapping may hold the key ``"config"`` (a preset name, a
            config or a mapping of fields), and its other keys then override that base.
        **overrides: Fields to replace; an unknown field raises ``TypeError`` in Python's
            wording (``got an unexpected keyword argument 'x'``) with the known fields.

    Returns:
        The resolved, frozen config.
    """
    known = {f.name for f in dataclasses.fields(FleetConfig)}
    if isinstance(config, Mapping) and CONFIG_KEY in config:
        fields = {k: v for k, v in config.items() if k != CONFIG_KEY}
        _unknown_fields(fields, known)
        both = sorted(set(fields) & set(overrides))
        if both:
            raise TypeError(f"FleetConfig field(s) {both} given both in the config mapping "
                            f"and as keyword arguments")
        base = config[CONFIG_KEY]
        if isinstance(base, Mapping) and CONFIG_KEY in base:
            raise TypeError(f"config[{CONFIG_KEY!r}] must be a preset name, a FleetConfig or "
                            f"a mapping of fields, not another mapping with a {CONFIG_KEY!r} key")
        return resolve_config(base, **fields, **overrides)
    if config is None:
        base = FleetConfig()
    elif isinstance(config, FleetConfig):
        base = config
    elif isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset {config!r}; known presets: {sorted(PRESETS)}")
        base = PRESETS[config]
    elif isinstance(config, Mapping):
        _unknown_fields(config, known)
        base = FleetConfig(**dict(config))
    else:
        raise TypeError(
            f"config must be a preset name, a FleetConfig or a mapping, got {type(config).__name__}")
    _unknown_fields(overrides, known)
    return dataclasses.replace(base, **overrides) if overrides else base
