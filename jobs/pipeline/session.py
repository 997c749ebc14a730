"""A session's work start to end, without any queue: train a strategy, or evaluate a saved model.

`train_strategy` and `evaluate_saved_model` take a parsed strategy (or a saved model), a data root
and a reporter (progress callbacks and a stop check); the RQ job functions, the in-process command
and the tests all call them. The data set is assembled by dataset.py, trained by trainer.py and
saved by artifacts.py (KTRDR's own files: ktrdr_export.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trainhost.jobs.pipeline.artifacts import load_model, save_artifacts
from trainhost.jobs.pipeline.data_paths import evaluation_scope
from trainhost.jobs.pipeline.dataset import Dataset, Split, SymbolData, load_symbol, prepare_dataset, sequence_windows
from trainhost.jobs.pipeline.errors import DataError, TrainingSuspended
from trainhost.jobs.pipeline.features import apply_normalization, fit_normalization
from trainhost.jobs.pipeline.fencing import Fence
from trainhost.jobs.pipeline.ktrdr_export import ktrdr_files
from trainhost.jobs.pipeline.metrics import evaluate_classification, evaluate_regression
from trainhost.jobs.pipeline.model import build_model, describe_device, select_device
from trainhost.jobs.pipeline.model_backtest import backtest_model, write_backtest
from trainhost.jobs.pipeline.model_paths import resolve_model_path
from trainhost.jobs.pipeline.reporter import NullReporter, Reporter
from trainhost.jobs.pipeline.strategy import Strategy
from trainhost.jobs.pipeline.trainer import TrainResult, train_model

PIPELINE_VERSION = "2"


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
    reporter = reporter or NullReporter()
    prepared = prepare(strategy, data_dir, reporter)
    model, result = _train(strategy, prepared.dataset, reporter, device, checkpoint_path, resume, fence,
                           checkpoint_owner)
    return finish(strategy, prepared, model, result, models_dir, reporter, checkpoint_path=checkpoint_path,
                  session_id=session_id, fence=fence, backtest=backtest)


@dataclass
class Prepared:
    """A training's data set, normalised, with the normalisation (what the model folder records)."""

    dataset: Dataset
    normalization: dict
    started: float  # time.monotonic() when preparing began
    features_s: float


def prepare(strategy: Strategy, data_dir: str | Path, reporter: Reporter) -> Prepared:
    """The data set a strategy trains on: features and labels, split, normalised on the training split."""
    started = time.monotonic()
    dataset = prepare_dataset(strategy, data_dir, reporter)
    normalization = fit_normalization(strategy, dataset.train.features)
    for split in (dataset.train, dataset.val, dataset.test):
        split.features = apply_normalization(split.features, normalization)
    return Prepared(dataset, normalization, started, round(time.monotonic() - started, 3))


