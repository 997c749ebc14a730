"""Reading market data: `{SYMBOL}_{timeframe}.csv` files under a data root (docs/ktrdr-semantics.md
§5.1); where they are and whether a run's are there is `data_paths.py`'s.

Stricter than KTRDR's loader: a file with unparsable or truncated rows, timestamps out of order or
repeated, non-finite or non-positive prices, high below low, or missing price columns is refused
with the file and CSV line named, instead of being repaired silently. Negative volume (IB's
"no volume" sentinel) becomes 0, and a missing volume column means volume 0, as in KTRDR.

Multi-timeframe runs (§5.2, our policy): each timeframe's file is loaded; where one is missing it is
resampled from a finer timeframe of the run whose file is present (the base first; e.g. 4h and 1d
from 1h, or the 1h base of a [5m, 1h] run from 5m), with KTRDR's
OHLCV rules (first open, highest high, lowest low, last close, summed volume) and bar-open
timestamps: bars start on multiples of their length counted from Monday 1970-01-05 00:00 UTC (so
4h bars open at 00:00, 04:00, ...; days at 00:00 UTC; weeks on Mondays), months on the 1st.
"""

from __future__ import annotations

import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainhost.jobs.pipeline.bar_columns import OHLCV_COLUMNS, PRICE_COLUMNS
from trainhost.jobs.pipeline.data_paths import data_file_name, data_file_path, resample_source
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.timeframes import timeframe_minutes, timeframe_months

TIME_COLUMNS = ("timestamp", "datetime", "date", "time")
MAX_REPORTED = 5  # bad rows named in one error
LINE = "__csv_line__"  # the CSV line number of each row, kept for messages


def _when(value: Any) -> pd.Timestamp | None:
    """A bound as a UTC timestamp; naive means UTC, and a date means 00:00 UTC that day."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise DataError(f"{value!r} is not a date or date-time")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _bad_rows(name: str, lines: list[str]) -> DataError:
    more = f" (and {len(lines) - MAX_REPORTED} more)" if len(lines) > MAX_REPORTED else ""
    return DataError(f"{name}: bad data on " + "; ".join(lines[:MAX_REPORTED]) + more)


def _read_raw(path: Path) -> pd.DataFrame:
    """Every cell as text, lower-cased column names, blank lines dropped, plus each row's CSV line number."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path.name}: cannot be read as CSV: {exc}") from None
    frame = frame.fillna("")  # fields missing from a short (truncated) row
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    blank = (frame == "").all(axis=1)
    frame.insert(0, LINE, range(2, len(frame) + 2))  # line 1 is the header
    return frame[~blank]


def _time_column(frame: pd.DataFrame, name: str) -> str:
    """KTRDR's rule: the first column holds the timestamps, else a date/timestamp/time column."""
    first = frame.columns[1]
    if first not in OHLCV_COLUMNS:
        return first
    for candidate in TIME_COLUMNS:
        if candidate in frame.columns:
            return candidate
    raise DataError(f"{name}: no timestamp column (the first column, or one named {', '.join(TIME_COLUMNS)})")


def _parse_times(frame: pd.DataFrame, column: str, name: str) -> pd.DatetimeIndex:
    text = frame[column].str.strip()
    times = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = times.isna()
    if bad.any():
        raise _bad_rows(name, [f"line {line}: timestamp {value!r} is not an ISO 8601 date-time"
                               for line, value in zip(frame[LINE][bad], text[bad], strict=True)])
    return pd.DatetimeIndex(times, name="timestamp")


def _parse_numbers(frame: pd.DataFrame, index: pd.DatetimeIndex, name: str) -> pd.DataFrame:
    """The OHLCV columns as float64; refuses missing, unparsable and impossible values."""
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; the file has {', '.join(frame.columns[1:])}")
    lines = frame[LINE].to_numpy()
    problems: list[tuple[int, str]] = []
    values = {}
    for column in OHLCV_COLUMNS:
        if column not in frame.columns:  # volume: optional, 0 like KTRDR
            values[column] = np.zeros(len(frame))
            continue
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
        empty = text.to_numpy() == ""
        for i in np.flatnonzero(empty):
            problems.append((lines[i], f"{column} is missing (truncated row?)"))
        for i in np.flatnonzero(~np.isfinite(numbers) & ~empty):
            problems.append((lines[i], f"{column} {text.iloc[i]!r} is not a finite number"))
        if column in PRICE_COLUMNS:
            for i in np.flatnonzero(numbers <= 0):
                problems.append((lines[i], f"{column} must be > 0, got {numbers[i]:g}"))
        values[column] = numbers
    for i in np.flatnonzero(values["high"] < values["low"]):
        problems.append((lines[i], f"high {values['high'][i]:g} is below low {values['low'][i]:g}"))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise _bad_rows(name, [f"line {line} ({index[np.searchsorted(lines, line)]}): {what}"
                               for line, what in problems])
    values["volume"] = np.where(values["volume"] < 0, 0.0, values["volume"])  # IB's sentinel for "no volume"
    return pd.DataFrame(values, index=index, columns=list(OHLCV_COLUMNS), dtype="float64")


def _check_order(index: pd.DatetimeIndex, lines: Any, name: str) -> None:
    """Timestamps must strictly increase: a repeat or a step back means a corrupt or merged file."""
    stamps = index.asi8
    steps = np.flatnonzero(stamps[1:] <= stamps[:-1]) + 1

    def problem(i: int) -> str:
        what = "repeats the previous row's" if stamps[i] == stamps[i - 1] else f"is earlier than line {lines[i - 1]}'s"
        return f"line {lines[i]}: timestamp {index[i]} {what} (rows must be in strictly increasing time order)"

    if len(steps):
        raise _bad_rows(name, [problem(i) for i in steps])


