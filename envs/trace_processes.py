"""Trace-driven exogenous processes: real solar and wind supply, real request traces.

Registered by :mod:`envs.processes` under the names used by ``FleetConfig.harvest_process``
(``solar``, ``wind``) and ``FleetConfig.arrival_process`` (``azure_conv``, ``azure_code``,
``servegen_r1``). Each draws a whole episode from its own generator at reset; the number of
variates drawn never depends on actions (common random numbers).

Supply scaling (stated capacity): the replayed series is multiplied by one constant chosen so
that its time average over ``harvest_reference_months`` (default: ``harvest_months``, default:
the year) equals ``provisioning`` x the reference demand per slot. ``capacity_kw`` is the
installed capacity this implies (PV: kW at 1000 W/m2; wind: rated kW).

Imports numpy, and numba for the arrival counts of ``servegen_r1`` (:func:`_renewal_counts`).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from envs.config import ARRIVAL_PROCESS_FIELDS, HARVEST_PROCESS_FIELDS, FleetConfig
from envs.traces import (
    DAYS_PER_YEAR,
    MINUTES_PER_DAY,
    MONTH_START_DAY,
    TimeSeries,
    cumulative_integral,
    load_azure_per_second,
    load_nsrdb_ghi,
    load_servegen_rate,
    load_wind_80m,
    months_mean,
    slot_means,
)

#: Wind power curve (IEC-like, generic; shared/data/CALIBRATION.md section 7): cut-in, rated
#: and cut-out speeds [m/s]. Per-unit power 0 below cut-in, (v^3 - 3^3) / (12^3 - 3^3) up to
#: rated, 1 up to cut-out, 0 at or above cut-out.
WIND_CUT_IN_M_S = 3.0
WIND_RATED_M_S = 12.0
WIND_CUT_OUT_M_S = 25.0


def wind_power_curve(speed_m_s: np.ndarray) -> np.ndarray:
    """Per-unit power of the generic turbine at the given hub-height wind speeds [-]."""
    v = np.asarray(speed_m_s, dtype=np.float64)
    p = (v**3 - WIND_CUT_IN_M_S**3) / (WIND_RATED_M_S**3 - WIND_CUT_IN_M_S**3)
    p = np.clip(p, 0.0, 1.0)
    return np.where((v < WIND_CUT_IN_M_S) | (v >= WIND_CUT_OUT_M_S), 0.0, p)


@functools.lru_cache(maxsize=1)
def _ghi() -> TimeSeries:
    return load_nsrdb_ghi()


@functools.lru_cache(maxsize=1)
def _wind_unit_power() -> TimeSeries:
    s = load_wind_80m()
    return TimeSeries(wind_power_curve(s.values), s.step_minutes, s.start_minute, s.source)


@functools.lru_cache(maxsize=1)
def _azure() -> dict[str, np.ndarray]:
    return load_azure_per_second()


@functools.lru_cache(maxsize=1)
def _servegen_rate() -> np.ndarray:
    return load_servegen_rate()


def lookahead_slots(config: FleetConfig) -> int:
    """Extra slots of supply drawn beyond the horizon for the forecast features [slots]."""
    if config.forecast_hours == 0:
        return 0
    return config.forecast_hours * slots_per_hour(config)


def slots_per_hour(config: FleetConfig) -> int:
    """Slots in one hour, at least 1 (forecast features average whole hours of slots)."""
    return max(1, int(round(60.0 / config.slot_minutes)))


# ---------------------------------------------------------------------------------- supply
class _ReplayHarvest:
    """Replay of a yearly series from a start day drawn from the seed (see module docstring)."""

    #: Name of the config value (for messages) and unit of ``capacity_kw``.
    name = "replay"
    #: FleetConfig fields only the replayed supplies read (set by each subclass).
    config_fields: tuple[str, ...] = ()

    def _series(self) -> TimeSeries:  # pragma: no cover - overridden
        raise NotImplementedError

    def _capacity_per_unit(self) -> float:
        """Series value that corresponds to 1 kW of installed capacity."""
        raise NotImplementedError  # pragma: no cover

    def __init__(self, config: FleetConfig, mean_kwh: float) -> None:
        self.series = self._series()
        self.slot_minutes = float(config.slot_minutes)
        self.months = config.harvest_months or tuple(range(1, 13))
        ref_months = config.harvest_reference_months or self.months
        ref_mean = months_mean(self.series, ref_months)
        if ref_mean <= 0:
            raise ValueError(f"FleetConfig.harvest_reference_months={ref_months}: the "
                             f"{self.name} series ({self.series.source}) has zero mean in "
                             f"these months")
        self.mean_kwh = float(mean_kwh)
        #: Harvest per slot [kWh] per unit of the series value.
        self.scale = self.mean_kwh / ref_mean
        #: Installed capacity implied by the provisioning [kW].
        self.capacity_kw = (self.scale * self._capacity_per_unit()) / (self.slot_minutes / 60.0)
        ref_vals = _values_in_months(self.series, ref_months) * self.scale
        self.var_kwh2 = float(ref_vals.var())
        self.start_day = int(config.trace_start_day)
        self.start_hour = float(config.trace_start_hour)
        self._cum = cumulative_integral(self.series)
        self._days: dict[int, np.ndarray] = {}  # start days per episode length
        #: Harvest per slot of the episodes drawn so far, per (start day, horizon) [kWh].
        self._episodes: dict[tuple[int, int], np.ndarray] = {}
        self._episode_bytes = 0
        # Fail at construction, not at reset, if no episode fits the series.
        self._start_days(config.horizon + lookahead_slots(config))

    def _start_days(self, n_slots: int) -> np.ndarray:
        """Start days in the month window whose episode of ``n_slots`` fits the series."""
        need = n_slots * self.slot_minutes
        last = self.series.end_minute
        if self.start_day >= 0:
            start = self.start_day * MINUTES_PER_DAY + 60.0 * self.start_hour
            if start + need > last + 1e-9:
                raise ValueError(
                    f"FleetConfig.trace_start_day={self.start_day}: an episode of {n_slots} "
                    f"slots from day {self.start_day} at {self.start_hour} h ends after the "
                    f"series {self.series.source} (last sample at day "
                    f"{last / MINUTES_PER_DAY:.2f}); use an earlier day or a shorter horizon")
            return np.array([self.start_day])
        days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                               for m in sorted(set(self.months))])
        starts = days * MINUTES_PER_DAY + 60.0 * self.start_hour
        days = days[starts + need <= last + 1e-9]
        if days.size == 0:
            raise ValueError(
                f"FleetConfig.harvest_months={self.months}: no start day leaves room for an "
                f"episode of {n_slots} slots of {self.slot_minutes} min in {self.series.source}"
                f" (one year); shorten the horizon or add earlier months")
        return days

    #: Most bytes of episodes kept by :meth:`sample` (one per start day and horizon).
    CACHE_BYTES = 16 * 2**20

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        """Harvest per slot [kWh] of an episode starting on a day drawn from ``rng``.

        The episode of each start day is computed once (while the kept episodes stay within
        :attr:`CACHE_BYTES`); a new array is returned each time.
        """
        days = self._days.get(horizon)
        if days is None:
            days = self._days[horizon] = self._start_days(horizon)
        day = int(days[rng.integers(days.size)]) if days.size > 1 else int(days[0])
        kept = self._episodes.get((day, horizon))
        if kept is None:
            start = day * MINUTES_PER_DAY + 60.0 * self.start_hour
            kept = self.scale * slot_means(self.series, start, self.slot_minutes, horizon,
                                           self._cum)
            if self._episode_bytes + kept.nbytes <= self.CACHE_BYTES:
                self._episodes[(day, horizon)] = kept
                self._episode_bytes += kept.nbytes
                kept = kept.copy()
            return kept
        return kept.copy()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_episodes": {}, "_episode_bytes": 0}  # rebuilt on use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_episodes": {}, "_episode_bytes": 0, **state})


def _values_in_months(series: TimeSeries, months: tuple[int, ...]) -> np.ndarray:
    per_day = int(round(MINUTES_PER_DAY / series.step_minutes))
    days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                           for m in sorted(set(months))])
    idx = (days[:, None] * per_day + np.arange(per_day)[None, :]).ravel()
    return series.values[idx[idx < series.values.size]]


class SolarHarvest(_ReplayHarvest):
    """PV supply from NSRDB 2023 GHI: P = capacity x GHI / 1000 W/m2 (first-order proxy).

    The GHI series (30-minute samples, joined linearly) is averaged over each slot.
    """

    name = "solar"
    config_fields = HARVEST_PROCESS_FIELDS["solar"]

    def _series(self) -> TimeSeries:
        return _ghi()

    def _capacity_per_unit(self) -> float:
        return 1000.0  # W/m2 at which the PV plant delivers its capacity


class WindHarvest(_ReplayHarvest):
    """Wind supply from the 2010 hourly 80 m wind speeds through :func:`wind_power_curve`.

    Per-unit power is computed at each hourly sample and joined linearly between samples.
    """

    name = "wind"
    config_fields = HARVEST_PROCESS_FIELDS["wind"]

    def _series(self) -> TimeSeries:
        return _wind_unit_power()

    def _capacity_per_unit(self) -> float:
        return 1.0  # per-unit power 1 = rated power


# ---------------------------------------------------------------------------------- arrivals
def _split_classes(rng: np.random.Generator, totals: np.ndarray, shares: np.ndarray
                   ) -> np.ndarray:
    """Split per-slot totals over classes (multinomial), shape (T, C) int64."""
    return rng.multinomial(totals.astype(np.int64, copy=False), shares).astype(
        np.int64, copy=False)


@numba.njit(cache=True)
def _renewal_counts(gaps: np.ndarray, phase: float, edges: np.ndarray, totals: np.ndarray
                    ) -> float:
    """Points of a renewal process counted between sorted ``edges``, in one pass.

    With ``points = np.cumsum(gaps) - phase * gaps[0]`` (running sums left to right, as
    numpy's), ``totals`` (``edges.size - 1``) becomes
    ``np.diff(np.searchsorted(points, edges, side="left"))`` bit for bit, provided ``edges``
    is non-decreasing (the points are: the gaps are >= 0). Returns the last point.
    """
    n, n_e = gaps.size, edges.size
    offset = phase * gaps[0]
    acc = gaps[0]
    j = 0  # next edge
    prev = 0  # points below the previous edge
    p = acc - offset
    for i in range(n):
        if i:
            acc = acc + gaps[i]
            p = acc - offset
        while j < n_e and edges[j] <= p:  # i points lie below edge j
            if j:
                totals[j - 1] = i - prev
            prev = i
            j += 1
    while j < n_e:
        if j:
            totals[j - 1] = n - prev
        prev = n
        j += 1
    return p


class AzureReplay:
    """Replay of the Azure 2023 per-second request counts, scaled to ``arrival_rate``.

    The hour-long trace is read circularly from a start second drawn from the seed and summed
    over each slot; the counts are multiplied by ``arrival_rate / (mean requests per slot of
    the trace)`` and rounded stochastically (floor plus a Bernoulli of the fractional part), so
    the mean is exact and the burst profile is kept. An episode longer than the hour wraps
    around. Tasks are split over classes by a multinomial with ``class_shares``.
    """

    trace = "conv"
    config_fields = ARRIVAL_PROCESS_FIELDS["azure_conv"]

    def __init__(self, config: FleetConfig) -> None:
        counts = _azure()[self.trace].astype(np.float64)
        self.n_sec = counts.size
        self.total = float(counts.sum())
        self.cum = np.concatenate([[0.0], np.cumsum(counts)])
        self.slot_s = float(config.slot_minutes) * 60.0
        #: Mean requests per slot of the unscaled trace [requests/slot].
        self.trace_per_slot = self.total / self.n_sec * self.slot_s
        self.scale = float(config.arrival_rate) / self.trace_per_slot
        self.shares = np.asarray(config.class_shares, dtype=np.float64)
        starts = np.arange(self.n_sec, dtype=np.float64)
        window = self._cumulative(starts + self.slot_s) - self._cumulative(starts)
        self.max_rate = float(window.max() * self.scale) + 1.0

    def _cumulative(self, seconds: np.ndarray) -> np.ndarray:
        laps, rem = np.divmod(seconds, self.n_sec)
        return laps * self.total + np.interp(rem, np.arange(self.n_sec + 1), self.cum)

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        """Arrival counts, shape (horizon, C) [tasks]."""
        start = float(rng.integers(self.n_sec))
        edges = start + self.slot_s * np.arange(horizon + 1)
        x = np.diff(self._cumulative(edges)) * self.scale
        base = np.floor(x)
        totals = base + (rng.random(horizon) < (x - base))
        return _split_classes(rng, totals, self.shares)


class AzureCodeReplay(AzureReplay):
    """Replay of the Azure 2023 *code* trace (very bursty: inter-arrival CV about 13)."""

    trace = "code"
    config_fields = ARRIVAL_PROCESS_FIELDS["azure_code"]


class ServeGenR1Arrivals:
    """DeepSeek-R1 production day (ServeGen): diurnal rate profile, gamma inter-arrivals.

    The total request rate of the 144 ten-minute windows of the day, divided by its daily
    mean, modulates the rate: expected arrivals in a slot are ``arrival_rate`` x the profile
    averaged over the slot (the day wraps around; the episode starts at
    ``trace_start_hour``). Arrivals are a gamma renewal process in this operational time
    (time-rescaled), with inter-arrival coefficient of variation ``arrival_cv`` (1 = Poisson,
    above 1 = burstier). Tasks are split over classes by a multinomial with ``class_shares``.
    """

    #: FleetConfig fields only this arrival process reads.
    config_fields = ARRIVAL_PROCESS_FIELDS["servegen_r1"]

    def __init__(self, config: FleetConfig) -> None:
        rates = _servegen_rate()
        self.profile = rates / rates.mean()
        self.win_min = MINUTES_PER_DAY / self.profile.size
        self.cum = np.concatenate([[0.0], np.cumsum(self.profile * self.win_min)])
        self.per_min = float(config.arrival_rate) / float(config.slot_minutes)
        self.slot_minutes = float(config.slot_minutes)
        self.start_minute = 60.0 * float(config.trace_start_hour)
        self.cv = float(config.arrival_cv)
        self.shares = np.asarray(config.class_shares, dtype=np.float64)
        self.max_rate = float(config.arrival_rate * self.profile.max())
        #: Per horizon: operational time at the slot edges, and whether it is non-decreasing.
        self._edge_cache: dict[int, tuple[np.ndarray, bool]] = {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_edge_cache": {}, **state})  # (also a state pickled without it)

    def expected_counts(self, horizon: int) -> np.ndarray:
        """Expected arrivals in each slot of an episode, shape (horizon,) [tasks]."""
        return np.diff(self._op_time(horizon))

    def _op_time(self, horizon: int) -> np.ndarray:
        """Operational time at the slot edges of an episode, shape (horizon + 1,) (read-only:
        computed once per horizon)."""
        return self._edges(horizon)[0]

    def _edges(self, horizon: int) -> tuple[np.ndarray, bool]:
        """:meth:`_op_time` and whether it is non-decreasing, computed once per horizon."""
        cached = self._edge_cache.get(horizon)
        if cached is None:
            t = self.start_minute + self.slot_minutes * np.arange(horizon + 1)
            laps, rem = np.divmod(t, MINUTES_PER_DAY)
            day = self.cum[-1]
            grid = self.win_min * np.arange(self.profile.size + 1)
            lam = laps * day + np.interp(rem, grid, self.cum)
            lam0 = lam[0]
            edges = (lam - lam0) * self.per_min
            edges.flags.writeable = False
            cached = self._edge_cache[horizon] = (edges, bool(np.all(np.diff(edges) >= 0)))
        return cached

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        """Arrival counts, shape (horizon, C) [tasks]."""
        edges, edges_sorted = self._edges(horizon)
        total = float(edges[-1])
        k = 1.0 / self.cv**2
        n = int(total + 10.0 * self.cv * math.sqrt(total + 1.0) + 64)
        gaps = rng.gamma(k, 1.0 / k, size=n)
        phase = rng.random()
        if edges_sorted:
            totals = np.empty(horizon, dtype=np.int64)
            last = _renewal_counts(gaps, phase, edges, totals)
        if not edges_sorted or last < total:
            points = np.cumsum(gaps) - phase * gaps[0]  # stationary-ish start: random phase
            while points[-1] < total:  # rare: draw more (depends on the seed only)
                more = rng.gamma(k, 1.0 / k, size=n)
                points = np.concatenate([points, points[-1] + np.cumsum(more)])
            totals = np.diff(np.searchsorted(points, edges, side="left"))
        return _split_classes(rng, totals, self.shares)


HARVEST_TRACES: dict[str, type] = {"solar": SolarHarvest, "wind": WindHarvest}
ARRIVAL_TRACES: dict[str, type] = {
    "azure_conv": AzureReplay,
    "azure_code": AzureCodeReplay,
    "servegen_r1": ServeGenR1Arrivals,
}

__all__ = ["ARRIVAL_TRACES", "DAYS_PER_YEAR", "HARVEST_TRACES", "wind_power_curve"]
