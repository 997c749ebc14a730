"""From OHLCV to the feature matrix (docs/ktrdr-semantics.md §4): indicators, memberships, raw inputs,
the multi-timeframe join, and the raw-input normalisation fitted on the training split only.

Multi-timeframe join (our policy; KTRDR §5.2 outer-joins with zeros): every timeframe's indicators
and memberships are computed on that timeframe's own bars, then joined onto the base timeframe's
bars without look-ahead. Timestamps are bar opens, so a bar of timeframe T opening at t closes at
t + T; a bar of another timeframe is visible to a base bar once it has closed, i.e. when its close
time <= the base bar's close time, and the base bar takes the latest such bar (forward fill). A 4h
bar opening 08:00 (closing 12:00) is first seen by the 1h bar opening 11:00 (closing 12:00); a 5m
bar opening 11:55 is seen by that same 1h bar. Base bars before any such bar get NaN (warm-up).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trainhost.jobs.pipeline.data import bar_close_times
from trainhost.jobs.pipeline.fuzzy import membership
from trainhost.jobs.pipeline.indicators import indicator_arrays
from trainhost.jobs.pipeline.strategy import Strategy


def build_features(strategy: Strategy, frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """One column per feature of `timeframe`, in the strategy's canonical order; NaN kept (warm-up)."""
    features = [f for f in strategy.features if f.timeframe == timeframe]
    needed = {f.indicator_id for f in features}
    indicators = {i: (d.type, d.params) for i, d in strategy.indicators.items() if i in needed}
    columns = indicator_arrays(indicators, frame, timeframe)
    # Feature-major: each feature fills one contiguous row in place, and the frame wraps the
    # transposed matrix as its single block, uncopied.
    matrix = np.empty((len(features), len(frame)))
    for row, feature in zip(matrix, features, strict=True):
        values = columns[feature.column]
        if feature.kind == "fuzzy":
            fuzzy_set = strategy.fuzzy_sets[feature.fuzzy_set_id]
            mf = next(m for m in fuzzy_set.memberships if m.name == feature.membership)
            membership(mf.type, mf.parameters, values, out=row)
        else:
            row[:] = values
    return pd.DataFrame(matrix.T, index=frame.index, columns=[f.feature_id for f in features], copy=False)


def align_to_base(values: pd.DataFrame, timeframe: str, base_index: pd.DatetimeIndex,
                  base_timeframe: str) -> pd.DataFrame:
    """`values` (rows on `timeframe` bar opens) on the base bars: each base bar takes the latest row
    whose bar has closed by the base bar's close; NaN where none has."""
    closes = bar_close_times(values.index, timeframe).as_unit("ns").asi8
    base_closes = bar_close_times(base_index, base_timeframe).as_unit("ns").asi8
    position = np.searchsorted(closes, base_closes, side="right") - 1
    taken = values.to_numpy(dtype=np.float64)[np.maximum(position, 0)]
    taken[position < 0] = np.nan
    return pd.DataFrame(taken, index=base_index, columns=values.columns)


def build_feature_matrix(strategy: Strategy, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every feature, in canonical order, on the base timeframe's bars (NaN kept: warm-up).

    `frames` maps each of `strategy.feature_timeframes` to its OHLCV bars.
    """
    base = strategy.base_timeframe
    base_index = frames[base].index
    parts = []
    for timeframe in strategy.feature_timeframes:
        features = build_features(strategy, frames[timeframe], timeframe)
        if timeframe != base and len(features.columns):
            features = align_to_base(features, timeframe, base_index, base)
        parts.append(features)
    # One timeframe (the usual case) is already the matrix, in order: no concat, no reordering copy.
    matrix = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
    return matrix if list(matrix.columns) == strategy.feature_ids else matrix[strategy.feature_ids]


def fit_normalization(strategy: Strategy, train: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Parameters per raw feature that asks for minmax or zscore, from the training rows only."""
    params: dict[str, dict[str, Any]] = {}
    for feature in strategy.features:
        column = train[feature.feature_id]
        if feature.kind != "raw" or feature.normalization == "none":
            continue
        if feature.normalization == "minmax":
            params[feature.feature_id] = {"method": "minmax", "min": float(column.min()), "max": float(column.max())}
        else:
            params[feature.feature_id] = {"method": "zscore", "mean": float(column.mean()),
                                          "std": float(column.std(ddof=1))}
    return params


def apply_normalization(frame: pd.DataFrame, params: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Scale the named columns; a constant column (zero range or std) becomes 0, as in KTRDR §4.3."""
    frame = frame.copy()
    for feature_id, p in params.items():
        column = frame[feature_id]
        if p["method"] == "minmax":
            span = p["max"] - p["min"]
            frame[feature_id] = (column - p["min"]) / span if span > 0 else 0.0
        else:
            frame[feature_id] = (column - p["mean"]) / p["std"] if p["std"] > 0 else 0.0
    return frame
