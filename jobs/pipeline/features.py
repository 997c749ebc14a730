"""From OHLCV to the feature matrix (KTRDR-PIPELINE.md §4): indicators, memberships, raw inputs,
and the raw-input normalisation fitted on the training split only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.pipeline.fuzzy import membership
from jobs.pipeline.indicators import indicator_columns
from jobs.pipeline.strategy import Strategy


def build_features(strategy: Strategy, frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """One column per feature of `timeframe`, in the strategy's canonical order; NaN kept (warm-up)."""
    features = [f for f in strategy.features if f.timeframe == timeframe]
    needed = {f.indicator_id for f in features}
    indicators = {i: (d.type, d.params) for i, d in strategy.indicators.items() if i in needed}
    columns = indicator_columns(indicators, frame, timeframe)
    matrix: dict[str, np.ndarray] = {}
    for feature in features:
        values = columns[feature.column].to_numpy(dtype=np.float64)
        if feature.kind == "fuzzy":
            fuzzy_set = strategy.fuzzy_sets[feature.fuzzy_set_id]
            mf = next(m for m in fuzzy_set.memberships if m.name == feature.membership)
            values = membership(mf.type, mf.parameters, values)
        matrix[feature.feature_id] = values
    return pd.DataFrame(matrix, index=frame.index)


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