def finish(strategy: Strategy, prepared: Prepared, model: nn.Module, result: TrainResult, models_dir: str | Path,
           reporter: Reporter, *, checkpoint_path: str | Path | None = None, session_id: str | None = None,
           fence: Fence | None = None, backtest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """After training: evaluate and backtest on the test split, save the artifacts; the result record."""
    dataset, normalization = prepared.dataset, prepared.normalization
    timings = {"features_s": prepared.features_s, "training_s": round(result.training_time_s, 3)}
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
    metadata = _metadata(strategy, dataset, normalization, result, training_metrics, test_metrics, session_id,
                         created_at)
    record = {
        "stopped": result.stopped, "task": strategy.task, "model": metadata["model"],
        "features": metadata["features"], "labels": metadata["labels"], "data": dataset.summary,
        "training_metrics": training_metrics, "test_metrics": test_metrics, "backtest": backtest_summary,
        "device": result.device, "timings": timings,
    }

    def outcome(folder: Path) -> dict[str, Any]:
        timings["total_s"] = round(time.monotonic() - prepared.started, 3)
        return {"model_path": str(folder), **record}

    fenced = _FencedSave(fence, outcome) if fence is not None else None
    model_path = save_artifacts(
        models_dir, strategy.name, strategy.base_timeframe, state_dict=model.state_dict(),
        metadata=metadata, history=result.history,
        # (none when every write was skipped: the attempt could not be checked for the whole run)
        checkpoint_path=checkpoint_path if checkpoint_path is not None and Path(checkpoint_path).exists() else None,
        extra_files=ktrdr_files(strategy, normalization, result, created_at), fence=fenced,
    )
    if backtest_report is not None:
        write_backtest(Path(model_path) / backtest_summary["folder"], backtest_report)
    reporter.phase("done", "stopped early: partial model saved" if result.stopped else "completed")
    return fenced.committed if fenced is not None and fenced.committed else outcome(model_path)


def _train(strategy: Strategy, dataset: Dataset, reporter: Reporter, device: str,
           checkpoint_path: str | Path | None, resume: bool, fence: Fence | None,
           checkpoint_owner: dict[str, Any] | None) -> tuple[nn.Module, TrainResult]:
    """The model built from the strategy and trained on the normalised data set; raises
    TrainingSuspended when the caller's stop was a suspend (the worker is shutting down)."""
    reporter.phase("training", f"{dataset.summary['split_sizes']['train']} training samples")
    reporter.info(device=describe_device(select_device(device)))  # shown while it trains
    torch.manual_seed(strategy.training.seed)  # the initial weights
    model = build_model(strategy.model_spec)
    (x_train, y_train), (x_val, y_val) = dataset.train.arrays(), dataset.val.arrays()
    result = train_model(
        model, x_train, y_train, x_val, y_val, strategy.training, device=device,
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
    return model, result


class _FencedSave:
    """`save_artifacts`' fence for one attempt at a queued session: the claim goes through the
    attempt's fence, and before COMPLETE the result record is committed (what the session returns)."""

    def __init__(self, fence: Fence, outcome: Callable[[Path], dict[str, Any]]):
        self.fence, self.outcome = fence, outcome
        self.committed: dict[str, Any] = {}

    def __call__(self, stage: str, folder: Path) -> None:
        if stage == "claim":
            self.fence.claim()
            return
        self.committed.update(self.outcome(folder))
        self.fence.commit(self.committed)


def _metadata(strategy: Strategy, dataset: Dataset, normalization: dict, result: TrainResult,
              training_metrics: dict[str, Any], test_metrics: dict[str, Any], session_id: str | None,
              created_at: str) -> dict[str, Any]:
    """metadata.json of the model folder: what loading, evaluating and reporting on it read."""
    return {
        "strategy_name": strategy.name,
        "session_id": session_id,
        "created_at": created_at,
        "status": "stopped" if result.stopped else "completed",
        "strategy": strategy.to_dict(),
        "features": strategy.feature_ids,
        "normalization": normalization,
        "task": strategy.task,
        "labels": strategy.label_metadata,
        "model": strategy.model_spec,
        "symbol": strategy.symbols[0] if len(strategy.symbols) == 1 else "MULTI",
        "timeframe": strategy.base_timeframe,
        "timeframes": strategy.feature_timeframes,
        "data": dataset.summary,
        "training_metrics": training_metrics,
        "test_metrics": test_metrics,
        "device": result.device,
        "versions": _versions(),
    }


def evaluate_split(model: nn.Module, split: Split, strategy: Strategy, device=None) -> dict[str, Any]:
    """§10's test metrics of `model` on `split` (classification or regression, rows or windows)."""
    x, y = split.arrays()
    if strategy.task == "regression":
        return evaluate_regression(model, x, y, device, windows=split.windows)
    return evaluate_classification(model, x, y, strategy.model.output_size, device, windows=split.windows)


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
    split = _range_split(strategy, data, first, meta["normalization"], f"{symbol} {timeframe}")
    reporter.phase("evaluating", f"{len(split.labels)} samples")
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
        "data": {"bars": len(bars), "usable_bars": len(split.labels), "first_bar": bars.index[0].isoformat(),
                 "last_bar": bars.index[-1].isoformat(), "timeframe_sources": data.sources},
        "metrics": metrics,
        "backtest": summary,
    }


def _range_split(strategy: Strategy, data: SymbolData, first: int, normalization: dict, where: str) -> Split:
    """Every labelled bar from bar `first` on as a test sample (sequence models: every full window
    ending at one), normalised as the model was trained."""
    rows = np.flatnonzero(~np.isnan(data.targets) & (data.positions >= first))
    if len(rows) == 0:
        raise DataError(f"{where}: no bar of the range has both its features and a label; widen it")
    windows = None
    if strategy.model.is_sequence:
        windows, kept = sequence_windows(rows, data.positions, strategy.model.sequence_length, 0)
        rows = rows[kept]
        if len(rows) == 0:
            raise DataError(f"{where}: {len(data.features)} usable bars are too few for one window of "
                            f"sequence_length {strategy.model.sequence_length}; widen the date range")
    targets = data.targets[rows]
    labels = targets.astype(np.float32) if strategy.task == "regression" else targets.astype(np.int64)
    features = data.features if windows is not None else data.features.iloc[rows]
    return Split(apply_normalization(features, normalization), labels, windows)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("trainhost")
    except PackageNotFoundError:
        ours = "unknown"
    return {"trainhost": ours, "pipeline": PIPELINE_VERSION, "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}
