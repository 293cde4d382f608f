"""Loaders of the real data traces shipped in ``envs/data`` (numpy only), with validation.

Every loader checks its file strictly and raises :class:`TraceError` (a ``ValueError``) naming
the file and the 1-based line of the problem: a missing, truncated or extended file (each file
has its expected number of data rows), a bad header, a row with the wrong number of fields, a
value that is not a number, NaN, infinite, negative, above the physical range or scale of its
column (``GHI_MAX_W_M2`` and the other bounds below), not an integer where counts are, or out of
order, a time grid with a gap, or a column that is zero on every line (nothing to scale). A
missing file raises :class:`FileNotFoundError` naming the path. Nothing is ever silently
clipped or filled.

Files (attribution and licenses: ``envs/data/README.md``):

* ``renewables/nsrdb_psm4_2023_40.5137N_108.5449W_30min.csv``: NREL NSRDB PSM v4, 2023, one
  site in NW Colorado, 30-minute global horizontal irradiance (GHI) [W/m2].
* ``renewables/windpowerlib_example_weather_2010_hourly.csv``: hourly wind speed at 80 m [m/s],
  one German site, 2010 (windpowerlib example weather).
* ``llm_traces/azure2023_per_second.csv``: Azure LLM inference trace 2023, requests per second
  (code and conversation), about one hour.
* ``reasoning_workload/servegen_r1_total_rate.csv``: ServeGen DeepSeek-R1 production day, total
  request rate per 10-minute window [req/s].
* ``reasoning_workload/servegen_r1_length_pmf.csv``: ServeGen DeepSeek-R1 request-weighted
  PMFs of input/output tokens per 6-hour window and for the whole day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Folder of the shipped data files (package data).
DATA_DIR = Path(__file__).resolve().parent / "data"

NSRDB_FILE = "renewables/nsrdb_psm4_2023_40.5137N_108.5449W_30min.csv"
WIND_FILE = "renewables/windpowerlib_example_weather_2010_hourly.csv"
AZURE_FILE = "llm_traces/azure2023_per_second.csv"
SERVEGEN_RATE_FILE = "reasoning_workload/servegen_r1_total_rate.csv"
SERVEGEN_PMF_FILE = "reasoning_workload/servegen_r1_length_pmf.csv"

MINUTES_PER_DAY = 1440.0
DAYS_PER_YEAR = 365  # both shipped years (2010, 2023) have 365 days
#: First day of each month (0-based day of a non-leap year).
MONTH_START_DAY = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)


#: Physical range or scale of each loaded column (upper bound; every column is >= 0):
#: GHI cannot much exceed the solar constant (1361 W/m2; cloud enhancement adds a few
#: hundred), hub-height hourly wind speeds stay far below 100 m/s, and request counts and
#: rates of one service far below a million per second; token lengths below 10^7.
GHI_MAX_W_M2 = 2000.0
WIND_MAX_M_S = 100.0
REQUESTS_MAX = 1e6
TOKENS_MAX = 1e7
#: Data rows of the shipped request traces: seconds of the Azure file, windows of the
#: ServeGen day, and bins of each ServeGen PMF per field.
AZURE_SECONDS = 3549
SERVEGEN_WINDOWS = 144
SERVEGEN_PMF_BINS = {"input_tokens": 101, "output_tokens": 101, "reason_ratio": 50}


class TraceError(ValueError):
    """A data file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class TimeSeries:
    """A regularly sampled series, treated as instantaneous samples joined linearly.

    Attributes:
        values: Sample values, shape (n,) [unit of the series].
        step_minutes: Time between samples [min].
        start_minute: Time of sample 0 from the start of the year [min].
        source: Path of the file it was read from.
    """

    values: np.ndarray
    step_minutes: float
    start_minute: float
    source: str

    @property
    def end_minute(self) -> float:
        """Time of the last sample [min from the start of the year]."""
        return self.start_minute + (self.values.size - 1) * self.step_minutes


def data_path(relative: str) -> Path:
    """Absolute path of a shipped data file, e.g. ``data_path(NSRDB_FILE)``."""
    return DATA_DIR / relative


