"""Training and evaluation of a strategy, start to end, without any queue.

`train_strategy` and `evaluate_saved_model` take a parsed strategy (or a saved model), a data
root and a reporter (progress callbacks and a stop check); the RQ job functions, the in-process
command and the tests all call them.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from jobs.pipeline.artifacts import load_model, resolve_model_path, save_artifacts
from jobs.pipeline.data import load_ohlcv
from jobs.pipeline.errors import DataError, TrainingSuspended
from jobs.pipeline.features import apply_normalization, build_features, fit_normalization
from jobs.pipeline.labels import LABEL_NAMES, zigzag_labels
from jobs.pipeline.metrics import evaluate_classification
from jobs.pipeline.model import build_mlp
from jobs.pipeline.strategy import Strategy
from jobs.pipeline.trainer import BatchProgress, EarlyStopping, EpochRecord, TrainConfig, train_model

PIPELINE_VERSION = "1"


class Reporter(Protocol):
    """What the pipeline tells its caller, and asks it."""

    def phase(self, name: str, message: str = "") -> None: ...
    def info(self, **fields: Any) -> None: ...
    def batch(self, progress: BatchProgress) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
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

    def should_stop(self) -> bool:
        return False

    def should_suspend(self) -> bool:
        return False


@dataclasses.dataclass
class Split:
    """Rows of one split, already stacked across symbols."""

    features: pd.DataFrame
    labels: np.ndarray


@dataclasses.dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    summary: dict[str, Any]


def labelled_frame(strategy: Strategy, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and labels of one symbol at the base timeframe, warm-up rows dropped (our policy §3)."""
    features = build_features(strategy, frame, strategy.base_timeframe)
    labels = zigzag_labels(frame["close"].to_numpy(), strategy.labels.zigzag_threshold)
    complete = ~features.isna().any(axis=1).to_numpy()
    return features[complete], labels[complete]


