"""Seeded synthetic OHLCV bars shaped like EURUSD 1h (price near 1.10, ~0.12 % hourly moves), so the
example strategies' fuzzy sets and zigzag threshold see realistic values at any length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

START = "2000-01-03"


def ohlcv(bars: int, seed: int = 7, freq: str = "1h") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 1.10 * np.exp(np.cumsum(rng.normal(0.0, 0.0012, bars)))
    open_ = np.concatenate([[1.10], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.0008, bars)) * close
    high = np.maximum(open_, close) + wick
    low = np.minimum(open_, close) - wick * rng.random(bars)
    volume = rng.integers(100, 10_000, bars).astype(np.float64)
    index = pd.date_range(START, periods=bars, freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def write_csv(data_dir: Path, symbol: str, bars: int, timeframe: str = "1h", seed: int = 7) -> Path:
    """`{symbol}_{timeframe}.csv` in `data_dir`, in the sample data's format."""
    frame = ohlcv(bars, seed, freq=timeframe.replace("m", "min"))
    path = Path(data_dir) / f"{symbol}_{timeframe}.csv"
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%d %H:%M:%S+00:00")
    out.to_csv(path, float_format="%.6f")
    return path
