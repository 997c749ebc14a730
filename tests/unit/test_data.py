"""Market data loading: paths kept inside the data root, strict CSV checks, date filtering."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from tests.helpers.fixtures import strategy_text
from trainhost.jobs.pipeline.data import load_ohlcv
from trainhost.jobs.pipeline.data_paths import check_data_available, data_file_path
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.strategy import parse_strategy

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2024-01-01 00:00:00,1.10,1.12,1.09,1.11,100",
    "2024-01-01 01:00:00,1.11,1.13,1.10,1.12,-1",
    "2024-01-01 02:00:00,1.12,1.14,1.11,1.13,50",
    "2024-01-01 03:00:00,1.13,1.15,1.12,1.14,0",
]


def write(directory, name: str, rows: list[str], header: str = HEADER) -> None:
    (directory / name).write_text(header + "\n".join(rows) + "\n")


def load_error(directory, symbol="TEST", timeframe="1h", **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        load_ohlcv(directory, symbol, timeframe, **kwargs)
    return str(caught.value)


def test_happy_path_returns_float_utc_frame(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS)
    bars = load_ohlcv(tmp_path, "TEST", "1h")
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == "float64" for dtype in bars.dtypes)
    assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp"
    assert bars.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert bars["volume"].tolist() == [100.0, 0.0, 50.0, 0.0]  # negative volume is IB's sentinel


def test_any_case_columns_offsets_blank_lines_and_missing_volume(tmp_path):
    rows = ["2024-01-01T01:00:00+01:00,1.10,1.12,1.09,1.11", "", "2024-01-01T02:00:00+01:00,1.11,1.13,1.10,1.12"]
    write(tmp_path, "TEST_1h.csv", rows, header="Date,Open,HIGH,low,Close\n")
    bars = load_ohlcv(tmp_path, "TEST", "1h")
    assert bars.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert bars["volume"].tolist() == [0.0, 0.0] and len(bars) == 2


def test_unnamed_first_column_is_the_time_index(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS[:2], header=",Open,High,Low,Close,Volume\n")
    assert len(load_ohlcv(tmp_path, "TEST", "1h")) == 2


@pytest.mark.parametrize("bad_row, message", [
    ("2024-01-01 04:00:00,1.10,1.12,1.09,nan,10", "line 6 (2024-01-01 04:00:00+00:00): close 'nan' is not a finite"),
    ("2024-01-01 04:00:00,1.10,inf,1.09,1.11,10", "line 6 (2024-01-01 04:00:00+00:00): high 'inf' is not a finite"),
    ("2024-01-01 04:00:00,1.10,1.12,1.09,abc,10", "close 'abc' is not a finite number"),
    ("2024-01-01 04:00:00,0,1.12,1.09,1.11,10", "line 6 (2024-01-01 04:00:00+00:00): open must be > 0, got 0"),
    ("2024-01-01 04:00:00,1.10,1.08,1.09,1.11,10", "high 1.08 is below low 1.09"),
    ("2024-01-01 04:00:00,1.10,1.12", "line 6 (2024-01-01 04:00:00+00:00): low is missing (truncated row?)"),
    ("2024-01-01 03:00:00,1.10,1.12,1.09,1.11,10", "line 6: timestamp 2024-01-01 03:00:00+00:00 repeats the previous"),
    ("2024-01-01 02:30:00,1.10,1.12,1.09,1.11,10",
     "line 6: timestamp 2024-01-01 02:30:00+00:00 is earlier than line 5's"),
    ("2024-01-", "line 6: timestamp '2024-01-' is not an ISO 8601 date-time"),
    ("01/05/2024 04:00,1.10,1.12,1.09,1.11,10", "line 6: timestamp '01/05/2024 04:00' is not an ISO 8601"),
    ("2024-01-01 04:00:00,1.10,1.12,1.09,1.11,10,99", "cannot be read as CSV"),
])
def test_bad_rows_are_refused_naming_file_and_line(tmp_path, bad_row, message):
    write(tmp_path, "TEST_1h.csv", [*GOOD_ROWS, bad_row])
    error = load_error(tmp_path)
    assert error.startswith("TEST_1h.csv: ") and message in error, error


def test_truncated_last_line_without_newline(tmp_path):
    (tmp_path / "TEST_1h.csv").write_text(HEADER + "\n".join(GOOD_ROWS) + "\n2024-01-01 04:00:00,1.10,1.1")
    assert "line 6 (2024-01-01 04:00:00+00:00): close is missing (truncated row?)" in load_error(tmp_path)


def test_many_bad_rows_are_summarised(tmp_path):
    rows = [f"2024-01-01 {h:02d}:00:00,1.10,1.12,1.09,-1,10" for h in range(10)]
    write(tmp_path, "TEST_1h.csv", rows)
    error = load_error(tmp_path)
    assert error.count("close must be > 0") == 5 and error.endswith("(and 5 more)")


@pytest.mark.parametrize("content, message", [
    ("", "TEST_1h.csv: the file is empty"),
    (HEADER, "TEST_1h.csv: the file has no data rows"),
    ("timestamp,open,high,close\n2024-01-01,1,2,1.5\n", "TEST_1h.csv: missing column(s) low"),
])
def test_unusable_files(tmp_path, content, message):
    (tmp_path / "TEST_1h.csv").write_text(content)
    assert load_error(tmp_path).startswith(message)


def test_missing_file_lists_available(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS)
    error = load_error(tmp_path, timeframe="4h")
    assert error == f"no data file TEST_4h.csv in {tmp_path.resolve()}; available: TEST_1h.csv"
    assert data_file_path(tmp_path, "TEST", "4h") == tmp_path.resolve() / "TEST_4h.csv"
    with pytest.raises(DataError, match="no data file TEST_4h.csv"):
        data_file_path(tmp_path, "TEST", "4h", must_exist=True)


@pytest.mark.parametrize("symbol, timeframe", [("../etc", "1h"), ("..", "1h"), (".hidden", "1h"),
                                               ("EURUSD", "1h/../../x"), ("EUR/USD", "1h"), ("EURUSD", "")])
def test_traversal_is_refused(tmp_path, symbol, timeframe):
    with pytest.raises(DataError, match="must be"):
        data_file_path(tmp_path, symbol, timeframe)


def test_symlink_escaping_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write(outside, "SECRET_1h.csv", GOOD_ROWS)
    os.symlink(outside / "SECRET_1h.csv", root / "TEST_1h.csv")
    with pytest.raises(DataError, match="leads outside the data root"):
        load_ohlcv(root, "TEST", "1h")


def test_symlink_inside_the_root_is_followed(tmp_path):
    write(tmp_path, "REAL_1h.csv", GOOD_ROWS)
    os.symlink(tmp_path / "REAL_1h.csv", tmp_path / "TEST_1h.csv")
    assert data_file_path(tmp_path, "TEST", "1h") == (tmp_path / "REAL_1h.csv").resolve()
    assert len(load_ohlcv(tmp_path, "TEST", "1h")) == 4


def test_date_filter_is_inclusive_and_accepts_strings_dates_and_datetimes(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS)
    bars = load_ohlcv(tmp_path, "TEST", "1h", start="2024-01-01T01:00:00Z",
                      end=datetime(2024, 1, 1, 2, tzinfo=UTC))
    assert [t.hour for t in bars.index] == [1, 2]
    assert len(load_ohlcv(tmp_path, "TEST", "1h", end=date(2024, 1, 1))) == 1  # a date means 00:00 UTC
    assert len(load_ohlcv(tmp_path, "TEST", "1h", start=datetime(2024, 1, 1, 3))) == 1  # naive means UTC


def test_empty_range_says_what_the_file_covers(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS)
    error = load_error(tmp_path, start="2025-01-01", end="2025-02-01")
    assert error == ("TEST_1h.csv: no data between 2025-01-01 00:00:00+00:00 and 2025-02-01 00:00:00+00:00 "
                     "(file covers 2024-01-01 00:00:00+00:00 .. 2024-01-01 03:00:00+00:00)")
    assert "no data from 2025-01-01 00:00:00+00:00 on" in load_error(tmp_path, start="2025-01-01")


def test_too_few_bars_names_the_warm_up(tmp_path):
    write(tmp_path, "TEST_1h.csv", GOOD_ROWS)
    error = load_error(tmp_path, end="2024-01-01T01:00:00", min_bars=15)
    assert error == ("TEST_1h.csv: only 2 bars up to 2024-01-01 01:00:00+00:00, the strategy needs at least 15 "
                     "(indicator warm-up)")


def test_check_data_available(tmp_path):
    write(tmp_path, "EURUSD_1h.csv", GOOD_ROWS)
    check_data_available(tmp_path, parse_strategy(strategy_text("v3_minimal")))
    strategy = parse_strategy(strategy_text("v3_minimal"), {"symbols": ["EURUSD", "GBPUSD", "USDJPY"]})
    with pytest.raises(DataError) as caught:
        check_data_available(tmp_path, strategy)
    assert str(caught.value) == (f"no data file GBPUSD_1h.csv, USDJPY_1h.csv in {tmp_path.resolve()}; "
                                 "available: EURUSD_1h.csv")


def test_real_sample_data(sample_data_dir):
    bars = load_ohlcv(sample_data_dir, "EURUSD", "1h")
    assert len(bars) == 5000
    assert bars.index[0] == pd.Timestamp("2017-04-19 09:00", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2018-02-07 15:00", tz="UTC")
    assert (bars["high"] >= bars["low"]).all() and bars.notna().all().all()
    window = load_ohlcv(sample_data_dir, "EURUSD", "1h", start="2017-04-19T10:00:00Z", end="2017-04-19T12:00:00Z")
    assert len(window) == 3
    strategy = parse_strategy(strategy_text("v3_minimal"))
    check_data_available(sample_data_dir, strategy)
    assert len(load_ohlcv(sample_data_dir, "EURUSD", "1h", min_bars=strategy.warmup_bars)) == 5000
