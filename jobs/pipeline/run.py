"""Training and evaluation of a strategy, start to end, without any queue.

`train_strategy` and `evaluate_saved_model` take a parsed strategy (or a saved model), a data
root and a reporter (progress callbacks and a stop check); the RQ job functions, the in-process
command and the tests all call them.

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
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trainhost.jobs.pipeline.artifacts import load_model, resolve_model_path, save_artifacts
from trainhost.jobs.pipeline.data import evaluation_scope, load_timeframes
from trainhost.jobs.pipeline.errors import DataError, TrainingSuspended
from trainhost.jobs.pipeline.features import apply_normalization, build_feature_matrix, fit_normalization
from trainhost.jobs.pipeline.fencing import Fence
from trainhost.jobs.pipeline.label_specs import CLASS_NAMES, OUTPUT_TYPES
from trainhost.jobs.pipeline.labels import make_labels
from trainhost.jobs.pipeline.metrics import evaluate_classification, evaluate_regression
from trainhost.jobs.pipeline.model import build_model, describe_device, select_device
from trainhost.jobs.pipeline.model_backtest import backtest_model, write_backtest
from trainhost.jobs.pipeline.strategy import Strategy
from trainhost.jobs.pipeline.trainer import BatchProgress, EarlyStopping, EpochRecord, TrainConfig, train_model

PIPELINE_VERSION = "2"
EMBARGO_FRACTION = 0.01  # §7: e = ⌊0.01·N⌋ samples before the validation start leave the training set


class Reporter(Protocol):
    """What the pipeline tells its caller, and asks it."""

    def phase(self, name: str, message: str = "") -> None: ...
    def info(self, **fields: Any) -> None: ...
    def batch(self, progress: BatchProgress) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def resumed(self, history: list[dict[str, Any]]) -> None: ...
    def should_stop(self) -> bool: ...
    def should_suspend(self) -> bool: ...


class NullReporter:
    def phase(self, name: str, message: str = "") -> None:
        pass

    def info(self, **fields: Any) -> None:
        pass

    def batch(self, progress: BatchProgress) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def resumed(self, history: list[dict[str, Any]]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def should_suspend(self) -> bool:
        return False


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
    # numpy, not features.isna().any(axis=1): the same answer without pandas' fixed cost per call
    # (0.1 ms against 0.02 at 10k bars, where the whole feature pipeline takes ~0.8 ms)
    complete = ~np.isnan(features.to_numpy(dtype=np.float64)).any(axis=1)
    usable = complete & labelled
    if not usable.any():
        return None
    return np.flatnonzero(complete[: np.flatnonzero(usable)[-1] + 1])


def take_rows(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """frame.iloc[rows], as a slice (no copy) when the rows are one run, as they are unless a feature
    has a gap mid-series (warm-up rows lead, unlabelled ones trail): at 1M bars the copy was a
    quarter of the feature pipeline's time."""
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
    if strategy.labels.source == "triple_barrier":
        train, s, t = purged_split(data.positions[samples], data.holds[samples], training.train_fraction,
                                   training.validation_fraction, training.test_fraction)
    else:
        s, t = split_bounds(n, training.train_fraction, training.validation_fraction)
        train = np.arange(s)
    where = f"{data.symbol} {strategy.base_timeframe}"
    if len(train) == 0 or s >= t or t >= n:
        raise DataError(f"{where}: {n} labelled bars after the indicator warm-up are too few to split into "
                        "train/validation/test; widen the date range")
    bounds = {"train": (0, samples[s]), "val": (samples[s], samples[t]), "test": (samples[t], samples[-1] + 1)}
    chosen = {"train": samples[train], "val": samples[s:t], "test": samples[t:]}
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


def train_config(strategy: Strategy, device: str = "auto") -> TrainConfig:
    t = strategy.training
    scheduler = {"type": t.lr_scheduler["type"], **t.lr_scheduler.get("params", {})} if t.lr_scheduler else None
    stopping = EarlyStopping(**t.early_stopping.model_dump()) if t.early_stopping else None
    return TrainConfig(
        epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate, optimizer=t.optimizer,
        weight_decay=t.weight_decay, gradient_clip=t.gradient_clip, loss=t.loss, focal_gamma=t.focal_gamma,
        huber_delta=t.huber_delta, task=strategy.task, early_stopping=stopping, lr_scheduler=scheduler,
        seed=t.seed, device=device,
    )