# ---------------------------------------------------------------------------------- parsing
def _read_lines(path: str | Path) -> tuple[str, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(f"{p}: not a UTF-8 text file ({exc})") from exc
    return str(p), text.splitlines()


def _check_header(name: str, line: str, expected: list[str], lineno: int = 1) -> None:
    got = [f.strip() for f in line.split(",")]
    if got != expected:
        raise TraceError(f"{name}: line {lineno}: bad header {got}, expected {expected}")


def _fields(name: str, line: str, lineno: int, n: int) -> list[str]:
    parts = line.split(",")
    if len(parts) != n:
        raise TraceError(f"{name}: line {lineno}: expected {n} comma-separated fields, "
                         f"got {len(parts)} ({line[:80]!r}); file truncated or malformed?")
    return parts


def _number(name: str, text: str, lineno: int, column: str, *, nonneg: bool = True,
            hi: float | None = None, unit: str = "", integer: bool = False) -> float:
    """One field as a float: finite, non-negative (``nonneg``), at most ``hi`` (the column's
    physical range or scale) and integral (``integer``), else a :class:`TraceError` naming
    the file, the line and the column."""
    try:
        x = float(text)
    except ValueError:
        raise TraceError(f"{name}: line {lineno}: column {column!r} is not a number: "
                         f"{text!r}") from None
    if not math.isfinite(x):
        raise TraceError(f"{name}: line {lineno}: column {column!r} is {text!r} "
                         f"(NaN or infinite values are not allowed)")
    if nonneg and x < 0:
        raise TraceError(f"{name}: line {lineno}: column {column!r} is negative ({x!r})")
    if hi is not None and x > hi:
        raise TraceError(f"{name}: line {lineno}: column {column!r} is {x!r}, outside its "
                         f"range [0, {hi:g}]{' ' + unit if unit else ''}")
    if integer and x != math.floor(x):
        raise TraceError(f"{name}: line {lineno}: column {column!r} is not an integer: {text!r}")
    return x


def _not_all_zero(name: str, values: list[float], column: str, first_line: int) -> None:
    """A column that is zero on every line carries no profile to scale (its mean would divide
    by zero): refuse it, naming the file, the lines and the column."""
    if values and not any(values):
        raise TraceError(f"{name}: lines {first_line}-{first_line + len(values) - 1}: column "
                         f"{column!r} is zero on every line; the trace has nothing to scale")


def _row_count(name: str, n_rows: int, expected: int, first_line: int, what: str) -> None:
    if n_rows != expected:
        last = first_line + n_rows - 1
        raise TraceError(f"{name}: expected {expected} data rows ({what}, lines {first_line}-"
                         f"{first_line + expected - 1}), got {n_rows} (the data ends at line "
                         f"{last}); file truncated or extended?")


def _minute_of_year(name: str, stamp: str, lineno: int, year: int,
                    std_offset_h: float | None = None) -> float:
    """Minutes from ``year``-01-01 00:00 of a ``YYYY-MM-DD HH:MM[:SS][+zz:zz]`` stamp.

    With ``std_offset_h`` the stamp must carry a UTC offset, and is converted to that standard
    offset (e.g. daylight-saving stamps at +02:00 to +01:00).
    """
    s = stamp.strip()
    shift = 0.0
    try:
        y, mo, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
        hh, mm = int(s[11:13]), int(s[14:16])
        ok = s[4] == "-" and s[7] == "-" and s[13] == ":"
        if std_offset_h is not None:
            tz = s[19:]
            ok = ok and len(tz) == 6 and tz[0] in "+-" and tz[3] == ":"
            off = (1 if tz[0] == "+" else -1) * (int(tz[1:3]) + int(tz[4:6]) / 60.0)
            shift = 60.0 * (off - std_offset_h)
    except (ValueError, IndexError):
        ok = False
    if not ok or y != year or not 1 <= mo <= 12 or not 1 <= d <= 31 or hh > 23 or mm > 59:
        raise TraceError(f"{name}: line {lineno}: bad timestamp {stamp!r} "
                         f"(expected {year}-MM-DD HH:MM" +
                         (":SS+hh:mm)" if std_offset_h is not None else ")"))
    return (MONTH_START_DAY[mo - 1] + d - 1) * MINUTES_PER_DAY + 60.0 * hh + mm - shift


def _regular_series(name: str, minutes: list[float], first_line: int, step: float,
                    n_expected: int) -> None:
    _row_count(name, len(minutes), n_expected, first_line, "a full year")
    m = np.asarray(minutes)
    bad = np.flatnonzero(np.abs(np.diff(m) - step) > 1e-6)
    if bad.size:
        k = int(bad[0]) + 1
        raise TraceError(f"{name}: line {first_line + k}: time step is {m[k] - m[k - 1]} min, "
                         f"expected {step} min (gap or disorder in the series)")
    if m[0] != 0.0:
        raise TraceError(f"{name}: line {first_line}: series must start at January 1 00:00")


# ---------------------------------------------------------------------------------- loaders
NSRDB_COLUMNS = ["timestamp_local_std", "ghi_w_m2", "dni_w_m2", "dhi_w_m2", "clearsky_ghi_w_m2",
                 "cloud_type", "solar_zenith_deg", "temp_air_c", "wind_speed_m_s",
                 "pressure_mbar"]


def load_nsrdb_ghi(path: str | Path | None = None) -> TimeSeries:
    """Global horizontal irradiance of the NSRDB 2023 file, 30-minute samples [W/m2].

    Args:
        path: File to read; the shipped file by default.

    Returns:
        The GHI series, 17,520 samples from 2023-01-01 00:00 local standard time (UTC-7).
    """
    name, lines = _read_lines(path or data_path(NSRDB_FILE))
    if not lines:
        raise TraceError(f"{name}: empty file")
    _check_header(name, lines[0], NSRDB_COLUMNS)
    minutes, ghi = [], []
    for n, line in enumerate(lines[1:], start=2):
        parts = _fields(name, line, n, len(NSRDB_COLUMNS))
        minutes.append(_minute_of_year(name, parts[0], n, 2023))
        ghi.append(_number(name, parts[1], n, "ghi_w_m2", hi=GHI_MAX_W_M2, unit="W/m2"))
    _regular_series(name, minutes, 2, 30.0, DAYS_PER_YEAR * 48)
    _not_all_zero(name, ghi, "ghi_w_m2", 2)
    return TimeSeries(np.asarray(ghi), 30.0, 0.0, name)


WIND_HEADER = (["variable_name", "pressure", "temperature", "wind_speed", "roughness_length",
                "temperature", "wind_speed"],
               ["height", "0", "2", "10", "0", "10", "80"])


def load_wind_80m(path: str | Path | None = None) -> TimeSeries:
    """Hourly wind speed at 80 m of the windpowerlib 2010 example weather [m/s].

    Args:
        path: File to read; the shipped file by default.

    Returns:
        The wind-speed series, 8,760 samples from 2010-01-01 00:00 (UTC+1; the file's
        daylight-saving stamps at +02:00 are converted to +01:00).
    """
    name, lines = _read_lines(path or data_path(WIND_FILE))
    if len(lines) < 2:
        raise TraceError(f"{name}: expected 2 header lines, file has {len(lines)} line(s)")
    _check_header(name, lines[0], WIND_HEADER[0], 1)
    _check_header(name, lines[1], WIND_HEADER[1], 2)
    minutes, speed = [], []
    for n, line in enumerate(lines[2:], start=3):
        parts = _fields(name, line, n, 7)
        minutes.append(_minute_of_year(name, parts[0], n, 2010, std_offset_h=1.0))
        speed.append(_number(name, parts[6], n, "wind_speed@80m", hi=WIND_MAX_M_S,
                             unit="m/s"))
    _regular_series(name, minutes, 3, 60.0, DAYS_PER_YEAR * 24)
    _not_all_zero(name, speed, "wind_speed@80m", 3)
    return TimeSeries(np.asarray(speed), 60.0, 0.0, name)


def load_azure_per_second(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Requests per second of the Azure 2023 code and conversation traces.

    Args:
        path: File to read; the shipped file by default.

    Returns:
        ``{"code": counts, "conv": counts}``, int64 arrays of one entry per second [requests].
    """
    name, lines = _read_lines(path or data_path(AZURE_FILE))
    if not lines:
        raise TraceError(f"{name}: empty file")
    _check_header(name, lines[0], ["second", "code_requests", "conv_requests"])
    code, conv = [], []
    for n, line in enumerate(lines[1:], start=2):
        parts = _fields(name, line, n, 3)
        sec = _number(name, parts[0], n, "second")
        if sec != n - 2:
            raise TraceError(f"{name}: line {n}: second is {parts[0]!r}, expected {n - 2} "
                             f"(seconds must be consecutive from 0)")
        for col, out, text in (("code_requests", code, parts[1]),
                               ("conv_requests", conv, parts[2])):
            x = _number(name, text, n, col, hi=REQUESTS_MAX, unit="requests", integer=True)
            out.append(int(x))
    _row_count(name, len(code), AZURE_SECONDS, 2, "one per second")
    _not_all_zero(name, code, "code_requests", 2)
    _not_all_zero(name, conv, "conv_requests", 2)
    return {"code": np.asarray(code, dtype=np.int64), "conv": np.asarray(conv, dtype=np.int64)}


def load_servegen_rate(path: str | Path | None = None) -> np.ndarray:
    """Total DeepSeek-R1 request rate of each 10-minute window of the ServeGen day [req/s].

    Args:
        path: File to read; the shipped file by default.

    Returns:
        Array of 144 rates; entry w covers seconds [600 w, 600 (w + 1)) of the day.
    """
    name, lines = _read_lines(path or data_path(SERVEGEN_RATE_FILE))
    if not lines:
        raise TraceError(f"{name}: empty file")
    _check_header(name, lines[0], ["window_start_s", "total_rate_rps", "n_active_clients"])
    rates = []
    for n, line in enumerate(lines[1:], start=2):
        parts = _fields(name, line, n, 3)
        start = _number(name, parts[0], n, "window_start_s")
        if start != 600.0 * (n - 2):
            raise TraceError(f"{name}: line {n}: window_start_s is {parts[0]!r}, expected "
                             f"{600 * (n - 2)} (10-minute windows from 0)")
        rates.append(_number(name, parts[1], n, "total_rate_rps", hi=REQUESTS_MAX,
                             unit="req/s"))
        _number(name, parts[2], n, "n_active_clients", hi=REQUESTS_MAX, integer=True)
    _row_count(name, len(rates), SERVEGEN_WINDOWS, 2, "ten-minute windows of one day")
    _not_all_zero(name, rates, "total_rate_rps", 2)
    return np.asarray(rates)


@dataclass(frozen=True)
class LengthPMF:
    """A binned token-length distribution.

    Attributes:
        bin_lo: Lower bin edges (inclusive) [tokens].
        bin_hi: Upper bin edges (exclusive) [tokens].
        prob: Probability of each bin, summing to 1.
    """

    bin_lo: np.ndarray
    bin_hi: np.ndarray
    prob: np.ndarray

    def mean(self) -> float:
        """Mean length, each bin at its midpoint [tokens]."""
        return float(self.prob @ (0.5 * (self.bin_lo + self.bin_hi)))

    def quantile(self, q: float) -> float:
        """Quantile by linear interpolation inside the bin [tokens]."""
        cdf = np.cumsum(self.prob)
        k = int(np.searchsorted(cdf, q * cdf[-1], side="left"))
        k = min(k, self.prob.size - 1)
        below = cdf[k - 1] if k > 0 else 0.0
        frac = (q * cdf[-1] - below) / self.prob[k] if self.prob[k] > 0 else 0.0
        return float(self.bin_lo[k] + frac * (self.bin_hi[k] - self.bin_lo[k]))


def load_servegen_pmf(field: str = "output_tokens", window: str = "all",
                      path: str | Path | None = None) -> LengthPMF:
    """One PMF of the ServeGen DeepSeek-R1 length file.

    Args:
        field: ``"output_tokens"``, ``"input_tokens"`` or ``"reason_ratio"``.
        window: ``"all"`` (whole day) or a 6-hour window start ``"0"``, ``"21600"``,
            ``"43200"``, ``"64800"`` [s].
        path: File to read; the shipped file by default.

    Returns:
        The PMF; its probabilities must sum to 1 within 1e-3.
    """
    name, lines = _read_lines(path or data_path(SERVEGEN_PMF_FILE))
    if not lines:
        raise TraceError(f"{name}: empty file")
    _check_header(name, lines[0], ["field", "window", "bin_lo", "bin_hi", "prob"])
    lo, hi, pr = [], [], []
    top, unit = (1.0, "") if field == "reason_ratio" else (TOKENS_MAX, "tokens")
    first = last = 0
    for n, line in enumerate(lines[1:], start=2):
        parts = _fields(name, line, n, 5)
        if parts[0] != field or parts[1] != window:
            continue
        a = _number(name, parts[2], n, "bin_lo", hi=top, unit=unit)
        b = _number(name, parts[3], n, "bin_hi", hi=top, unit=unit)
        p = _number(name, parts[4], n, "prob", hi=1.0)
        if b <= a or (lo and a < hi[-1]):
            raise TraceError(f"{name}: line {n}: bin [{a}, {b}) is empty or out of order")
        lo.append(a)
        hi.append(b)
        pr.append(p)
        first, last = first or n, n
    if not pr:
        raise TraceError(f"{name}: no rows for field={field!r}, window={window!r}")
    total = sum(pr)
    if abs(total - 1.0) > 1e-3:
        raise TraceError(f"{name}: probabilities of field={field!r}, window={window!r} sum to "
                         f"{total:.6f}, expected 1; file truncated?")
    expected = SERVEGEN_PMF_BINS.get(field)
    if expected is not None and len(pr) != expected:
        raise TraceError(f"{name}: lines {first}-{last}: expected {expected} bins for "
                         f"field={field!r}, window={window!r}, got {len(pr)}; file truncated?")
    return LengthPMF(np.asarray(lo), np.asarray(hi), np.asarray(pr) / total)


# ---------------------------------------------------------------------------------- resampling
def cumulative_integral(series: TimeSeries) -> np.ndarray:
    """Integral of the linearly joined series from its start to each sample [unit x min]."""
    v = series.values
    return np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * series.step_minutes)])


def slot_means(series: TimeSeries, start_minute: float, slot_minutes: float,
               n_slots: int, cum: np.ndarray | None = None) -> np.ndarray:
    """Mean of the linearly interpolated series over consecutive slots.

    Args:
        series: The series (instantaneous samples joined linearly).
        start_minute: Start of the first slot [min from the start of the year].
        slot_minutes: Slot length [min].
        n_slots: Number of slots.
        cum: :func:`cumulative_integral` of the series, if already at hand.

    Returns:
        Mean value in each slot, shape (n_slots,) [unit of the series].

    Raises:
        TraceError: If the slots reach outside the series (naming the file).
    """
    end = start_minute + n_slots * slot_minutes
    if start_minute < series.start_minute or end > series.end_minute + 1e-9:
        raise TraceError(
            f"{series.source}: requested window [{start_minute}, {end}] min lies outside the "
            f"series [{series.start_minute}, {series.end_minute}] min")
    v = series.values
    step = series.step_minutes
    # Cumulative integral at the sample times, then exact integral of the linear pieces.
    if cum is None:
        cum = cumulative_integral(series)
    edges = start_minute + slot_minutes * np.arange(n_slots + 1)
    x = (edges - series.start_minute) / step
    k = np.minimum(np.floor(x).astype(np.int64), v.size - 2)
    frac = (x - k) * step
    slope = (v[k + 1] - v[k]) / step
    integral = cum[k] + v[k] * frac + 0.5 * slope * frac**2
    return np.diff(integral) / slot_minutes


def months_mean(series: TimeSeries, months: tuple[int, ...]) -> float:
    """Time average of the series over whole days of the given months (1-12; empty = year)."""
    months = months or tuple(range(1, 13))
    per_day = int(round(MINUTES_PER_DAY / series.step_minutes))
    days = np.concatenate([np.arange(MONTH_START_DAY[m - 1], MONTH_START_DAY[m])
                           for m in sorted(set(months))])
    idx = (days[:, None] * per_day + np.arange(per_day)[None, :]).ravel()
    idx = idx[idx < series.values.size]
    return float(series.values[idx].mean())
