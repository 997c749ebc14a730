"""A strategy's data set: loaded, featured and labelled per symbol, split in time, stacked.

Per symbol (§5.3, our policy): its timeframes are loaded (a missing higher one resampled), the
features computed and joined onto the base timeframe without look-ahead, the labels computed on its
own base bars; rows whose features are still warming up are dropped, and so are the last rows that
no label reaches. The symbol is then split in time into train / validation / test regions of rows
(chronologically by samples, §7; for triple-barrier labels the purged split with embargo, using each
label's own holding period), and the regions of all symbols are stacked. A sample is a labelled row
(MLP) or a window of `sequence_length` consecutive rows ending at a labelled row (LSTM/GRU, §8);
windows never reach outside their region, so they never span a split or a symbol boundary, and no
test bar of a symbol precedes one of its training bars.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainhost.jobs.pipeline.data import load_timeframes
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.features import build_feature_matrix
from trainhost.jobs.pipeline.label_specs import CLASS_NAMES
from trainhost.jobs.pipeline.labels import make_labels
from trainhost.jobs.pipeline.reporter import NullReporter, Reporter
from trainhost.jobs.pipeline.strategy import Strategy

EMBARGO_FRACTION = 0.01  # §7: e = ⌊0.01·N⌋ samples before the validation start leave the training set


@dataclasses.dataclass
class Split:
    """One split, stacked across symbols.

    `features` are rows; `labels` one per sample. MLP: row i is sample i. Sequence models: sample i
    is the window of rows `windows[i]` (consecutive bars of one symbol, inside this split) and
    `features` also holds rows that are only context. `weights`: uniqueness weights per sample;
    `symbols`: each row's symbol.
    """

    features: pd.DataFrame
    labels: np.ndarray
    windows: np.ndarray | None = None
    weights: np.ndarray | None = None
    symbols: np.ndarray | None = None  # each row's symbol

    @property
    def sample_rows(self) -> np.ndarray:
        return np.arange(len(self.labels)) if self.windows is None else self.windows[:, -1]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(features as float32 rows, labels) as the trainer takes them."""
        return self.features.to_numpy(dtype=np.float32, copy=True), self.labels


@dataclasses.dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    summary: dict[str, Any]
    symbols: dict[str, SymbolData] = dataclasses.field(default_factory=dict)
    test_starts: dict[str, pd.Timestamp] = dataclasses.field(default_factory=dict)  # first test bar per symbol


@dataclasses.dataclass
class SymbolData:
    """One symbol's usable rows on its base timeframe.

    `features`: rows with every feature computed, up to the last labelled one; `targets` one per
    row (NaN where the row has no label: CUSUM non-events, or rows only a window uses);
    `positions`: each row's bar number in the loaded base bars (gaps where warm-up rows were dropped);
    `matrix`: the features of every loaded bar, warm-up NaN kept (what a backtest of the bars reads).
    """

    symbol: str
    bars: pd.DataFrame
    features: pd.DataFrame
    targets: np.ndarray
    positions: np.ndarray
    holds: np.ndarray | None
    weights: np.ndarray | None
    sources: dict[str, str]
    matrix: pd.DataFrame


def load_symbol(strategy: Strategy, data_dir: str | Path, symbol: str, start: Any = None,
                end: Any = None) -> SymbolData:
    """Load one symbol's timeframes and compute its features and labels (see the module docstring)."""
    base = strategy.base_timeframe
    timeframes = strategy.feature_timeframes
    min_bars = {tf: strategy.warmup_bars_at(tf) + 1 for tf in timeframes}
    frames, sources = load_timeframes(data_dir, symbol, timeframes, base, start, end, min_bars)
    bars = frames[base]
    features = build_feature_matrix(strategy, frames)
    labels = make_labels(strategy.labels.source, strategy.labels.params, bars)
    keep = usable_rows(features, labels.labelled)
    if keep is None:
        raise DataError(f"{symbol} {base}: no bar has both its features (after the indicator warm-up) and a label "
                        f"among the {len(bars)} loaded; widen the date range")
    return SymbolData(
        symbol=symbol, bars=bars, features=take_rows(features, keep), targets=labels.values[keep], positions=keep,
        holds=None if labels.holds is None else labels.holds[keep],
        weights=None if labels.weights is None else labels.weights[keep], sources=sources, matrix=features,
    )


