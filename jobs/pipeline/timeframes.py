"""Timeframes such as 5m, 1h, 4h, 1d, 1w and 1M: which are accepted, how long a bar is, and which can
be resampled from which (docs/ktrdr-semantics.md §5.2).

Pure Python on purpose: the light client validates strategies and checks data files with it.
"""

from __future__ import annotations

import re
from typing import Any

TIMEFRAME_PATTERN = re.compile(r"[1-9][0-9]{0,3}[mhdwM]")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080}


def timeframe_error(value: Any) -> str | None:
    """Why `value` is not an acceptable timeframe such as 5m, 1h, 1d, 1w or 1M, or None."""
    if not isinstance(value, str) or not TIMEFRAME_PATTERN.fullmatch(value):
        return f"must be a timeframe such as 5m, 1h, 4h, 1d, 1w or 1M, got {value!r}"
    return None


def timeframe_minutes(timeframe: str) -> int | None:
    """Length of a `{n}{m,h,d,w}` bar in minutes; None for months (`{n}M`), which vary in length."""
    count, unit = int(timeframe[:-1]), timeframe[-1]
    return None if unit == "M" else count * _UNIT_MINUTES[unit]


def timeframe_months(timeframe: str) -> int | None:
    """Length of a `{n}M` bar in months; None for the fixed-length timeframes."""
    return int(timeframe[:-1]) if timeframe[-1] == "M" else None


def divides(finer: str, coarser: str) -> bool:
    """Whether bars of `coarser` are whole numbers of `finer` bars, so `coarser` can be resampled
    from `finer` (any fixed-length timeframe divides a month)."""
    a, b = timeframe_minutes(finer), timeframe_minutes(coarser)
    if a is None:
        return b is None and timeframe_months(coarser) % timeframe_months(finer) == 0
    if b is None:
        return 1440 % a == 0
    return b > a and b % a == 0