def _range_text(first: pd.Timestamp | None, last: pd.Timestamp | None) -> str:
    if first is not None and last is not None:
        return f"between {first} and {last}"
    if first is not None:
        return f"from {first} on"
    return f"up to {last}" if last is not None else "in the file"


def read_ohlcv_file(data_dir: str | Path, symbol: str, timeframe: str) -> pd.DataFrame:
    """Every bar of `{symbol}_{timeframe}.csv`, checked (see the module docstring)."""
    path = data_file_path(data_dir, symbol, timeframe, must_exist=True)
    name = path.name
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{name}: the file has no data rows")
    index = _parse_times(raw, _time_column(raw, name), name)
    lines = raw[LINE].to_numpy()
    _check_order(index, lines, name)
    return _parse_numbers(raw, index, name)


def select_range(bars: pd.DataFrame, name: str, start: Any = None, end: Any = None,
                 min_bars: int = 0) -> pd.DataFrame:
    """The bars with start <= t <= end; DataError when none, or fewer than `min_bars`, fall there."""
    first, last = _when(start), _when(end)
    selected = bars
    if first is not None:
        selected = selected[selected.index >= first]
    if last is not None:
        selected = selected[selected.index <= last]
    where = _range_text(first, last)
    if selected.empty:
        raise DataError(f"{name}: no data {where} (file covers {bars.index[0]} .. {bars.index[-1]})")
    if len(selected) < min_bars:
        raise DataError(f"{name}: only {len(selected)} bars {where}, the strategy needs at least {min_bars} "
                        "(indicator warm-up)")
    return selected


def load_ohlcv(data_dir: str | Path, symbol: str, timeframe: str, start: Any = None, end: Any = None,
               min_bars: int = 0) -> pd.DataFrame:
    """OHLCV bars of `{symbol}_{timeframe}.csv` with start <= t <= end (inclusive, UTC).

    Returns float64 columns open, high, low, close, volume on a UTC DatetimeIndex named `timestamp`.
    `start`/`end` may be datetimes, dates (00:00 UTC that day) or ISO strings; naive means UTC.
    Raises DataError naming the file and row for any unusable data, when no bars fall in the range,
    or when fewer than `min_bars` do.
    """
    bars = read_ohlcv_file(data_dir, symbol, timeframe)
    return select_range(bars, data_file_name(symbol, timeframe), start, end, min_bars)


_ORIGIN = "1970-01-05 00:00:00+00:00"  # a Monday: weeks open on Mondays, days at 00:00 UTC


def bar_length(timeframe: str) -> pd.Timedelta | pd.DateOffset:
    """A bar's length: a Timedelta, or a DateOffset for months."""
    months = timeframe_months(timeframe)
    return pd.Timedelta(minutes=timeframe_minutes(timeframe)) if months is None else pd.DateOffset(months=months)


def bar_close_times(index: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    """When each bar (stamped with its open time) closes: open + the bar's length."""
    with warnings.catch_warnings():  # month offsets are not vectorised; fine at monthly sizes
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        return index + bar_length(timeframe)


def resample_ohlcv(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """`bars` aggregated to `timeframe`: first open, max high, min low, last close, summed volume,
    stamped with the bar's open time; periods without any bar are left out."""
    minutes = timeframe_minutes(timeframe)
    rule = f"{timeframe_months(timeframe)}MS" if minutes is None else f"{minutes}min"
    options = {} if minutes is None else {"origin": _ORIGIN}
    resampled = bars.resample(rule, label="left", closed="left", **options).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    resampled = resampled[resampled["open"].notna()]
    resampled.index.name = bars.index.name
    return resampled


def load_timeframes(data_dir: str | Path, symbol: str, timeframes: list[str], base: str, start: Any = None,
                    end: Any = None, min_bars: dict[str, int] | None = None
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Each timeframe's bars in [start, end] for one symbol, and where each came from.

    A missing file is resampled (whole file, then the range is taken) from the run's
    `resample_source` (the base when it divides the timeframe, else the coarsest finer one
    present); the source says `file` or `resampled from <tf>`. A native file that ends
    early would leave its last bar forward-filled for ever: base bars closing after that file's
    last bar close plus one bar length are cut off.
    """
    min_bars = min_bars or {}
    present = [tf for tf in timeframes if data_file_path(data_dir, symbol, tf).is_file()]
    full: dict[str, pd.DataFrame] = {}

    def whole(tf: str) -> pd.DataFrame:
        if tf not in full:
            full[tf] = read_ohlcv_file(data_dir, symbol, tf)
        return full[tf]

    frames, sources = {}, {}
    for tf in [base, *(t for t in timeframes if t != base)]:
        name = data_file_name(symbol, tf)
        if tf in present:
            bars, sources[tf] = whole(tf), "file"
        else:
            source = resample_source(tf, present, base)
            if source is None:
                data_file_path(data_dir, symbol, tf, must_exist=True)  # raises: names the file and the root
            bars, sources[tf] = resample_ohlcv(whole(source), tf), f"resampled from {source}"
            name = f"{name[:-4]} (resampled from {data_file_name(symbol, source)})"
        frames[tf] = select_range(bars, name, start, end, min_bars.get(tf, 0))
    for tf, frame in frames.items():
        if tf != base and sources[tf] == "file":
            limit = bar_close_times(frame.index[-1:], tf)[0] + bar_length(tf)
            base_frame = frames[base]
            frames[base] = base_frame[bar_close_times(base_frame.index, base) <= limit]
    return frames, sources