def split_bounds(n: int, train_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """Chronological split (§7): train [0, a), validation [a, b), test [b, n)."""
    return int(n * train_fraction), int(n * (train_fraction + validation_fraction))


def _stack(parts: list[Split]) -> Split:
    return Split(pd.concat([p.features for p in parts]), np.concatenate([p.labels for p in parts]))


def prepare_dataset(strategy: Strategy, data_dir: str | Path, reporter: Reporter | None = None) -> Dataset:
    """Load every symbol, compute features and labels per symbol, split each symbol in time, stack."""
    reporter = reporter or NullReporter()
    timeframe = strategy.base_timeframe
    reporter.phase("loading_data", f"loading {', '.join(strategy.symbols)} {timeframe}")
    frames = {
        symbol: load_ohlcv(data_dir, symbol, timeframe, strategy.start, strategy.end,
                           min_bars=strategy.warmup_bars + 1)
        for symbol in strategy.symbols
    }
    reporter.phase("computing_features", f"{len(strategy.features)} features")
    splits: dict[str, list[Split]] = {"train": [], "val": [], "test": []}
    per_symbol = {}
    for symbol, frame in frames.items():
        features, labels = labelled_frame(strategy, frame)
        a, b = split_bounds(len(features), strategy.training.train_fraction, strategy.training.validation_fraction)
        if a == 0 or b == a or b == len(features):
            raise DataError(
                f"{symbol} {timeframe}: {len(features)} usable bars after the indicator warm-up are too few "
                f"to split into train/validation/test; widen the date range"
            )
        for name, (lo, hi) in {"train": (0, a), "val": (a, b), "test": (b, len(features))}.items():
            splits[name].append(Split(features.iloc[lo:hi], labels[lo:hi]))
        per_symbol[symbol] = {
            "bars": len(frame), "usable_bars": len(features),
            "first_bar": frame.index[0].isoformat(), "last_bar": frame.index[-1].isoformat(),
            "label_distribution": {LABEL_NAMES[c]: int((labels == c).sum()) for c in range(len(LABEL_NAMES))},
        }
    train, val, test = (_stack(splits[name]) for name in ("train", "val", "test"))
    summary = {
        "symbols": strategy.symbols, "timeframe": timeframe, "per_symbol": per_symbol,
        "split_sizes": {"train": len(train.labels), "validation": len(val.labels), "test": len(test.labels)},
        "train_range": [train.features.index.min().isoformat(), train.features.index.max().isoformat()],
        "test_range": [test.features.index.min().isoformat(), test.features.index.max().isoformat()],
    }
    return Dataset(train, val, test, summary)


def train_config(strategy: Strategy, device: str = "auto") -> TrainConfig:
    t = strategy.training
    scheduler = {"type": t.lr_scheduler["type"], **t.lr_scheduler.get("params", {})} if t.lr_scheduler else None
    stopping = EarlyStopping(**t.early_stopping.model_dump()) if t.early_stopping else None
    return TrainConfig(
        epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate, optimizer=t.optimizer,
        weight_decay=t.weight_decay, gradient_clip=t.gradient_clip, loss=t.loss, focal_gamma=t.focal_gamma,
        early_stopping=stopping, lr_scheduler=scheduler, seed=t.seed, device=device,
    )


def _as_array(split: Split) -> tuple[np.ndarray, np.ndarray]:
    return split.features.to_numpy(dtype=np.float32, copy=True), split.labels.astype(np.int64)


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
) -> dict[str, Any]:
    """Train, evaluate on the test split, save the artifacts; return the result record."""
    reporter = reporter or NullReporter()
    started = time.monotonic()
    timings: dict[str, float] = {}

    dataset = prepare_dataset(strategy, data_dir, reporter)
    normalization = fit_normalization(strategy, dataset.train.features)
    for split in (dataset.train, dataset.val, dataset.test):
        split.features = apply_normalization(split.features, normalization)
    timings["features_s"] = round(time.monotonic() - started, 3)

    reporter.phase("training", f"{dataset.summary['split_sizes']['train']} training samples")
    model_config = strategy.model
    model = build_mlp(len(strategy.features), model_config.hidden_layers, model_config.activation,
                      model_config.dropout, model_config.output_size)
    (x_train, y_train), (x_val, y_val) = _as_array(dataset.train), _as_array(dataset.val)
    result = train_model(
        model, x_train, y_train, x_val, y_val, train_config(strategy, device),
        on_batch=reporter.batch, on_epoch=lambda record: reporter.epoch(dataclasses.asdict(record)),
        should_stop=reporter.should_stop, checkpoint_path=checkpoint_path, resume=resume,
    )
    reporter.info(device=result.device)
    if result.stopped and reporter.should_suspend():
        raise TrainingSuspended(f"suspended after {result.epochs_trained} of {strategy.training.epochs} epochs "
                                "to be resumed from its checkpoint (the worker is shutting down)")
    timings["training_s"] = round(result.training_time_s, 3)

    reporter.phase("evaluating", "test split")
    x_test, y_test = _as_array(dataset.test)
    test_metrics = evaluate_classification(model, x_test, y_test, model_config.output_size)

    reporter.phase("saving", "writing artifacts")
    training_metrics = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("history", "device")}
    metadata = {
        "strategy_name": strategy.name,
        "session_id": session_id,
        "created_at": datetime.now(UTC).isoformat(),
        "status": "stopped" if result.stopped else "completed",
        "strategy": strategy.to_dict(),
        "features": [f.feature_id for f in strategy.features],
        "normalization": normalization,
        "labels": {"source": strategy.labels.source, "mapping": dict(enumerate(LABEL_NAMES)),
                   "zigzag_threshold": strategy.labels.zigzag_threshold},
        "model": {"type": model_config.type, "input_size": len(strategy.features),
                  "hidden_layers": model_config.hidden_layers, "activation": model_config.activation,
                  "dropout": model_config.dropout, "output_size": model_config.output_size},
        "symbol": strategy.symbols[0] if len(strategy.symbols) == 1 else "MULTI",
        "timeframe": strategy.base_timeframe,
        "data": dataset.summary,
        "training_metrics": training_metrics,
        "test_metrics": test_metrics,
        "device": result.device,
        "versions": _versions(),
    }
    model_path = save_artifacts(
        models_dir, strategy.name, strategy.base_timeframe, state_dict=model.state_dict(),
        metadata=metadata, history=result.history, checkpoint_path=checkpoint_path,
    )
    timings["total_s"] = round(time.monotonic() - started, 3)
    reporter.phase("done", "stopped early: partial model saved" if result.stopped else "completed")
    return {
        "model_path": str(model_path),
        "stopped": result.stopped,
        "model": metadata["model"],
        "features": metadata["features"],
        "data": dataset.summary,
        "training_metrics": training_metrics,
        "test_metrics": test_metrics,
        "device": result.device,
        "timings": timings,
    }


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
) -> dict[str, Any]:
    """Recompute a saved model's features on a symbol and date range and report §10 metrics."""
    reporter = reporter or NullReporter()
    reporter.phase("loading_data", "loading the model")
    predictor = load_model(resolve_model_path(models_dir, model_path))
    meta = predictor.metadata
    strategy = Strategy.from_dict(meta["strategy"])
    symbol = symbol or strategy.symbols[0]
    timeframe = timeframe or strategy.base_timeframe
    if timeframe != strategy.base_timeframe:
        raise DataError(f"timeframe: the model was trained on {strategy.base_timeframe}, got {timeframe!r}")
    frame = load_ohlcv(data_dir, symbol, timeframe, start, end, min_bars=strategy.warmup_bars + 1)
    reporter.phase("computing_features", f"{len(meta['features'])} features")
    features, labels = labelled_frame(strategy, frame)
    features = apply_normalization(features, meta["normalization"])
    reporter.phase("evaluating", f"{len(labels)} bars")
    metrics = evaluate_classification(predictor.model, features.to_numpy(dtype=np.float32, copy=True), labels,
                                      meta["model"]["output_size"])
    reporter.phase("done", "evaluated")
    return {
        "model_path": str(resolve_model_path(models_dir, model_path)),
        "strategy_name": meta["strategy_name"],
        "symbol": symbol,
        "timeframe": timeframe,
        "data": {"bars": len(frame), "usable_bars": len(labels), "first_bar": frame.index[0].isoformat(),
                 "last_bar": frame.index[-1].isoformat()},
        "metrics": metrics,
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