def usable_rows(features: pd.DataFrame, labelled: np.ndarray) -> np.ndarray | None:
    """The rows a run keeps: every feature computed (past the warm-up), up to the last row that also
    has a label (later rows can still end a sequence window); None when no row has both."""
    # numpy, not features.isna().any(axis=1): the same answer without pandas' fixed cost per call,
    # which is large against the whole feature pipeline at small sizes (bench/RESULTS.md)
    complete = ~np.isnan(features.to_numpy(dtype=np.float64)).any(axis=1)
    usable = complete & labelled
    if not usable.any():
        return None
    return np.flatnonzero(complete[: np.flatnonzero(usable)[-1] + 1])


def take_rows(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """frame.iloc[rows], as a slice (no copy) when the rows are one run, as they are unless a feature
    has a gap mid-series (warm-up rows lead, unlabelled ones trail): on large series the copy is a
    sizeable part of the feature pipeline's time (bench/RESULTS.md)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return frame.iloc[rows[0]: rows[-1] + 1]
    return frame.iloc[rows]


def split_bounds(n: int, train_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """Chronological split (§7): train [0, a), validation [a, b), test [b, n)."""
    return int(n * train_fraction), int(n * (train_fraction + validation_fraction))


def purged_split(positions: np.ndarray, holds: np.ndarray, train_fraction: float, validation_fraction: float,
                 test_fraction: float) -> tuple[np.ndarray, int, int]:
    """§7's purged split of N triple-barrier samples (at bar `positions`, labels looking `holds` bars ahead).

    q = min(va + te, 1), s = ⌊N(1 - q)⌋, e = ⌊0.01 N⌋: training keeps sample i < s - e whose label
    window ends by the first validation bar (position_i + hold_i <= position_s; KTRDR uses the
    maximum holding period for every sample, we use each label's own); validation is the first
    ⌊(N - s)·va/q⌋ samples from s, test the rest. Returns (training sample indices, s, test start).
    """
    n = len(positions)
    q = min(validation_fraction + test_fraction, 1.0)
    s = int(n * (1 - q))
    embargo = int(EMBARGO_FRACTION * n)
    if s <= 0 or s >= n:
        return np.zeros(0, dtype=np.int64), s, s
    candidates = np.arange(max(s - embargo, 0))
    train = candidates[positions[candidates] + holds[candidates] <= positions[s]]
    return train, s, s + int((n - s) * validation_fraction / q)


def sequence_windows(sample_rows: np.ndarray, positions: np.ndarray, length: int,
                     region_start: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `length` consecutive bars ending at each sample row, inside the region that begins
    at row `region_start`: ((n_kept, length) row indices, mask of the samples kept). A window is
    kept only if all its rows lie in the region and are consecutive bars (no dropped row inside)."""
    first = sample_rows - (length - 1)
    kept = first >= region_start
    kept[kept] = positions[sample_rows[kept]] - positions[first[kept]] == length - 1
    return first[kept, None] + np.arange(length), kept


def _symbol_splits(strategy: Strategy, data: SymbolData) -> dict[str, Split]:
    """One symbol's train / val / test splits (row regions in time; samples and windows within)."""
    training = strategy.training
    samples = np.flatnonzero(~np.isnan(data.targets))  # rows with a label
    n = len(samples)
    v = None  # where validation ends when it does not run up to the test split (a gap)
    if strategy.test_start is not None:
        # A walk-forward fold: the test split is the bars from test_start; train and validation share
        # the bars before it (up to train_end: the gap's bars are in neither) in the strategy's proportion.
        times = data.features.index[samples]
        t = int(np.searchsorted(times, pd.Timestamp(strategy.test_start)))
        if strategy.train_end is not None:
            v = int(np.searchsorted(times, pd.Timestamp(strategy.train_end), side="right"))
        s = int((t if v is None else v) * training.train_fraction
                / (training.train_fraction + training.validation_fraction))
        train = np.arange(s)
    elif strategy.labels.source == "triple_barrier":
        train, s, t = purged_split(data.positions[samples], data.holds[samples], training.train_fraction,
                                   training.validation_fraction, training.test_fraction)
    else:
        s, t = split_bounds(n, training.train_fraction, training.validation_fraction)
        train = np.arange(s)
    where = f"{data.symbol} {strategy.base_timeframe}"
    if len(train) == 0 or s >= t or t >= n:
        raise DataError(f"{where}: {n} labelled bars after the indicator warm-up are too few to split into "
                        "train/validation/test; widen the date range")
    v = t if v is None else v
    val_end = samples[t] if v == t else samples[v - 1] + 1
    if s >= v:
        raise DataError(f"{where}: no labelled bar is left for validation before the gap; widen the train window")
    bounds = {"train": (0, samples[s]), "val": (samples[s], val_end), "test": (samples[t], samples[-1] + 1)}
    chosen = {"train": samples[train], "val": samples[s:v], "test": samples[t:]}
    regression = strategy.task == "regression"
    length = strategy.model.sequence_length if strategy.model.is_sequence else None
    splits = {}
    for name, (lo, hi) in bounds.items():
        rows = chosen[name]
        windows = None
        if length is not None:
            windows, kept = sequence_windows(rows, data.positions, length, lo)
            rows, windows = rows[kept], windows - lo
            if len(rows) == 0:
                raise DataError(f"{where}: the {name} split has {hi - lo} bars, too few for one window of "
                                f"sequence_length {length}; widen the date range or shorten the sequence")
        targets = data.targets[rows]
        labels = targets.astype(np.float32) if regression else targets.astype(np.int64)
        weights = None if data.weights is None or name != "train" else data.weights[rows]
        features = data.features.iloc[lo:hi] if length is not None else data.features.iloc[rows]
        splits[name] = Split(features, labels, windows, weights, np.full(len(features), data.symbol, dtype=object))
    return splits


def _stack(parts: list[Split]) -> Split:
    features = pd.concat([p.features for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    windows = None
    if parts[0].windows is not None:
        offsets = np.cumsum([0] + [len(p.features) for p in parts[:-1]])
        windows = np.concatenate([p.windows + offset for p, offset in zip(parts, offsets, strict=True)])
    weights = None
    if parts[0].weights is not None:
        weights = np.concatenate([p.weights for p in parts])
        weights = weights / weights.mean()  # mean 1 over the stacked training set
    return Split(features, labels, windows, weights, np.concatenate([p.symbols for p in parts]))


def label_summary(strategy: Strategy, labels: np.ndarray) -> dict[str, Any]:
    """Class counts by name, or for regression the distribution of the returns."""
    if strategy.task == "regression":
        return {"mean": float(labels.mean()), "std": float(labels.std()), "min": float(labels.min()),
                "max": float(labels.max()), "positive_share": float((labels > 0).mean())}
    names = CLASS_NAMES[strategy.labels.source]
    return {name: int((labels == c).sum()) for c, name in enumerate(names)}


def prepare_dataset(strategy: Strategy, data_dir: str | Path, reporter: Reporter | None = None) -> Dataset:
    """Load every symbol, compute features and labels per symbol, split each symbol in time, stack."""
    reporter = reporter or NullReporter()
    timeframe = strategy.base_timeframe
    reporter.phase("loading_data", f"loading {', '.join(strategy.symbols)} {', '.join(strategy.feature_timeframes)}")
    data = {symbol: load_symbol(strategy, data_dir, symbol, strategy.start, strategy.end)
            for symbol in strategy.symbols}
    reporter.phase("computing_features", f"{len(strategy.features)} features")
    splits: dict[str, list[Split]] = {"train": [], "val": [], "test": []}
    per_symbol, test_starts = {}, {}
    for symbol, symbol_data in data.items():
        parts = _symbol_splits(strategy, symbol_data)
        for name, part in parts.items():
            splits[name].append(part)
        test_starts[symbol] = parts["test"].features.index[parts["test"].sample_rows[0]]
        labelled = symbol_data.targets[~np.isnan(symbol_data.targets)]
        bars = symbol_data.bars
        per_symbol[symbol] = {
            "bars": len(bars), "usable_bars": len(symbol_data.features), "labelled_bars": len(labelled),
            "first_bar": bars.index[0].isoformat(), "last_bar": bars.index[-1].isoformat(),
            "timeframe_sources": symbol_data.sources,
            "split_sizes": {name: len(part.labels) for name, part in parts.items()},
            "label_distribution": label_summary(strategy, labelled),
        }
    train, val, test = (_stack(splits[name]) for name in ("train", "val", "test"))

    def span(split: Split) -> list[str]:
        stamps = split.features.index[split.sample_rows]
        return [stamps.min().isoformat(), stamps.max().isoformat()]

    summary = {
        "symbols": strategy.symbols, "timeframe": timeframe, "timeframes": strategy.feature_timeframes,
        "per_symbol": per_symbol,
        "split_sizes": {"train": len(train.labels), "validation": len(val.labels), "test": len(test.labels)},
        "train_range": span(train), "test_range": span(test),
        "label_distribution": {"train": label_summary(strategy, train.labels),
                               "test": label_summary(strategy, test.labels)},
    }
    return Dataset(train, val, test, summary, data, test_starts)
