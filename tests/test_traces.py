"""Trace loaders: the shipped files, their statistics, and clear errors on bad files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from envs.traces import (
    AZURE_FILE,
    NSRDB_FILE,
    SERVEGEN_PMF_FILE,
    SERVEGEN_RATE_FILE,
    WIND_FILE,
    TimeSeries,
    TraceError,
    data_path,
    load_azure_per_second,
    load_nsrdb_ghi,
    load_servegen_pmf,
    load_servegen_rate,
    load_wind_80m,
    months_mean,
    slot_means,
)
from envs.trace_processes import wind_power_curve


# ---------------------------------------------------------------------------- shipped files
def test_shipped_files_are_package_data_not_shared_folder():
    for rel in (NSRDB_FILE, WIND_FILE, AZURE_FILE, SERVEGEN_RATE_FILE, SERVEGEN_PMF_FILE):
        p = data_path(rel)
        assert p.is_file(), p
        assert p.parent.parent.name == "data" and p.parent.parent.parent.name == "envs"
    assert (data_path("LICENSES")).is_dir()
    readme = data_path("README.md").read_text()
    for rel in (NSRDB_FILE, WIND_FILE, AZURE_FILE, SERVEGEN_RATE_FILE, SERVEGEN_PMF_FILE):
        assert rel in readme, f"no attribution line for {rel}"


def test_nsrdb_statistics_match_calibration_note():
    s = load_nsrdb_ghi()
    assert s.values.size == 17_520 and s.step_minutes == 30.0
    # CALIBRATION.md section 7: mean GHI 209 W/m2, monthly 91 (Dec) to 313 (Jul).
    assert abs(s.values.mean() - 209.0) < 1.0
    assert abs(months_mean(s, (12,)) - 91.0) < 1.0
    assert abs(months_mean(s, (7,)) - 313.0) < 1.0


def test_wind_statistics_and_power_curve():
    s = load_wind_80m()
    assert s.values.size == 8_760 and s.step_minutes == 60.0
    assert abs(s.values.mean() - 6.38) < 0.01  # CALIBRATION.md section 7
    # Capacity factor 17.8 % with the generic curve (CALIBRATION.md section 7).
    assert abs(wind_power_curve(s.values).mean() - 0.178) < 0.001
    v = np.array([0.0, 2.99, 3.0, 7.5, 12.0, 20.0, 24.99, 25.0, 30.0])
    expect = [0, 0, 0, (7.5**3 - 27) / (1728 - 27), 1, 1, 1, 0, 0]
    np.testing.assert_allclose(wind_power_curve(v), expect, atol=1e-12)


def test_azure_statistics():
    d = load_azure_per_second()
    # CALIBRATION.md section 6: code 8,819 requests, conv 19,366 (a few fall outside the
    # full-minute alignment of the per-second file), 2.57 and 5.53 req/s.
    assert 8_700 <= d["code"].sum() <= 8_819 and 19_200 <= d["conv"].sum() <= 19_366
    assert abs(d["code"].mean() - 2.57) < 0.1 and abs(d["conv"].mean() - 5.53) < 0.1
    assert d["code"].max() == 67


def test_servegen_statistics():
    r = load_servegen_rate()
    assert r.size == 144
    # CALIBRATION.md section 6: 4.3 -> 42.5 req/s, mean 16.0, peak/trough 9.9, peak at 22:10.
    assert abs(r.mean() - 16.0) < 0.05 and abs(r.max() / r.min() - 9.9) < 0.05
    assert int(np.argmax(r)) * 600 == 22 * 3600 + 10 * 60
    pmf = load_servegen_pmf("output_tokens", "all")
    # Whole-day output: mean 1,527 (bin midpoints add < 0.5 %), p50 792, p90 3,432.
    assert abs(pmf.mean() - 1527) / 1527 < 0.005
    assert abs(pmf.quantile(0.5) - 792) < 15 and abs(pmf.quantile(0.9) - 3432) < 60
    heavy = load_servegen_pmf("output_tokens", "21600")
    assert abs(heavy.mean() - 3260) / 3260 < 0.005


# ---------------------------------------------------------------------------- resampling
def test_slot_means_integrate_linear_pieces_exactly():
    s = TimeSeries(np.array([0.0, 10.0, 20.0, 0.0, 4.0]), 30.0, 0.0, "mem")
    # 30-minute slots from 0: trapezoids 5, 15, 10, 2.
    np.testing.assert_allclose(slot_means(s, 0.0, 30.0, 4), [5, 15, 10, 2])
    # 15-minute slots from 15 min: 5 -> 10 and 10 -> 15, averages 7.5 and 12.5.
    np.testing.assert_allclose(slot_means(s, 15.0, 15.0, 2), [7.5, 12.5])
    # One 120-minute slot: the mean of the piecewise-linear function.
    np.testing.assert_allclose(slot_means(s, 0.0, 120.0, 1), [(5 + 15 + 10 + 2) / 4])


def test_start_outside_series_names_the_file():
    s = load_nsrdb_ghi()
    with pytest.raises(TraceError, match=re.escape(NSRDB_FILE.split("/")[-1])):
        slot_means(s, 364.5 * 1440, 5.0, 288)  # runs past 23:30 on Dec 31
    with pytest.raises(TraceError, match="outside the series"):
        slot_means(s, -30.0, 5.0, 10)


# ---------------------------------------------------------------------------- bad files
def _variant(tmp_path: Path, rel: str, edit) -> Path:
    lines = data_path(rel).read_text().splitlines()
    out = tmp_path / Path(rel).name
    out.write_text("\n".join(edit(lines)) + "\n")
    return out


def test_missing_file_raises_naming_path(tmp_path):
    p = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_nsrdb_ghi(p)


def test_truncated_file_rows_missing(tmp_path):
    p = _variant(tmp_path, NSRDB_FILE, lambda ls: ls[:-100])
    with pytest.raises(TraceError, match=r"truncated") as e:
        load_nsrdb_ghi(p)
    assert p.name in str(e.value)


def test_truncated_last_line(tmp_path):
    p = _variant(tmp_path, WIND_FILE, lambda ls: ls[:-1] + [ls[-1][:25]])
    with pytest.raises(TraceError, match=rf"{p.name}: line 8762: expected 7"):
        load_wind_80m(p)


@pytest.mark.parametrize("bad, message", [("nan", "NaN"), ("-5", "negative"),
                                          ("abc", "not a number")])
def test_bad_value_names_file_and_line(tmp_path, bad, message):
    def edit(ls):
        parts = ls[1000].split(",")
        parts[1] = bad
        ls[1000] = ",".join(parts)
        return ls

    p = _variant(tmp_path, NSRDB_FILE, edit)
    with pytest.raises(TraceError, match=rf"{p.name}: line 1001: column 'ghi_w_m2'.*{message}"):
        load_nsrdb_ghi(p)


def test_bad_header(tmp_path):
    p = _variant(tmp_path, AZURE_FILE, lambda ls: ["sec,code,conv"] + ls[1:])
    with pytest.raises(TraceError, match=rf"{p.name}: line 1: bad header"):
        load_azure_per_second(p)


def test_gap_in_time_grid(tmp_path):
    p = _variant(tmp_path, NSRDB_FILE, lambda ls: ls[:501] + ls[502:] + [ls[-1]])
    with pytest.raises(TraceError, match=rf"{p.name}: line 502: time step is 60.0 min"):
        load_nsrdb_ghi(p)


def test_azure_non_consecutive_seconds(tmp_path):
    p = _variant(tmp_path, AZURE_FILE, lambda ls: ls[:10] + ls[11:])
    with pytest.raises(TraceError, match=rf"{p.name}: line 11: second is '10'"):
        load_azure_per_second(p)


def test_servegen_truncated_and_negative(tmp_path):
    p = _variant(tmp_path, SERVEGEN_RATE_FILE, lambda ls: ls[:100])
    with pytest.raises(TraceError, match="expected 144"):
        load_servegen_rate(p)

    def neg(ls):
        ls[5] = ls[5].replace(",", ",-", 1)
        return ls

    p = _variant(tmp_path, SERVEGEN_RATE_FILE, neg)
    with pytest.raises(TraceError, match=rf"{p.name}: line 6: column 'total_rate_rps'"):
        load_servegen_rate(p)


def test_servegen_pmf_not_summing_to_one(tmp_path):
    def drop(ls):
        return [ls[0]] + [x for x in ls[1:] if not x.startswith("output_tokens,all,128,")]

    p = _variant(tmp_path, SERVEGEN_PMF_FILE, drop)
    with pytest.raises(TraceError, match="sum to"):
        load_servegen_pmf("output_tokens", "all", path=p)
    with pytest.raises(TraceError, match="no rows"):
        load_servegen_pmf("output_tokens", "99999")


def test_wind_dst_stamps_read_as_standard_time():
    s = load_wind_80m()
    # The file jumps from 01:00+01:00 to 03:00+02:00 on 2010-03-28: one regular hour in UTC+1.
    assert s.values.size == 8760 and math.isclose(s.end_minute, 8759 * 60)


# ---------------------------------------------------------------------------- range, scale, length
def _set_field(rel_line: int, col: int, value: str):
    """Edit that sets field ``col`` of 0-based line ``rel_line`` (1-based line rel_line + 1)."""
    def edit(ls):
        parts = ls[rel_line].split(",")
        parts[col] = value
        ls[rel_line] = ",".join(parts)
        return ls
    return edit


#: (file, loader, 0-based line, column index, bad value, column name, text of the message).
OUT_OF_RANGE = [
    (NSRDB_FILE, load_nsrdb_ghi, 4000, 1, "1e308", "ghi_w_m2", r"outside its range \[0, 2000\]"),
    (NSRDB_FILE, load_nsrdb_ghi, 4000, 1, "2500", "ghi_w_m2", r"W/m2"),
    (NSRDB_FILE, load_nsrdb_ghi, 4000, 1, "inf", "ghi_w_m2", r"NaN or infinite"),
    (WIND_FILE, load_wind_80m, 300, 6, "1e308", "wind_speed@80m", r"\[0, 100\] m/s"),
    (WIND_FILE, load_wind_80m, 300, 6, "-inf", "wind_speed@80m", r"NaN or infinite"),
    (AZURE_FILE, load_azure_per_second, 50, 1, "1e308", "code_requests", r"\[0, 1e\+06\]"),
    (AZURE_FILE, load_azure_per_second, 50, 2, "2.5", "conv_requests", r"not an integer"),
    (SERVEGEN_RATE_FILE, load_servegen_rate, 7, 1, "1e308", "total_rate_rps", r"req/s"),
    (SERVEGEN_RATE_FILE, load_servegen_rate, 7, 1, "nan", "total_rate_rps", r"NaN"),
    (SERVEGEN_RATE_FILE, load_servegen_rate, 7, 2, "3.5", "n_active_clients", "not an integer"),
]


@pytest.mark.parametrize("rel, loader, line, col, bad, column, message", OUT_OF_RANGE,
                         ids=[f"{c}={b}" for _, _, _, _, b, c, _ in OUT_OF_RANGE])
def test_value_outside_physical_range_names_file_line_and_column(tmp_path, rel, loader, line,
                                                                 col, bad, column, message):
    p = _variant(tmp_path, rel, _set_field(line, col, bad))
    with pytest.raises(TraceError) as exc:
        loader(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: line {line + 1}: column {column!r}"), msg
    assert re.search(message, msg), msg


def test_one_huge_ghi_cannot_reach_the_harvest(tmp_path):
    """Before the range check, one GHI of 1e308 overflowed the slot integral: every harvest
    value of the solar supply came out NaN."""
    p = _variant(tmp_path, NSRDB_FILE, _set_field(4000, 1, "1e308"))
    with pytest.raises(TraceError, match=rf"{p.name}: line 4001"):
        load_nsrdb_ghi(p)
    s = load_nsrdb_ghi()
    assert np.isfinite(slot_means(s, 100 * 1440.0, 5.0, 288)).all()


@pytest.mark.parametrize("rel, loader, col, column, first", [
    (NSRDB_FILE, load_nsrdb_ghi, 1, "ghi_w_m2", 2),
    (WIND_FILE, load_wind_80m, 6, "wind_speed@80m", 3),
    (AZURE_FILE, load_azure_per_second, 1, "code_requests", 2),
    (AZURE_FILE, load_azure_per_second, 2, "conv_requests", 2),
    (SERVEGEN_RATE_FILE, load_servegen_rate, 1, "total_rate_rps", 2),
])
def test_all_zero_column_names_file_lines_and_column(tmp_path, rel, loader, col, column, first):
    def zero(ls):
        for k in range(first - 1, len(ls)):
            parts = ls[k].split(",")
            parts[col] = "0"
            ls[k] = ",".join(parts)
        return ls

    p = _variant(tmp_path, rel, zero)
    n_lines = len(p.read_text().splitlines())
    with pytest.raises(TraceError, match=re.escape(
            f"{p}: lines {first}-{n_lines}: column {column!r} is zero on every line")):
        loader(p)


@pytest.mark.parametrize("rel, loader, rows, expected", [
    (AZURE_FILE, load_azure_per_second, 1000, 3549),
    (SERVEGEN_RATE_FILE, load_servegen_rate, 100, 144),
    (NSRDB_FILE, load_nsrdb_ghi, 17_000, 17_520),
])
def test_cut_file_names_expected_and_found_rows(tmp_path, rel, loader, rows, expected):
    p = _variant(tmp_path, rel, lambda ls: ls[:1 + rows])
    with pytest.raises(TraceError, match=re.escape(
            f"{p}: expected {expected} data rows")) as exc:
        loader(p)
    assert f"got {rows} (the data ends at line {rows + 1})" in str(exc.value)


def test_extended_azure_file_refused(tmp_path):
    p = _variant(tmp_path, AZURE_FILE, lambda ls: [*ls, f"{len(ls) - 1},0,1"])
    with pytest.raises(TraceError, match=r"expected 3549 data rows.*got 3550"):
        load_azure_per_second(p)


def test_servegen_pmf_ranges_and_bin_count(tmp_path):
    lines = data_path(SERVEGEN_PMF_FILE).read_text().splitlines()
    k = next(i for i, x in enumerate(lines) if x.startswith("output_tokens,all,128,"))
    p = _variant(tmp_path, SERVEGEN_PMF_FILE, _set_field(k, 3, "1e308"))
    with pytest.raises(TraceError, match=rf"{p.name}: line {k + 1}: column 'bin_hi'.*"
                                         r"\[0, 1e\+07\] tokens"):
        load_servegen_pmf("output_tokens", "all", path=p)
    r = next(i for i, x in enumerate(lines) if x.startswith("reason_ratio,all,0.02,"))
    p = _variant(tmp_path, SERVEGEN_PMF_FILE, _set_field(r, 3, "1.5"))
    with pytest.raises(TraceError, match=rf"line {r + 1}: column 'bin_hi'.*\[0, 1\]"):
        load_servegen_pmf("reason_ratio", "all", path=p)

    def drop_empty_bin(ls):  # a zero-probability bin: the sum stays 1
        z = next(i for i, x in enumerate(ls) if x.startswith("input_tokens,all,")
                 and float(x.split(",")[4]) == 0.0)
        return ls[:z] + ls[z + 1:]

    p = _variant(tmp_path, SERVEGEN_PMF_FILE, drop_empty_bin)
    with pytest.raises(TraceError, match=r"expected 101 bins for field='input_tokens'"):
        load_servegen_pmf("input_tokens", "all", path=p)
    for field, n in (("input_tokens", 101), ("output_tokens", 101), ("reason_ratio", 50)):
        assert load_servegen_pmf(field, "all").prob.size == n
