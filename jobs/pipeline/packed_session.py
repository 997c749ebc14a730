"""Several trainings' work in one process, their models trained together in one vectorised step
(packed_trainer.py): each prepared, evaluated, backtested and saved exactly as `train_strategy`
does it alone (session.py), each with its own reporter, fence and model folder.

Trainings whose data sets are the same (variants that differ only in their `training` section:
learning rate, seed, optimizer settings, epochs) share one prepared data set: features and labels
are computed once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainhost.jobs.pipeline.errors import PipelineError, TrainingSuspended
from trainhost.jobs.pipeline.fencing import Fence, Superseded
from trainhost.jobs.pipeline.model import build_model, describe_device, select_device
from trainhost.jobs.pipeline.packed_trainer import PackMember, train_packed
from trainhost.jobs.pipeline.reporter import Reporter
from trainhost.jobs.pipeline.session import Prepared, finish, prepare
from trainhost.jobs.pipeline.strategy import Strategy
from trainhost.jobs.pipeline.trainer import TrainResult

log = logging.getLogger("trainhost.pack")


@dataclass
class PackedTraining:
    """One training of a pack: what `train_strategy` takes for it alone."""

    strategy: Strategy
    reporter: Reporter
    session_id: str
    fence: Fence | None = None
    backtest: Mapping[str, Any] | None = None


def train_pack(trainings: list[PackedTraining], data_dir: str | Path, models_dir: str | Path, *,
               device: str = "auto", on_outcome: Callable[[int, dict[str, Any] | Exception], None] | None = None,
               ) -> list[dict[str, Any] | Exception]:
    """Train every training of the pack together; per training, its result record (as `train_strategy`
    returns it) or the exception that ended it alone (its data, its loss, its attempt superseded): the
    others go on. A training is evaluated, backtested and saved as soon as its own training ends (it
    finished its epochs, early stopping ended it, it was stopped), while the pack goes on, and
    `on_outcome(index, outcome)` is told then. Raises TrainingSuspended when the worker is shutting
    down (every training still in the pack stops, and none of those is saved: the pack runs again)."""
    outcomes: list[dict[str, Any] | Exception | None] = [None] * len(trainings)

    def decided(i: int, outcome: dict[str, Any] | Exception) -> None:
        outcomes[i] = outcome
        if on_outcome is not None:
            on_outcome(i, outcome)

    prepared = _prepare_all(trainings, data_dir, decided)
    running = [i for i, outcome in enumerate(outcomes) if outcome is None]
    chosen = select_device(device)
    models, members = [], []
    arrays: dict[int, tuple] = {}  # one float32 copy of each shared data set, not one a training
    for i in running:
        training, data = trainings[i], prepared[i]
        training.reporter.phase("training", f"{data.dataset.summary['split_sizes']['train']} training samples, "
                                f"packed with {len(running) - 1} more")
        training.reporter.info(device=describe_device(chosen))
        # The initial weights, as alone (built on the CPU). torch.manual_seed would also queue a CUDA
        # seeding, formatting a stack trace each time: milliseconds a model.
        torch.default_generator.manual_seed(training.strategy.training.seed)
        models.append(model := build_model(training.strategy.model_spec))
        if id(data) not in arrays:
            arrays[id(data)] = (*data.dataset.train.arrays(), *data.dataset.val.arrays())
        x_train, y_train, x_val, y_val = arrays[id(data)]

        def ended(result: TrainResult | Exception, i: int = i, model: torch.nn.Module = model) -> None:
            if trainings[i].reporter.should_suspend():
                return  # stopped for the shutdown: not saved, trained again when the pack runs again
            decided(i, result if isinstance(result, Exception) else _finish_one(
                trainings[i], prepared[i], model, result, models_dir))

        members.append(PackMember(
            x_train, y_train, x_val, y_val, training.strategy.training, sample_weights=data.dataset.train.weights,
            on_batch=training.reporter.batch,
            on_epoch=lambda record, reporter=training.reporter: reporter.epoch(dataclasses.asdict(record)),
            should_stop=training.reporter.should_stop, on_end=ended))
    if members:
        train_packed(models, members, device=device)
    undecided = [i for i in running if outcomes[i] is None]
    if undecided:
        raise TrainingSuspended(f"{len(undecided)} trainings of a pack were suspended (the worker is shutting "
                                "down); they train again from the start")
    return outcomes  # type: ignore[return-value]


def _prepare_all(trainings: list[PackedTraining], data_dir: str | Path,
                 decided: Callable[[int, Exception], None]) -> list[Prepared | None]:
    """Each training's prepared data set, shared between trainings with the same one; a training whose
    data set cannot be prepared is `decided` with its exception."""
    cache: dict[str, Prepared | Exception] = {}
    prepared: list[Prepared | None] = []
    for i, training in enumerate(trainings):
        key = dataset_key(training.strategy)
        if key not in cache:
            try:
                cache[key] = prepare(training.strategy, data_dir, training.reporter)
            except PipelineError as exc:
                cache[key] = exc
        else:
            training.reporter.phase("computing_features", "features shared with another training of its pack")
        found = cache[key]
        if isinstance(found, Exception):
            decided(i, found)
            prepared.append(None)
        else:
            prepared.append(found)
    return prepared


def dataset_key(strategy: Strategy) -> str:
    """What decides a training's data set: the strategy but its training settings (the split fractions
    excepted), as the parser resolved it; its raw document without its `training` section."""
    document = strategy.to_dict()
    training = document.pop("training")
    document["training"] = {k: training[k] for k in ("train_fraction", "validation_fraction", "test_fraction")}
    document["raw"] = {k: v for k, v in document["raw"].items() if k != "training"}
    document.pop("warnings", None)
    return json.dumps(document, sort_keys=True, default=str)


def _finish_one(training: PackedTraining, prepared: Prepared, model: torch.nn.Module, result: Any,
                models_dir: str | Path) -> dict[str, Any] | Exception:
    """`finish` for one training of the pack: a failure here (its folder, its attempt) is its own."""
    try:
        if training.fence is not None:
            training.fence.check()  # a superseded attempt goes no further
        return finish(training.strategy, prepared, model, result, models_dir, training.reporter,
                      session_id=training.session_id, fence=training.fence, backtest=training.backtest)
    except (PipelineError, OSError, Superseded) as exc:
        log.warning("session %s of a pack: %s", training.session_id, exc)
        return exc