def model_spec(strategy: Strategy) -> dict[str, Any]:
    """metadata.json's `model` section: what `build_model` needs to rebuild the network."""
    config = strategy.model
    spec: dict[str, Any] = {"type": config.type, "input_size": len(strategy.features), "dropout": config.dropout,
                            "output_size": config.output_size}
    if config.is_sequence:
        spec.update(sequence_length=config.sequence_length, hidden_size=config.hidden_size,
                    num_layers=config.num_layers)
    else:
        spec.update(hidden_layers=config.hidden_layers, activation=config.activation)
    return spec


def evaluate_split(model, split: Split, strategy: Strategy, device=None) -> dict[str, Any]:
    """§10's test metrics of `model` on `split` (classification or regression, rows or windows)."""
    x, y = split.arrays()
    if strategy.task == "regression":
        return evaluate_regression(model, x, y, device, windows=split.windows)
    return evaluate_classification(model, x, y, strategy.model.output_size, device, windows=split.windows)


def label_metadata(strategy: Strategy) -> dict[str, Any]:
    labels = strategy.labels
    return {"source": labels.source, "mapping": dict(enumerate(CLASS_NAMES[labels.source])),
            "params": labels.params, "zigzag_threshold": labels.zigzag_threshold}


def train_strategy(
    strategy: Strategy,
    data_dir: str | Path,
    models_dir: str | Path,
    reporter: Reporter | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    session_id: str | None = None,
    fence: Fence | None = None,
    checkpoint_owner: dict[str, Any] | None = None,
    backtest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and backtest on the test split, save the artifacts; return the result record.

    The backtest trades the first symbol's bars from its first test bar to the end of the data, with
    the strategy's `decisions` and the request's `backtest` overrides; its trades and equity go to
    `<model folder>/evaluations/<session_id>/`.

    With a `fence` (one attempt among several at a queued session) the checkpoint, claiming the
    model folder and marking it COMPLETE each go through it: the result is committed, atomically
    with the check that this attempt is still the session's, before COMPLETE is written, so a
    session ends with one complete model folder however many attempts ran. `checkpoint_owner` is
    stored in the checkpoint and must match for it to be resumed (see `train_model`)."""
    import torch

    reporter = reporter or NullReporter()
    started = time.monotonic()
    timings: dict[str, float] = {}

    dataset = prepare_dataset(strategy, data_dir, reporter)
    normalization = fit_normalization(strategy, dataset.train.features)
    for split in (dataset.train, dataset.val, dataset.test):
        split.features = apply_normalization(split.features, normalization)
    timings["features_s"] = round(time.monotonic() - started, 3)

    reporter.phase("training", f"{dataset.summary['split_sizes']['train']} training samples")
    reporter.info(device=describe_device(select_device(device)))  # shown while it trains
    spec = model_spec(strategy)
    torch.manual_seed(strategy.training.seed)  # the initial weights
    model = build_model(spec)
    (x_train, y_train), (x_val, y_val) = dataset.train.arrays(), dataset.val.arrays()
    result = train_model(
        model, x_train, y_train, x_val, y_val, train_config(strategy, device),
        on_batch=reporter.batch, on_epoch=lambda record: reporter.epoch(dataclasses.asdict(record)),
        should_stop=reporter.should_stop, checkpoint_path=checkpoint_path, resume=resume,
        train_windows=dataset.train.windows, val_windows=dataset.val.windows, sample_weights=dataset.train.weights,
        checkpoint_owner=checkpoint_owner, checkpoint_guard=fence.check if fence is not None else None,
        on_resume=reporter.resumed,
    )
    if fence is not None:
        fence.check()  # a superseded attempt (its stop looks like a user's) goes no further
    reporter.info(device=result.device)
    if result.stopped and reporter.should_suspend():
        raise TrainingSuspended(f"suspended after {result.epochs_trained} of {strategy.training.epochs} epochs "
                                "to be resumed from its checkpoint (the worker is shutting down)")
    timings["training_s"] = round(result.training_time_s, 3)

    reporter.phase("evaluating", "test split")
    test_metrics = evaluate_split(model, dataset.test, strategy)
    symbol = strategy.symbols[0]
    traded = dataset.symbols[symbol]
    backtest_summary, backtest_report = backtest_model(
        model, strategy, normalization, traded.bars, traded.matrix, dataset.test_starts[symbol], backtest,
        session_id or "training")
    if len(strategy.symbols) > 1:
        backtest_summary["warnings"].append(f"backtested on {symbol}'s test split only (the first symbol)")

    reporter.phase("saving", "writing artifacts")
    training_metrics = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("history", "device")}
    created_at = datetime.now(UTC).isoformat()
    metadata = {
        "strategy_name": strategy.name,
        "session_id": session_id,
        "created_at": created_at,
        "status": "stopped" if result.stopped else "completed",
        "strategy": strategy.to_dict(),
        "features": strategy.feature_ids,
        "normalization": normalization,
        "task": strategy.task,
        "labels": label_metadata(strategy),
        "model": spec,
        "symbol": strategy.symbols[0] if len(strategy.symbols) == 1 else "MULTI",
        "timeframe": strategy.base_timeframe,
        "timeframes": strategy.feature_timeframes,
        "data": dataset.summary,
        "training_metrics": training_metrics,
        "test_metrics": test_metrics,
        "device": result.device,
        "versions": _versions(),
    }

    def outcome(folder: Path) -> dict[str, Any]:
        timings["total_s"] = round(time.monotonic() - started, 3)
        return {
            "model_path": str(folder),
            "stopped": result.stopped,
            "task": strategy.task,
            "model": metadata["model"],
            "features": metadata["features"],
            "labels": metadata["labels"],
            "data": dataset.summary,
            "training_metrics": training_metrics,
            "test_metrics": test_metrics,
            "backtest": backtest_summary,
            "device": result.device,
            "timings": timings,
        }

    committed: dict[str, Any] = {}

    def fenced(stage: str, folder: Path) -> None:
        if stage == "claim":
            fence.claim()
            return
        committed.update(outcome(folder))
        fence.commit(committed)

    model_path = save_artifacts(
        models_dir, strategy.name, strategy.base_timeframe, state_dict=model.state_dict(),
        metadata=metadata, history=result.history,
        # (none when every write was skipped: the attempt could not be checked for the whole run)
        checkpoint_path=checkpoint_path if checkpoint_path is not None and Path(checkpoint_path).exists() else None,
        extra_files=ktrdr_files(strategy, normalization, result, created_at),
        fence=fenced if fence is not None else None,
    )
    if backtest_report is not None:
        write_backtest(Path(model_path) / backtest_summary["folder"], backtest_report)
    reporter.phase("done", "stopped early: partial model saved" if result.stopped else "completed")
    return committed or outcome(model_path)


def ktrdr_files(strategy: Strategy, normalization: dict, result, created_at: str) -> dict[str, dict]:
    """KTRDR's metadata_v3.json, features.json and config.json (§11), so its tooling (ModelBundle)
    reads what we train. Our normalisation is real, so `normalization_params` carries it in the
    format KTRDR's backtest applies ({method, min, max} / {method, mean, std})."""
    raw = strategy.to_dict()["raw"]
    history = {key: [record[key] for record in result.history]
               for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    accuracies = history["train_accuracy"]
    training_metrics = {
        "epochs_trained": result.epochs_trained, "final_train_loss": result.final_train_loss,
        "final_train_accuracy": result.final_train_accuracy,
        "best_train_accuracy": max(accuracies) if accuracies else None, "training_time": result.training_time_s,
        "history": history, "final_val_loss": result.final_val_loss,
        "final_val_accuracy": result.final_val_accuracy, "best_val_accuracy": result.best_val_accuracy,
    }
    metadata_v3 = {
        "model_name": strategy.name, "strategy_name": strategy.name, "created_at": created_at,
        "strategy_version": strategy.version, "indicators": raw.get("indicators", {}),
        "fuzzy_sets": raw.get("fuzzy_sets", {}), "nn_inputs": raw.get("nn_inputs", []),
        "resolved_features": strategy.feature_ids, "training_symbols": strategy.symbols,
        "training_timeframes": strategy.feature_timeframes, "training_metrics": training_metrics,
        "output_type": OUTPUT_TYPES[strategy.labels.source], "model_type": strategy.model.type,
        "sequence_length": strategy.model.sequence_length, "normalization_params": normalization,
        "context_data_config": None, "context_source_ids": [],
    }
    lookback = ((raw.get("model") or {}).get("features") or {}).get("lookback_periods")
    features = {
        "model_version": "pure_fuzzy_v1", "feature_type": "pure_fuzzy", "fuzzy_features": strategy.feature_ids,
        "feature_count": len(strategy.features),
        "temporal_config": {"lookback_periods": lookback, "enabled": False},
        "scaling_info": {"requires_scaling": False,
                         "reason": "fuzzy memberships are in [0, 1]; raw inputs carry normalization_params"},
        "feature_importance": {},
    }
    config = dict(raw)
    if strategy.task == "regression":
        config["model"] = {**(config.get("model") or {}), "output_format": "regression"}
    return {"metadata_v3.json": metadata_v3, "features.json": features, "config.json": config}


def evaluate_saved_model(
    models_dir: str | Path,
    model_path: str | Path,
    data_dir: str | Path,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    reporter: Reporter | None = None,
    backtest: Mapping[str, Any] | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """Recompute a saved model's features and labels on a symbol and date range; report §10 metrics
    and a backtest of the range (§12), its trades and equity in `<model folder>/evaluations/<session_id>/`.

    The features are computed on the data before `start` too (the indicators are warm at the first bar
    of the range, and a sub-range gives the same values as a longer one). Every labelled bar of the
    range is a test sample (for LSTM/GRU: every full window ending at one).
    """
    reporter = reporter or NullReporter()
    reporter.phase("loading_data", "loading the model")
    folder = resolve_model_path(models_dir, model_path)
    predictor = load_model(folder)
    meta = predictor.metadata
    strategy = Strategy.from_dict(meta["strategy"])
    symbol, timeframe = evaluation_scope(strategy, symbol, timeframe)
    data = load_symbol(strategy, data_dir, symbol, None, end)
    first = 0 if start is None else int(np.searchsorted(data.bars.index, pd.Timestamp(start)))
    if first >= len(data.bars):
        raise DataError(f"{symbol} {timeframe}: no bars from {start:%Y-%m-%d %H:%M} on (the data ends "
                        f"{data.bars.index[-1]})")
    reporter.phase("computing_features", f"{len(meta['features'])} features")
    rows = np.flatnonzero(~np.isnan(data.targets) & (data.positions >= first))
    if len(rows) == 0:
        raise DataError(f"{symbol} {timeframe}: no bar of the range has both its features and a label; widen it")
    windows = None
    if strategy.model.is_sequence:
        windows, kept = sequence_windows(rows, data.positions, strategy.model.sequence_length, 0)
        rows = rows[kept]
        if len(rows) == 0:
            raise DataError(f"{symbol} {timeframe}: {len(data.features)} usable bars are too few for one window of "
                            f"sequence_length {strategy.model.sequence_length}; widen the date range")
    targets = data.targets[rows]
    labels = targets.astype(np.float32) if strategy.task == "regression" else targets.astype(np.int64)
    features = data.features if windows is not None else data.features.iloc[rows]
    split = Split(apply_normalization(features, meta["normalization"]), labels, windows)
    reporter.phase("evaluating", f"{len(labels)} samples")
    metrics = evaluate_split(predictor.model, split, strategy)
    reporter.phase("evaluating", "backtest")
    summary, report = backtest_model(predictor.model, strategy, meta["normalization"], data.bars, data.matrix,
                                     data.bars.index[first], backtest, session_id or "evaluation")
    if report is not None:
        write_backtest(folder / summary["folder"], report)
    reporter.phase("done", "evaluated")
    bars = data.bars.iloc[first:]
    return {
        "model_path": str(folder),
        "strategy_name": meta["strategy_name"],
        "symbol": symbol,
        "timeframe": timeframe,
        "task": strategy.task,
        "data": {"bars": len(bars), "usable_bars": len(labels), "first_bar": bars.index[0].isoformat(),
                 "last_bar": bars.index[-1].isoformat(), "timeframe_sources": data.sources},
        "metrics": metrics,
        "backtest": summary,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        ours = version("trainhost")
    except PackageNotFoundError:
        ours = "unknown"
    return {"trainhost": ours, "pipeline": PIPELINE_VERSION, "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


__all__ = ["EpochRecord", "NullReporter", "Reporter", "evaluate_saved_model", "prepare_dataset", "train_strategy"]
