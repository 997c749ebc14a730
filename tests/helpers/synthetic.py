"""Seeded synthetic bars for tests: finer bars consistent with real coarser ones.

`subdivide_bars` splits each bar into `parts` sub-bars whose path runs from the bar's open to its
close (a random walk bridged to the close), whose highest high is the bar's high and lowest low its
low, and whose volumes add up to its volume. Resampling the result back (first/max/min/last/sum)
gives the original bars exactly, so a 5m series made from EURUSD 1h agrees with the 1h file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainhost.jobs.pipeline.bar_columns import OHLCV_COLUMNS


def subdivide_bars(bars: pd.DataFrame, parts: int, seed: int = 0) -> pd.DataFrame:
    """`parts` sub-bars per bar of `bars` (bar-open timestamps, equal-length bars), seeded."""
    if parts < 2:
        raise ValueError(f"parts must be at least 2, got {parts}")
    steps = bars.index.to_series().diff().dropna()
    if steps.empty:
        raise ValueError("need at least two bars to know their length")
    length = steps.min()
    rng = np.random.default_rng(seed)
    o, h, lo, c, v = (bars[col].to_numpy(dtype=np.float64) for col in OHLCV_COLUMNS)
    n, span = len(bars), (h - lo)[:, None]
    # Path points p_0 = open .. p_parts = close: a Brownian bridge around the straight line, kept in [low, high].
    walk = np.cumsum(rng.standard_normal((n, parts)), axis=1)
    t = np.arange(1, parts + 1) / parts
    bridge = walk - t * walk[:, -1:]
    path = o[:, None] + (c - o)[:, None] * t + bridge * span * 0.15
    path = np.clip(path, lo[:, None], h[:, None])
    path[:, -1] = c
    opens = np.concatenate([o[:, None], path[:, :-1]], axis=1)
    closes = path
    wick = np.abs(rng.standard_normal((n, parts, 2))) * span[:, :, None] * 0.05
    highs = np.minimum(np.maximum(opens, closes) + wick[..., 0], h[:, None])
    lows = np.maximum(np.minimum(opens, closes) - wick[..., 1], lo[:, None])
    rows = np.arange(n)
    highs[rows, np.argmax(np.maximum(opens, closes), axis=1)] = h  # the bar's high and low are reached
    lows[rows, np.argmin(np.minimum(opens, closes), axis=1)] = lo
    shares = rng.dirichlet(np.ones(parts), size=n)
    volumes = shares * v[:, None]
    offsets = np.arange(parts) * np.timedelta64((length / parts).value, "ns")
    stamps = bars.index.as_unit("ns").tz_localize(None).values[:, None] + offsets[None, :]
    index = pd.DatetimeIndex(stamps.ravel(), name=bars.index.name)
    if bars.index.tz is not None:
        index = index.tz_localize("UTC").tz_convert(bars.index.tz)
    return pd.DataFrame({"open": opens.ravel(), "high": highs.ravel(), "low": lows.ravel(), "close": closes.ravel(),
                         "volume": volumes.ravel()}, index=index)


def write_bars(bars: pd.DataFrame, path) -> None:
    """Write bars as a data-root CSV (`timestamp,open,high,low,close,volume`, ISO UTC timestamps)."""
    out = bars.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "timestamp"
    out.to_csv(path, float_format="%.6f")
